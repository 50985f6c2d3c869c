"""alframe: deep active-learning experiments from configuration.

Hydra configs choose the dataset, model, query strategy, oracle and loop settings; a PyTorch
Lightning loop trains a fresh model each round, scores the pool, queries the most informative
samples, asks the oracle for their labels and logs every round to MLflow.
"""

__version__ = "0.1.0"

from alframe.config import schema as _schema  # noqa: E402

_schema.register()  # the structured config groups (loop, trainer, mlflow, paths) for Hydra
