"""Query-strategy contract and the shared top-k selection.

A strategy receives the model outputs for the candidate pool samples (only what it declares
in ``requires``; never pool labels), the number of samples ``k`` to query and a seeded random
generator, and returns ``min(k, M)`` unique absolute indices from the candidates.
"""

from __future__ import annotations

import numpy as np
import torch

from alframe.scoring.outputs import ModelOutputs


class QueryStrategy:
    """Base class of every acquisition function.

    Class attributes:
        requires: model outputs the strategy reads (see :mod:`alframe.scoring.pool`).
        consistent_dropout: MC strategies only: score the pool with one dropout mask per MC
            sample shared by all points, seeded by the round (``compute_outputs(mask_seed=...)``).
        cold_start: the strategy can choose the initial labelled set, before any model is
            trained (``loop.initial_by_strategy``): it reads no prediction of the network, only
            embeddings (which, on fixed features, need no labels) or nothing.

    Instance attribute (optional): ``last_info: dict[str, float]``, numbers about the last
    :meth:`query` for the loop to log (e.g. ProbCover's ``probcover_delta``); read it with
    ``getattr(strategy, "last_info", {})``.

    Args:
        name: display name (logged as the ``strategy`` tag); defaults to the class name.
    """

    requires: frozenset[str] = frozenset()
    mc_samples: int = 0
    consistent_dropout: bool = False
    cold_start: bool = False

    def __init__(self, name: str | None = None):
        self.name = name or type(self).__name__.lower()

    def query(self, outputs: ModelOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        """Pick ``min(k, M)`` samples to label.

        Args:
            outputs: model outputs over the candidates ``outputs.idx`` (``[M]``, all in the pool).
            k: query (acquisition) batch size, >= 1.
            rng: seeded generator for any randomness.

        Returns:
            ``[min(k, M)] int64`` unique absolute indices taken from ``outputs.idx``.
        """
        raise NotImplementedError

    def scores_of(self, outputs: ModelOutputs, chosen: np.ndarray) -> np.ndarray | None:
        """The acquisition score of each chosen sample (shown to a person who labels them), or
        None when the strategy has no per-sample score (a batch or random choice)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ScoreStrategy(QueryStrategy):
    """A strategy that scores each candidate independently; the top ``k`` scores are queried.

    Subclasses implement :meth:`score` (higher = more informative). Ties are broken
    deterministically by the smaller absolute index.
    """

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        """Informativeness ``[M] float`` of each candidate (higher is queried first)."""
        raise NotImplementedError

    def query(self, outputs: ModelOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        scores = np.asarray(self.score(outputs), dtype=np.float64)
        return top_k(scores, outputs.idx, k)

    def scores_of(self, outputs: ModelOutputs, chosen: np.ndarray) -> np.ndarray:
        """``[k] float``: :meth:`score` of each chosen sample (computed again: a score is cheap
        next to the model outputs it reads)."""
        scores = np.asarray(self.score(outputs), dtype=np.float64)
        position = {int(i): p for p, i in enumerate(np.asarray(outputs.idx).tolist())}
        return scores[[position[int(i)] for i in chosen]]


def top_k(scores: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """The ``min(k, M)`` indices with the highest scores, ties broken by the smaller index.

    Args:
        scores: ``[M] float``, finite.
        idx: ``[M] int`` absolute indices aligned with ``scores``.
        k: number to return (>= 1).

    Raises:
        ValueError: ``k < 1``, misaligned inputs or non-finite scores (NaN would make the
            order meaningless).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    if k < 1:
        raise ValueError(f"query size k must be >= 1, got {k}")
    if scores.shape != idx.shape:
        raise ValueError(f"{len(scores)} scores for {len(idx)} candidates")
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(f"non-finite acquisition scores for indices {idx[bad][:10].tolist()}")
    order = np.lexsort((idx, -scores))
    return idx[order[: min(k, len(idx))]]




def check_k(k: int) -> int:
    """Validate the query size.

    Raises:
        ValueError: ``k`` < 1.
    """
    if int(k) < 1:
        raise ValueError(f"query size k must be >= 1, got {k}")
    return int(k)


def sorted_view(outputs: ModelOutputs) -> tuple[np.ndarray, np.ndarray]:
    """``(idx_sorted [M], order [M])``: candidates in ascending absolute index, so that the
    first maximum of any score is the smallest absolute index (deterministic tie-breaking)."""
    idx = np.asarray(outputs.idx, dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    return idx[order], order


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats along ``dim``, computed in float64, with ``0 log 0 = 0``.

    Args:
        p: probabilities, e.g. ``[M, C]`` or ``[M, T, C]``.

    Returns:
        ``p``'s shape without ``dim``, float64.
    """
    p = p.double()
    return -torch.special.xlogy(p, p).sum(dim=dim)
