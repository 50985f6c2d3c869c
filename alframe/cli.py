"""``alframe`` command: a Hydra app that runs one experiment job per (multi)run job."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
# conf/hydra/launcher/{joblib,submitit_slurm}.yaml spell out the plugins' configs in full; Hydra
# still validates them against the plugins' schemas of the same name, with a deprecation notice.
warnings.filterwarnings("ignore", message="(?s).*is validated against ConfigStore schema with the same name")
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables"


def job_context() -> tuple[Path, str | None, int | None]:
    """This job's output dir and, in a multirun, the sweep id shared by its jobs and the job number."""
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    sweep_id = job_num = None
    if hc.mode == RunMode.MULTIRUN:
        sweep_id = Path(hc.sweep.dir).name
        job_num = int(hc.job.num)
    return job_dir, sweep_id, job_num


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Run the experiment described by ``cfg``; returns the final test accuracy (for sweepers).

    Bad configuration values end the process with exit code 2 and a one-line message that
    names the key, the value and the allowed range.
    """
    from alframe import progress
    from alframe.config import ConfigError
    from alframe.loop import run_experiment
    from alframe.state import StateMismatchError

    job_dir, sweep_id, job_num = job_context()
    if job_num is not None:  # parallel jobs share the terminal: say whose line it is
        progress.set_job_prefix(f"[job {job_num} {cfg.strategy.name} seed{cfg.seed}] ")
    try:
        result = run_experiment(cfg, job_dir, sweep_id=sweep_id)
    except (ConfigError, StateMismatchError) as e:
        print(f"alframe: error: {e}", file=sys.stderr)
        sys.exit(2)
    return result.final_accuracy


if __name__ == "__main__":
    main()
