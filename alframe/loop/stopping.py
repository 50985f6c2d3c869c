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
from sklearn.metrics import cohen_kappa_score

from alframe.loop.hooks import RoundHook
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


class StabilisingPredictions:
    """The stop set, its per-round predictions and the stopping decision.

    Args:
        cfg: the run's settings or config (``seed``, ``loop.stop_set_size``, ``loop.stop_kappa``, ``loop.stop_window``).
        state: the pool state at the start of the run; the stop set is drawn from its available
            samples with a generator seeded by ``seed`` alone, so it is the same after a resume.
        run_dir: where ``stop_set.npz`` is kept.

    Attributes:
        idx: ``[S] int64`` the stop set (absolute train-source indices, ascending).
        rounds: rounds recorded so far; ``kappas``: their kappa against the previous round
            (NaN for the first); ``predictions``: their ``[S]`` predicted classes.
    """

    def __init__(self, cfg, state: PoolState, run_dir: Path):
        self.path = Path(run_dir) / STOP_FILE
        self.threshold = cfg.loop.stop_kappa
        self.window = int(cfg.loop.stop_window)
        size = int(cfg.loop.stop_set_size)
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


class StopOnStablePredictions(RoundHook):
    """Round hook of :class:`StabilisingPredictions`: ``stop_kappa`` every round (while
    ``loop.stop_set_size`` > 0) and the stop once predictions have stabilised (``loop.stop_kappa``)."""

    stopper: StabilisingPredictions | None = None

    def setup(self, run):
        self.stopper = StabilisingPredictions(run.settings, run.state, run.run_dir)

    def on_round_end(self, run, round, net, tracker):
        if not self.stopper.enabled:
            return {}
        return self.stopper.update(round, run.probs(net, self.stopper.idx).argmax(dim=1).numpy())

    def stop_reason(self, run):
        return self.stopper.reason()
