"""Uncertainty sampling on one deterministic forward pass (Settles 2009, "Active Learning
Literature Survey", section 3.1), and random sampling as the baseline."""

from __future__ import annotations

import numpy as np

from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.base import QueryStrategy, ScoreStrategy, entropy


class RandomSampling(QueryStrategy):
    """Uniform random sampling from the candidates (the passive-learning baseline)."""

    cold_start = True

    def query(self, outputs: ModelOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        if k < 1:
            raise ValueError(f"query size k must be >= 1, got {k}")
        return rng.choice(outputs.idx, size=min(k, len(outputs.idx)), replace=False).astype(np.int64)


class LeastConfidence(ScoreStrategy):
    """Least confidence: score = 1 - max_c p(c|x). Settles 2009; Culotta & McCallum 2005.

    Reads ``probs: [M, C]``.
    """

    requires = frozenset({"probs"})

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        return (1.0 - outputs.require("probs").double().max(dim=1).values).numpy()


class Margin(ScoreStrategy):
    """Smallest margin: score = -(p_top1 - p_top2). Settles 2009; Scheffer et al. 2001.

    Reads ``probs: [M, C]`` (C >= 2).
    """

    requires = frozenset({"probs"})

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        top2 = outputs.require("probs").double().topk(2, dim=1).values
        return (top2[:, 1] - top2[:, 0]).numpy()


class Entropy(ScoreStrategy):
    """Maximum predictive entropy: score = -sum_c p log p (nats; 0 log 0 = 0). Settles 2009;
    Shannon 1948.

    Reads ``probs: [M, C]``.
    """

    requires = frozenset({"probs"})

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        return entropy(outputs.require("probs")).numpy()

