"""Keys that nothing reads are refused, however they got into the config (a ``+key=value``
override, a ``++`` one, an experiment file), naming the closest valid key.

What a key may be, group by group:

- ``loop``, ``trainer``, ``mlflow``, ``paths``: the fields of their schema
  (:data:`alframe.config.schema.SCHEMAS`); ``trainer.extra`` is a free dict of Trainer arguments
  by design (Lightning checks them).
- A node with a ``_target_`` (``dataset``, ``strategy``, ``oracle``, ``model.net``,
  ``model.optimizer``, ``model.module``, a ``model.scheduler``): Hydra's ``instantiate`` passes
  every key of the node to the target as a keyword argument, so a key is valid exactly when the
  target's signature takes it (``inspect.signature``), plus Hydra's own ``_target_``,
  ``_partial_``, ``_recursive_``, ``_convert_``, ``_args_``. A target that takes ``**kwargs``
  takes anything: its keys are its own business. Keys a shipped option of the group sets for the
  same target are known without importing it (importing a model's module imports torch).
  Values of a target node's keys (a list, a dict of options) are not looked into.
- A node without a ``_target_`` inside those groups (``model`` itself): the keys that the
  shipped options of the group (``conf/<group>/*.yaml``) have at that place, which alframe reads,
  plus ``model.batch_size`` of :class:`~alframe.config.schema.ModelRanges`.
- ``hooks``: each entry a target node (a round hook), checked as above.
- The top level: the groups, ``seed``, ``smoke`` and ``hooks``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from alframe.errors import ConfigError

#: the shipped config groups (``conf/``)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
#: groups whose options are ``_target_`` configs (or hold them, as ``model`` does)
TARGET_GROUPS = ("dataset", "model", "strategy", "oracle")
#: top-level keys that are not groups
TOP_KEYS = ("seed", "smoke", "hooks", "ssl", "hydra")
#: keys of Hydra's ``instantiate`` itself
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


@functools.lru_cache(maxsize=1)
def _shipped() -> tuple[dict[str, set[str]], dict[tuple[str, str], set[str]]]:
    """Keys of the shipped options: ``({path: keys of plain nodes}, {(path, target): keys})``."""
    plain: dict[str, set[str]] = {}
    targets: dict[tuple[str, str], set[str]] = {}

    def walk(node, path: str) -> None:
        target = node.get("_target_") if "_target_" in node else None
        keys = {str(k) for k in node.keys()} - {"defaults"}
        if target is not None:
            targets.setdefault((path, str(target)), set()).update(keys)
            return
        plain.setdefault(path, set()).update(keys)
        for k in keys:
            child = node._get_node(k)
            if isinstance(child, DictConfig):
                walk(child, f"{path}.{k}")

    for group in TARGET_GROUPS:
        for f in sorted((CONF_DIR / group).glob("*.yaml")):
            walk(OmegaConf.load(f), group)
    return plain, targets


@functools.lru_cache(maxsize=None)
def target_params(target: str) -> frozenset[str] | None:
    """Keyword names ``target`` takes, or None when it takes ``**kwargs`` or cannot be imported
    or inspected (``instantiate`` then says what is wrong)."""
    from hydra.utils import get_object

    try:
        sig = inspect.signature(get_object(target))
    except Exception:
        return None
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _refusal(key: str, where: str, allowed, of: str = "") -> str:
    bad = key.rsplit(".", 1)[-1]
    allowed = sorted(k for k in allowed if bad.startswith("_") or not k.startswith("_"))
    close = difflib.get_close_matches(bad, allowed, n=1)
    prefix = f"{where}." if where else ""
    head = f"{key} is not a key of {where or 'the config'}{of}"
    if close:
        return f"{head}: did you mean {prefix}{close[0]}?"
    return f"{head}: its keys are {', '.join(allowed)}"


def _check_node(node: DictConfig, path: str, bad: list[str]) -> None:
    plain, targets = _shipped()
    try:
        target = node.get("_target_") if "_target_" in node else None
    except Exception:
        return  # an interpolation that does not resolve here: instantiate reports it
    keys = [str(k) for k in node.keys()]
    if target is not None:
        known = targets.get((path, str(target)), set()) | HYDRA_KEYS
        unknown = [k for k in keys if k not in known]
        params = target_params(str(target)) if unknown else None
        if params is not None:
            allowed = params | HYDRA_KEYS
            bad += [_refusal(f"{path}.{k}", path, allowed, f" ({target})") for k in unknown if k not in allowed]
        children = [k for k in keys if k not in HYDRA_KEYS]
        for k in children:  # nested targets are instantiated too
            child = node._get_node(k)
            if isinstance(child, DictConfig) and "_target_" in child:
                _check_node(child, f"{path}.{k}", bad)
        return
    allowed = set(plain.get(path, set()))
    if path == "model":
        from alframe.config.schema import ModelRanges

        allowed |= {f.name for f in fields(ModelRanges)}
    for k in keys:
        if k not in allowed:
            bad.append(_refusal(f"{path}.{k}", path, allowed))
            continue
        child = node._get_node(k)
        if isinstance(child, DictConfig):
            _check_node(child, f"{path}.{k}", bad)


def unknown_keys(cfg: DictConfig) -> list[str]:
    """One message per key of ``cfg`` that no schema or target takes (see the module doc)."""
    from alframe.config.schema import SCHEMAS

    bad: list[str] = []
    for key in (str(k) for k in cfg.keys()):
        if key not in (*SCHEMAS, *TARGET_GROUPS, *TOP_KEYS):
            bad.append(_refusal(key, "", [*SCHEMAS, *TARGET_GROUPS, "seed", "smoke", "hooks", "ssl"]))
    from alframe.config.schema import SSLConfig

    for group, schema in {**SCHEMAS, "ssl": SSLConfig}.items():  # ssl: optional (null when off)
        node = cfg._get_node(group) if group in cfg else None
        if not isinstance(node, DictConfig):
            continue
        allowed = {f.name for f in fields(schema)}
        for k in (str(k) for k in node.keys()):
            if k not in allowed:
                bad.append(_refusal(f"{group}.{k}", group, allowed))
    for group in TARGET_GROUPS:
        node = cfg._get_node(group) if group in cfg else None
        if isinstance(node, DictConfig):
            _check_node(node, group, bad)
    hooks = cfg._get_node("hooks") if "hooks" in cfg else None
    for name in (str(k) for k in hooks.keys()) if isinstance(hooks, DictConfig) else ():
        node = hooks._get_node(name)  # each round hook is a target node, its keys its constructor's
        if isinstance(node, DictConfig) and "_target_" in node:
            _check_node(node, f"hooks.{name}", bad)
        else:
            bad.append(f"hooks.{name} is invalid: a round hook is a node with a _target_ (a RoundHook class)")
    return bad


def check_keys(cfg: DictConfig) -> None:
    """Refuse keys that nothing reads.

    Raises:
        ConfigError: one line, e.g. ``loop.query_szie is not a key of loop: did you mean
            loop.query_size?``; several such keys are joined by ``; ``.
    """
    bad = unknown_keys(cfg)
    if bad:
        raise ConfigError("; ".join(bad))
