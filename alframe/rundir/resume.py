"""Finding, checking and reopening saved runs (``loop.resume``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from alframe import progress
from alframe.errors import ConfigError
from alframe.rundir.state import META_FILE, PoolState

if TYPE_CHECKING:  # the checked settings (alframe.config.settings) or a composed config
    from alframe.config.settings import Settings


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


#: what a run leaves in its folder that another run must never write over
RUN_FILES = ("pool_state.npz", "answers", "queries")


def run_files_in(folder: Path) -> list[str]:
    """Names of :data:`RUN_FILES` present in ``folder`` (pool state, a person's answers, label
    files); Hydra's own ``.hydra/`` and log file do not count."""
    return [name for name in RUN_FILES if (Path(folder) / name).exists()]


def resolve_run_dir(cfg: Settings | DictConfig, job_dir: Path, fingerprints: set[str]) -> tuple[Path, bool]:
    """Where this job's state lives, and whether it resumes a saved state.

    - ``loop.resume=false``: ``job_dir``, which must not hold another run's files.
    - ``loop.resume=true``: the job's own folder when it holds a run of this config (an
      explicit ``hydra.run.dir``, or the job's sweep subfolder); otherwise the newest run of
      this config under ``paths.output_root``; otherwise a new run in ``job_dir``.
    - ``loop.resume=<folder>``: the run saved there.

    Args:
        job_dir: the folder the command itself uses (Hydra's run dir or sweep job subfolder).
        fingerprints: config fingerprints a saved run may carry to count as this config.

    Raises:
        ConfigError: ``job_dir`` holds a run's files and resuming is off, or ``loop.resume``
            names a folder without a saved state.
        StateMismatchError: ``loop.resume=true`` and ``job_dir`` holds a run of another config.
    """
    from alframe.errors import StateMismatchError

    resume = cfg.loop.resume
    job_dir = Path(job_dir)
    if resume is False or resume is None:
        found = run_files_in(job_dir)
        if found:
            raise ConfigError(
                f"{job_dir.resolve()} already holds a run ({', '.join(found)}); nothing was changed. "
                "Continue it with loop.resume=true, or write this run to another folder (hydra.run.dir=...)")
        return job_dir, False
    if resume is True or str(resume).lower() == "true":
        if PoolState.exists(job_dir):
            if saved_fingerprint(job_dir) not in fingerprints:
                raise StateMismatchError(
                    f"{job_dir.resolve()} holds a run of another configuration (config_fingerprint="
                    f"{saved_fingerprint(job_dir)!r}); nothing was changed. Resume it with the config it was "
                    "started with (its config.yaml), or write this run to another folder")
            return job_dir, True
        if run_files_in(job_dir):
            raise ConfigError(f"{job_dir.resolve()} holds label files ({', '.join(run_files_in(job_dir))}) "
                              "but no pool state; nothing was changed. Move them away or use another folder")
        found = find_resumable(Path(cfg.paths.output_root), fingerprints)
        if found is None:
            progress.console.print(f"[yellow]loop.resume=true: no saved run with this config in {job_dir} or "
                                   f"under {cfg.paths.output_root}; starting a new run[/yellow]", soft_wrap=True)
            return job_dir, False
        return found, True
    path = Path(str(resume)).expanduser()
    if not PoolState.exists(path):
        raise ConfigError(f"loop.resume={resume!r}: no saved pool state (pool_state.npz) in that folder; "
                          "pass the run directory printed by the interrupted run, or loop.resume=true")
    return path, True


#: the folder dataset's files and their content digests when the run started
FILES_MANIFEST = "dataset_files.json"


def save_files_manifest(run_dir: Path, data) -> None:
    """Write ``dataset_files.json`` (``{relative path: content digest}``) of a folder dataset."""
    from alframe.rundir.state import atomic_write

    digests = data.extras.get("file_digests")
    if digests:
        atomic_write(Path(run_dir) / FILES_MANIFEST, lambda f: f.write(json.dumps(digests, indent=0).encode()))


def check_same_data(run_dir: Path, saved_fingerprint: str, data) -> None:
    """Refuse to resume on data other than the run's: for folder datasets, name the files
    added, removed or changed since the run started.

    Args:
        saved_fingerprint: the dataset fingerprint saved with the pool state.
        data: the loaded :class:`~alframe.data.base.ALData`.

    Raises:
        StateMismatchError: the data differs; nothing in the run folder was changed.
    """
    from alframe.errors import StateMismatchError

    run_dir = Path(run_dir)
    manifest = run_dir / FILES_MANIFEST
    if saved_fingerprint == data.fingerprint or (
            not manifest.is_file() and saved_fingerprint == data.extras.get("fingerprint_without_files")):
        return
    digests = data.extras.get("file_digests")
    if digests and manifest.is_file():
        old = json.loads(manifest.read_text())
        parts = [f"{what} {len(names)}: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}"
                 for what, names in (("added", sorted(set(digests) - set(old))),
                                     ("removed", sorted(set(old) - set(digests))),
                                     ("changed", sorted(f for f in old if f in digests and old[f] != digests[f])))
                 if names]
        raise StateMismatchError(
            f"the images of dataset {data.name!r} ({data.extras.get('root')}) changed since the run in {run_dir} "
            f"started ({'; '.join(parts)}); the saved labels point at the old files, so nothing was changed. "
            "Restore the folder as it was, or start a new run")
    raise StateMismatchError(
        f"saved state in {run_dir} has dataset_fingerprint={saved_fingerprint!r}, but this run has "
        f"dataset_fingerprint={data.fingerprint!r}: it belongs to another dataset or configuration")
