"""alframe: deep active-learning experiments from configuration.

Hydra configs choose the dataset, model, query strategy, oracle and loop settings; a PyTorch
Lightning loop trains a fresh model each round, scores the pool, queries the most informative
samples, asks the oracle for their labels and logs every round to MLflow.
"""

from alframe.config import schema as _schema  # noqa: E402
from alframe.version import __version__  # noqa: E402, F401

_schema.register()  # the structured config groups (loop, trainer, mlflow, paths) for Hydra


def __getattr__(name: str):
    """``alframe.run`` and ``alframe.report``: the notebook door (:mod:`alframe.notebook`),
    imported on first use so that ``import alframe`` stays light."""
    if name in ("run", "report"):
        from alframe import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'alframe' has no attribute {name!r}")
