"""When to stop labelling: stabilising predictions (Bloodgood & Vijay-Shanker 2009, "A Method
for Stopping Active Learning Based on Stabilizing Predictions and the Need for User-Adjustable
Stopping", CoNLL).

A fixed *stop set* of pool samples, drawn once at random (seeded) from the initial pool, is
predicted by every round's model. Cohen's kappa (scikit-learn's ``cohen_kappa_score``) between
the predictions of successive rounds' models is logged as ``stop_kappa``; once it is at least
``loop.stop_kappa`` in each of the last ``loop.stop_window`` rounds the predictions have
stabilised and the run stops. The stop set needs no labels (samples in it may still be queried
and labelled; the paper notes this does not matter).

The paper stops when the *mean* kappa over the last three rounds exceeds 0.99; alframe asks
every one of the last ``stop_window`` values to reach the threshold (a slightly stricter rule).

State lives in ``<run_dir>/stop_set.npz`` (stop-set indices, each round's predictions and kappa),
so a resumed run continues the same series.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from sklearn.metrics import cohen_kappa_score

from alframe.errors import ConfigError
from alframe.rundir.state import PoolState, atomic_write

STOP_FILE = "stop_set.npz"


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa between two predictions of the same samples.

    Args:
        a, b: ``[S] int`` predicted classes.

    Returns:
        kappa in [-1, 1]; 1.0 when the predictions are identical (scikit-learn returns NaN when
        both predict a single class everywhere, where agreement by chance is 1).

    Raises:
        ValueError: different lengths or no samples.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"kappa needs two non-empty [S] predictions of equal length, got {a.shape} and {b.shape}")
    if np.array_equal(a, b):
        return 1.0
    return float(cohen_kappa_score(a, b))


def validate(cfg: DictConfig) -> None:
    """Check ``loop.stop_kappa``, ``loop.stop_window`` and ``loop.stop_set_size``.

    Raises:
        ConfigError: naming the key, the bad value and what is allowed.
    """
    loop = cfg.loop
    size = loop.get("stop_set_size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError(f"loop.stop_set_size={size!r} is invalid: must be an integer >= 0 "
                          "(pool samples scored each round for stop_kappa; 0 = off)")
    threshold = loop.get("stop_kappa")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1.0 < threshold <= 1.0:
            raise ConfigError(f"loop.stop_kappa={threshold!r} is invalid: must be a kappa in (-1, 1] "
                              "(e.g. 0.99) or null to turn the stopping criterion off")
        if size == 0:
            raise ConfigError("loop.stop_kappa needs a stop set: loop.stop_set_size=0 is invalid with it, "
                              "must be an integer >= 1")
    window = loop.get("stop_window", 3)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError(f"loop.stop_window={window!r} is invalid: must be an integer >= 1 "
                          "(rounds in a row with kappa >= loop.stop_kappa)")


class StabilisingPredictions:
    """The stop set, its per-round predictions and the stopping decision.

    Args:
        cfg: the run's config (``seed``, ``loop.stop_set_size``, ``loop.stop_kappa``, ``loop.stop_window``).
        state: the pool state at the start of the run; the stop set is drawn from its available
            samples with a generator seeded by ``seed`` alone, so it is the same after a resume.
        run_dir: where ``stop_set.npz`` is kept.

    Attributes:
        idx: ``[S] int64`` the stop set (absolute train-source indices, ascending).
        rounds: rounds recorded so far; ``kappas``: their kappa against the previous round
            (NaN for the first); ``predictions``: their ``[S]`` predicted classes.

    Raises:
        ConfigError: bad ``loop.stop_*`` values (:func:`validate`).
    """

    def __init__(self, cfg: DictConfig, state: PoolState, run_dir: Path):
        validate(cfg)
        self.path = Path(run_dir) / STOP_FILE
        self.threshold = cfg.loop.get("stop_kappa")
        self.window = int(cfg.loop.get("stop_window", 3))
        size = int(cfg.loop.get("stop_set_size", 0))
        self.rounds: list[int] = []
        self.kappas: list[float] = []
        self.predictions: list[np.ndarray] = []
        if self.path.is_file():
            with np.load(self.path) as z:
                self.idx = z["idx"]
                self.rounds = z["rounds"].tolist()
                self.kappas = z["kappas"].tolist()
                self.predictions = list(z["predictions"])
            return
        candidates = np.flatnonzero(state.available)
        rng = np.random.default_rng([int(cfg.seed), 2009])  # its own stream: independent of round seeds
        size = min(size, len(candidates))
        self.idx = np.sort(rng.choice(candidates, size=size, replace=False)) if size else np.empty(0, np.int64)

    @property
    def enabled(self) -> bool:
        """True when there is a stop set to score."""
        return len(self.idx) > 0

    def update(self, round: int, predicted: np.ndarray) -> dict[str, float]:
        """Record round ``round``'s predictions on the stop set.

        Args:
            round: the round whose model made them (a round seen before replaces its record).
            predicted: ``[S] int`` classes of ``self.idx``.

        Returns:
            ``{"stop_kappa": kappa}`` against the previous round's model, or ``{}`` for the first round.
        """
        predicted = np.asarray(predicted, dtype=np.int64)
        while self.rounds and self.rounds[-1] >= round:  # a resumed round is re-trained: replace it
            self.rounds.pop()
            self.kappas.pop()
            self.predictions.pop()
        k = kappa(self.predictions[-1], predicted) if self.predictions else float("nan")
        self.rounds.append(int(round))
        self.kappas.append(k)
        self.predictions.append(predicted)
        atomic_write(self.path, lambda f: np.savez(
            f, idx=self.idx, rounds=np.asarray(self.rounds, np.int64), kappas=np.asarray(self.kappas, np.float64),
            predictions=np.stack(self.predictions)))
        return {} if np.isnan(k) else {"stop_kappa": k}

    def reason(self) -> str | None:
        """Why the run should stop now, or None (also when ``loop.stop_kappa`` is null)."""
        if self.threshold is None:
            return None
        last = [k for k in self.kappas if not np.isnan(k)][-self.window:]
        if len(last) == self.window and all(k >= float(self.threshold) for k in last):
            return (f"predictions stabilised: Cohen's kappa between successive models on the {len(self.idx)}-sample "
                    f"stop set >= loop.stop_kappa={self.threshold} for {self.window} round(s) "
                    f"({', '.join(f'{k:.4f}' for k in last)})")
        return None
