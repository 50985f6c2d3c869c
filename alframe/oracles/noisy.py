"""Simulated noisy annotator: stored labels passed through a seeded noise model."""

from __future__ import annotations

import numpy as np

from alframe.oracles.base import LabelRequest, LabelResult
from alframe.oracles.stored import StoredOracle


class NoisyOracle(StoredOracle):
    """An annotator who makes mistakes, on top of the stored labels.

    Two noise models:

    - uniform (``confusion=None``): with probability ``flip_rate`` the true class is replaced
      by one of the other C-1 classes, chosen uniformly;
    - class-conditional (``confusion`` given): the answer for true class ``y`` is drawn from
      row ``y`` of the ``[C, C]`` matrix ``confusion`` (``confusion[y, j]`` = probability of
      answering ``j``; rows sum to 1).

    The noise of round ``r`` is seeded from ``(seed, r)``, so a resumed run gets the same
    answers. ``LabelResult.info["noise_rate"]`` is the fraction of the batch that is wrong
    (logged per round as the ``noise_rate`` metric).

    Args:
        flip_rate: probability of a wrong answer in [0, 1] (uniform model).
        confusion: ``[C, C]`` row-stochastic matrix, or None.
        seed: noise seed (the config passes the experiment seed).

    Raises:
        ValueError: ``flip_rate`` outside [0, 1]; at setup, a confusion matrix that is not
            C x C, has negative entries or rows that do not sum to 1 (within 1e-6).
    """

    name = "noisy"

    def __init__(self, flip_rate: float = 0.1, confusion: list[list[float]] | None = None, seed: int = 0):
        if not 0.0 <= float(flip_rate) <= 1.0:
            raise ValueError(f"oracle.flip_rate={flip_rate} must lie in [0, 1]")
        self.flip_rate = float(flip_rate)
        self.confusion = None if confusion is None else np.asarray(confusion, dtype=float)
        self.seed = int(seed)

    def setup(self, data, run_dir) -> None:
        super().setup(data, run_dir)
        c = data.num_classes
        if self.confusion is not None:
            m = self.confusion
            if m.shape != (c, c):
                raise ValueError(f"oracle.confusion must be a {c}x{c} matrix for {data.name!r} "
                                 f"({c} classes), got shape {m.shape}")
            if (m < 0).any():
                raise ValueError("oracle.confusion has negative entries: rows must be probabilities")
            bad = np.flatnonzero(np.abs(m.sum(axis=1) - 1.0) > 1e-6)
            if len(bad):
                raise ValueError(f"oracle.confusion rows {bad.tolist()} do not sum to 1 "
                                 f"(sums {m.sum(axis=1)[bad].round(6).tolist()})")
        elif c < 2 and self.flip_rate > 0:
            raise ValueError("oracle.flip_rate > 0 needs at least 2 classes")

    def corrupt(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noisy answers for true labels ``y: [k] int`` (see the class docstring)."""
        y = np.asarray(y, dtype=np.int64)
        c = self.data.num_classes
        if self.confusion is not None:
            cdf = np.cumsum(self.confusion[y], axis=1)
            u = rng.random(len(y))[:, None]
            return np.minimum((u >= cdf).sum(axis=1), c - 1).astype(np.int64)
        flip = rng.random(len(y)) < self.flip_rate
        # A uniformly chosen *other* class: shift by 1..C-1.
        shift = rng.integers(1, c, size=len(y)) if c > 1 else np.zeros(len(y), dtype=np.int64)
        return np.where(flip, (y + shift) % c, y).astype(np.int64)

    def label(self, request: LabelRequest) -> LabelResult:
        true = super().label(request)
        rng = np.random.default_rng([self.seed, int(request.round), 0x6E6F69])
        noisy = self.corrupt(true.labels, rng)
        rate = float((noisy != true.labels).mean()) if len(noisy) else 0.0
        return LabelResult(idx=true.idx, labels=noisy, info={"noise_rate": rate})
