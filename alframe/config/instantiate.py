"""Hydra's ``instantiate`` with constructor errors turned into one-line :class:`~alframe.errors.ConfigError`."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from alframe.errors import ConfigError


def instantiate_checked(node: DictConfig, what: str, errors: tuple[type[BaseException], ...] = (ValueError, TypeError),
                        **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` with constructor errors made readable.

    A :class:`ConfigError` raised inside (e.g. a dataset's missing-files error) comes out as
    itself; one of ``errors`` (default ``ValueError``/``TypeError``) becomes a one-line ConfigError prefixed with ``what``
    (e.g. ``"strategy (alframe.strategies.batch.PowerBALD)"``), so the command line shows the
    message without a stack trace. Anything else propagates unchanged.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, ConfigError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(e.__cause__, errors):
            raise ConfigError(f"{what}: {e.__cause__}") from e
        raise
