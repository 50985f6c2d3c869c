"""Which run folder a job writes, chosen and locked (:mod:`alframe.rundir.lock`) before anything
in it is read or written.

The job's own folder (Hydra's run dir or sweep job folder) is locked first: two jobs that both
look at one fixed folder before either has saved cannot both find it empty. When ``loop.resume``
leads elsewhere (the newest run of this config, or a named folder), that folder is locked too
and the job's own folder is let go as it was found.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from alframe.config.fingerprint import config_fingerprints
from alframe.rundir import lock
from alframe.rundir.resume import resolve_run_dir


@dataclass(eq=False)
class Claim:
    """A job's locked run folder.

    Attributes:
        run_dir: the run folder, resolved.
        resuming: whether it holds a saved state to continue.
        held: whether this claim holds the folder's lock now.
    """

    run_dir: Path
    resuming: bool
    held: bool = True

    def hold(self) -> None:
        """Take the lock again after :meth:`release` (no-op while held).

        Raises:
            RunFolderBusy: another process took the folder meanwhile.
        """
        if not self.held:
            lock.acquire(self.run_dir)
            self.held = True

    def release(self, undo: bool = False) -> None:
        """Let the folder go (see :func:`alframe.rundir.lock.release` for ``undo``)."""
        if self.held:
            self.held = False
            lock.release(self.run_dir, undo=undo)

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown: the kernel drops the lock anyway
            pass


def claim_run_folder(cfg: DictConfig, job_dir: str | Path, announce: bool = True) -> Claim:
    """Lock the folder this job will write and say whether it resumes a saved run.

    Args:
        cfg: the composed config (``loop.resume``, ``paths.output_root``, the fingerprint keys).
        job_dir: the job's own folder.
        announce: print "starting a new run" when ``loop.resume=true`` finds none.

    Raises:
        RunFolderBusy: the job's folder, or the run it would resume, is held by another process.
        ConfigError, StateMismatchError: as :func:`alframe.rundir.resume.resolve_run_dir`; the
            job's folder is left as it was found.
    """
    job_dir = Path(job_dir)
    _, accepted = config_fingerprints(cfg)
    lock.acquire(job_dir)
    try:
        run_dir, resuming = resolve_run_dir(cfg, job_dir, accepted, announce=announce)
        elsewhere = not lock.same_folder(run_dir, job_dir)
        if elsewhere:
            lock.acquire(run_dir)
    except BaseException:
        lock.release(job_dir, undo=True)
        raise
    if elsewhere:
        lock.release(job_dir, undo=True)
    return Claim(Path(run_dir).resolve(), resuming)


def undo_claim_on_error(init: Callable[..., None]) -> Callable[..., None]:
    """Decorate an ``__init__`` that sets ``self.claim``: when it raises, the claim is released
    and undone, so a refused job leaves the folder as it found it."""
    @functools.wraps(init)
    def wrapper(self, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except BaseException:
            claim = self.__dict__.get("claim")
            if claim is not None:
                claim.release(undo=True)
            raise
    return wrapper


def holding_claim(method: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a method of an object with ``self.claim``: the folder stays locked while it runs
    (taken again when an earlier call let it go) and is let go when it returns or raises."""
    @functools.wraps(method)
    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        self.claim.hold()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.claim.release()
    return wrapper
