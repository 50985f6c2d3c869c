"""``alframe`` command: a Hydra app that runs one experiment job per (multi)run job."""

from __future__ import annotations

import logging
import shlex
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


def resume_command(run_dir: Path) -> str:
    """The command line that continues the run saved in ``run_dir``."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("loop.resume=")]
    return " ".join(["alframe", *(shlex.quote(o) for o in overrides), shlex.quote(f"loop.resume={run_dir}")])


def main() -> None:
    """The ``alframe`` command: the command line's keys are checked first
    (:mod:`alframe.cli.precheck`: a misspelled key is refused in one line, exit code 2, before any
    folder exists), then Hydra runs :func:`job` once per (multi)run job."""
    from alframe.cli.jobfiles import note_existing_run_dir
    from alframe.cli.precheck import check_command_line
    from alframe.errors import ConfigError

    try:
        check_command_line(sys.argv[1:], CONFIG_DIR)
    except ConfigError as e:
        print(f"alframe: error: {e}", file=sys.stderr)
        sys.exit(2)
    note_existing_run_dir(sys.argv[1:])
    job()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def job(cfg: DictConfig) -> float:
    """Run the experiment described by ``cfg``; returns the final test accuracy (for sweepers).

    Bad configuration values end the process with exit code 2 and a one-line message that
    names the key, the value and the allowed range, before torch, Lightning or MLflow are
    imported where the data is not needed to tell; so does a run folder that another process
    holds (:mod:`alframe.rundir.lock`). A refused job changes no file and removes the job folder
    Hydra made; files of the command's own (:mod:`alframe.cli.jobfiles`) are written only once
    the run folder is locked and checked.
    Ctrl-C or SIGTERM saves the state, marks the MLflow run KILLED, prints the command that
    resumes, and exits with code 130.
    """
    from alframe import progress
    from alframe.cli.jobfiles import JobLog, remove_job_dir
    from alframe.config.settings import settings_of
    from alframe.errors import ConfigError, StateMismatchError
    from alframe.rundir.claim import claim_run_folder

    job_dir, sweep_id, job_num = job_context()
    if job_num is not None:  # parallel jobs share the terminal: say whose line it is
        progress.set_job_prefix(f"[job {job_num} {cfg.strategy.name} seed{cfg.seed}] ")
    experiment = claim = None
    log = JobLog(HydraConfig.get().job.name)
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        settings = settings_of(cfg)  # every check that needs no data, once, before torch loads
        # the run folder, locked before torch loads: a second process on it stops within a second
        claim = claim_run_folder(_as_run(cfg), job_dir, announce=False)
        from alframe.loop.experiment import build_experiment

        experiment = build_experiment(settings, job_dir, sweep_id=sweep_id)  # locks the same folder again
        claim.release(undo=True)
        _record(cfg, experiment, job_dir, log)
        return experiment.run().final_accuracy
    except (ConfigError, StateMismatchError) as e:
        if claim is not None:
            claim.release(undo=True)
        remove_job_dir(job_dir)
        print(f"alframe: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if experiment is None:
            if claim is not None:
                claim.release(undo=True)
            remove_job_dir(job_dir)
            print("alframe: interrupted before the run started; nothing was saved", file=sys.stderr)
        else:
            print(f"\nalframe: interrupted; the state is saved in {experiment.run_dir} and the MLflow run is "
                  f"marked KILLED. Resume with:\n  {resume_command(experiment.run_dir)}", file=sys.stderr)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
        log.close()


def _as_run(cfg: DictConfig) -> DictConfig:
    """``cfg`` as the experiment will run it (``smoke=true`` shrinks it, which changes its fingerprint)."""
    if cfg.get("smoke"):
        from alframe.config.smoke import apply_smoke

        return apply_smoke(cfg)
    return cfg


def _record(cfg: DictConfig, experiment, job_dir: Path, log) -> None:
    """The command's own files, now that the run folder is locked and checked: the job log in the
    run folder, Hydra's record of a new run (``.hydra/``), and no job folder left behind when the
    run continues elsewhere."""
    import logging

    from alframe.cli.jobfiles import remove_job_dir, write_hydra_record
    from alframe.rundir.lock import same_folder

    run_dir = experiment.run_dir
    if not same_folder(run_dir, job_dir):
        remove_job_dir(job_dir)
    log.attach(run_dir)
    if experiment.resuming:
        logging.getLogger("alframe").info("resumed with: %s", resume_command(run_dir))
    else:
        write_hydra_record(run_dir, cfg)


if __name__ == "__main__":
    main()
