"""What the ``alframe`` command itself writes into a run folder, and when: only once the run
folder is locked and every check has passed, so a refused command leaves every file as it found
it, and a resumed one writes only into the run it continues.

Hydra is told to write nothing of its own (``hydra.output_subdir: null``; the job log
configuration ``hydra/job_logging: alframe`` has no file handler). In its place:

- ``.hydra/`` (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``, as Hydra writes them) is the
  record of how a run was made: written when a run starts, never rewritten by a resume or a
  refused command. A resume adds a line with its overrides to the run's log instead.
- ``alframe.log``: the job's log records, kept in memory until the run folder is known, then
  appended to ``<run_dir>/alframe.log`` (the continued run's own log when resuming).
- The folder Hydra made for the job (``runs/<date>/<time>``) is removed when the command is
  refused or continues a run elsewhere, with ``runs/<date>`` when that is empty: only empty
  folders are removed, and never one that existed before the command.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

#: Hydra's job log format
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
#: records kept before the run folder is known, at most
MAX_BUFFERED = 10_000

#: folders that existed before this command (an explicit ``hydra.run.dir``): never removed
existing_dirs: set[str] = set()


class _Buffer(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < MAX_BUFFERED:
            self.records.append(record)


class JobLog:
    """The job's log: records kept in memory (root logger) until :meth:`attach` names the run
    folder, then written to ``<run_dir>/<name>.log`` from the first record on."""

    def __init__(self, name: str = "alframe"):
        self.name = name
        self.handler: logging.Handler = _Buffer()
        logging.getLogger().addHandler(self.handler)

    def attach(self, run_dir: Path) -> None:
        """Append the kept records and all later ones to ``<run_dir>/<name>.log``."""
        buffer = self.handler
        fh = logging.FileHandler(Path(run_dir) / f"{self.name}.log", encoding="utf-8")
        fh.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.removeHandler(buffer)
        for record in getattr(buffer, "records", []):
            fh.handle(record)
        root.addHandler(fh)
        self.handler = fh

    def close(self) -> None:
        """Stop logging to the file (records kept and not attached are dropped)."""
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()


def write_hydra_record(run_dir: Path, cfg: DictConfig) -> None:
    """Write ``<run_dir>/.hydra/{config,hydra,overrides}.yaml`` as Hydra would (atomically)."""
    from hydra.core.hydra_config import HydraConfig

    from alframe.rundir.state import atomic_write

    hydra_cfg = HydraConfig.instance().cfg
    out = Path(run_dir) / ".hydra"
    out.mkdir(exist_ok=True)
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg),
                       ("overrides.yaml", hydra_cfg.hydra.overrides.task)):
        text = OmegaConf.to_yaml(node)
        atomic_write(out / name, lambda f, text=text: f.write(text.encode("utf-8")), durable=False)


def remove_job_dir(job_dir: Path) -> None:
    """Remove the job folder Hydra made, when empty and not there before this command, and the
    two folders above it while they are empty (``runs/<date>``, ``runs``)."""
    job_dir = Path(job_dir)
    if str(job_dir.resolve()) in existing_dirs:
        return
    with contextlib.suppress(OSError):  # rmdir only removes empty folders
        job_dir.rmdir()
        job_dir.parent.rmdir()
        job_dir.parent.parent.rmdir()


def note_existing_run_dir(argv: list[str]) -> None:
    """Remember an explicit ``hydra.run.dir=<folder>`` that exists already (see :data:`existing_dirs`)."""
    existing_dirs.clear()
    for arg in argv:
        if arg.startswith("hydra.run.dir=") and "${" not in arg:
            folder = Path(arg.split("=", 1)[1]).expanduser()
            if folder.is_dir():
                existing_dirs.add(str(folder.resolve()))
