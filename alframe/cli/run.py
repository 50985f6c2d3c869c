"""``alframe`` command: a Hydra app that runs one experiment job per (multi)run job."""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
import signal
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
# conf/hydra/launcher/{joblib,submitit_slurm}.yaml spell out the plugins' configs in full; Hydra
# still validates them against the plugins' schemas of the same name, with a deprecation notice.
warnings.filterwarnings("ignore", message="(?s).*is validated against ConfigStore schema with the same name")
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"
logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # "Could not load library with AVX2 support ..."


def job_context() -> tuple[Path, str | None, int | None]:
    """This job's output dir and, in a multirun, the sweep id shared by its jobs and the job number."""
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    sweep_id = job_num = None
    if hc.mode == RunMode.MULTIRUN:
        sweep_id = Path(hc.sweep.dir).name
        job_num = int(hc.job.num)
    return job_dir, sweep_id, job_num


class Interrupted(KeyboardInterrupt):
    """SIGTERM (e.g. Slurm preemption) handled like Ctrl-C: save, mark the run KILLED, stop."""


def _raise_interrupted(signum, frame):
    raise Interrupted(f"signal {signum}")


def remove_hydra_debris(job_dir: Path) -> None:
    """Delete ``job_dir`` when it holds nothing but what Hydra wrote at start (``.hydra/`` and
    the job log), and the two folders above it while they are empty (``runs/<date>``): a
    refused config leaves no folder."""
    from alframe.rundir.resume import run_files_in

    job_dir = Path(job_dir)
    if not job_dir.is_dir() or run_files_in(job_dir):
        return
    if {p.name for p in job_dir.iterdir()} <= {".hydra", "alframe.log"}:
        shutil.rmtree(job_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # rmdir only removes empty folders
            job_dir.parent.rmdir()
            job_dir.parent.parent.rmdir()


def resume_command(run_dir: Path) -> str:
    """The command line that continues the run saved in ``run_dir``."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("loop.resume=")]
    return " ".join(["alframe", *(shlex.quote(o) for o in overrides), shlex.quote(f"loop.resume={run_dir}")])


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Run the experiment described by ``cfg``; returns the final test accuracy (for sweepers).

    Bad configuration values end the process with exit code 2 and a one-line message that
    names the key, the value and the allowed range, before torch, Lightning or MLflow are
    imported where the data is not needed to tell; the job folder Hydra made is removed.
    Ctrl-C or SIGTERM saves the state, marks the MLflow run KILLED, prints the command that
    resumes, and exits with code 130.
    """
    from alframe import progress
    from alframe.config.settings import settings_of
    from alframe.errors import ConfigError, StateMismatchError

    job_dir, sweep_id, job_num = job_context()
    if job_num is not None:  # parallel jobs share the terminal: say whose line it is
        progress.set_job_prefix(f"[job {job_num} {cfg.strategy.name} seed{cfg.seed}] ")
    experiment = None
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        settings = settings_of(cfg)  # every check that needs no data, once, before torch loads
        from alframe.loop.experiment import build_experiment

        experiment = build_experiment(settings, job_dir, sweep_id=sweep_id)
        return experiment.run().final_accuracy
    except (ConfigError, StateMismatchError) as e:
        remove_hydra_debris(job_dir)
        print(f"alframe: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if experiment is None:
            remove_hydra_debris(job_dir)
            print("alframe: interrupted before the run started; nothing was saved", file=sys.stderr)
        else:
            print(f"\nalframe: interrupted; the state is saved in {experiment.run_dir} and the MLflow run is "
                  f"marked KILLED. Resume with:\n  {resume_command(experiment.run_dir)}", file=sys.stderr)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
