"""Finding, checking and reopening saved runs (``loop.resume``)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from alframe import progress
from alframe.config import ConfigError
from alframe.state import META_FILE, PoolState


def saved_fingerprint(run_dir: Path) -> str | None:
    """The config fingerprint saved in ``run_dir``, or None when there is no readable state."""
    try:
        return json.loads((Path(run_dir) / META_FILE).read_text()).get("config_fingerprint")
    except (OSError, ValueError):
        return None


def find_resumable(output_root: Path, fingerprints: set[str]) -> Path | None:
    """Newest run dir under ``output_root`` whose saved state has one of ``fingerprints``.

    A finished run qualifies too: resuming it with a larger ``loop.rounds`` or ``loop.budget``
    continues it; with the same limits there is nothing left to do.
    """
    best: tuple[float, Path] | None = None
    for meta_path in Path(output_root).glob("**/" + META_FILE):
        if saved_fingerprint(meta_path.parent) in fingerprints:
            mtime = meta_path.stat().st_mtime
            if best is None or mtime > best[0]:
                best = (mtime, meta_path.parent)
    return None if best is None else best[1]


def resolve_run_dir(cfg: DictConfig, job_dir: Path, fingerprints: set[str]) -> tuple[Path, bool]:
    """Where this job's state lives, and whether it resumes a saved state.

    ``loop.resume=false`` uses ``job_dir``; ``true`` continues the newest run with the same
    config under ``paths.output_root`` (or starts fresh if there is none); a path continues the
    run saved there.

    Args:
        fingerprints: config fingerprints a saved run may carry to count as this config.

    Raises:
        ConfigError: ``loop.resume`` names a folder without a saved state.
    """
    resume = cfg.loop.resume
    if resume is False or resume is None:
        return job_dir, False
    if resume is True or str(resume).lower() == "true":
        found = find_resumable(Path(cfg.paths.output_root), fingerprints)
        if found is None:
            progress.console.print("[yellow]loop.resume=true: no saved run with this config under "
                                   f"{cfg.paths.output_root}; starting a new run[/yellow]")
            return job_dir, False
        return found, True
    path = Path(str(resume)).expanduser()
    if not PoolState.exists(path):
        raise ConfigError(f"loop.resume={resume!r}: no saved pool state (pool_state.npz) in that folder; "
                          "pass the run directory printed by the interrupted run, or loop.resume=true")
    return path, True
