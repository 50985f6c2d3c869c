"""What gets labelled: the initial labelled set (round 0, seed labels a person gave), each round's
query (score the pool once, the strategy picks) and the contract every batch must keep."""

from __future__ import annotations

import time

import numpy as np
import torch

from alframe import faults
from alframe.data.base import ALData
from alframe.models.base import ALNet
from alframe.rundir.state import PoolState
from alframe.scoring.pool import compute_outputs
from alframe.strategies.base import QueryStrategy
from alframe.training.seeds import SCORE, round_rng, round_seed
from alframe.training.trainer import build_net


def initial_indices(cfg, data: ALData, state: PoolState, k: int | None = None) -> np.ndarray:
    """The initial labelled set to request: seeded random, or class-balanced (simulation only).

    Args:
        cfg: the run's settings (``seed``, ``loop.initial_size``, ``loop.initial_balanced``).
        k: how many to pick from the pool (default ``loop.initial_size``).

    Returns:
        ``[k] int64`` sorted absolute pool indices.
    """
    rng = round_rng(cfg.seed, 0)
    pool = state.pool_idx
    k = int(cfg.loop.initial_size) if k is None else int(k)
    if not cfg.loop.initial_balanced:
        return np.sort(rng.choice(pool, size=k, replace=False))
    # Class-balanced start (Gal et al. 2017): k // C per class, the rest at random.
    y = data.targets[pool]
    per = k // data.num_classes
    picked = []
    for c in range(data.num_classes):
        members = pool[y == c]
        picked.append(rng.choice(members, size=min(per, len(members)), replace=False))
    chosen = np.concatenate(picked)
    rest = np.setdiff1d(pool, chosen)
    extra = rng.choice(rest, size=k - len(chosen), replace=False)
    return np.sort(np.concatenate([chosen, extra]).astype(np.int64))


def initial_request(s, strategy: QueryStrategy, data: ALData, state: PoolState, k: int, device,
                    spread=None, tracker=None) -> np.ndarray:
    """The initial set to request: :func:`initial_indices`, or with ``loop.initial_by_strategy``
    (a cold start) the strategy's pick of ``k`` from the outputs of round 0's network before
    training (built with round 0's seed, so a resumed run picks the same set). On fixed
    features (``ssl=simclr``, ``model=frozen`` with a linear head) its embeddings are those
    features, so TypiClust, ProbCover and k-means choose exactly as on the features.

    Args:
        tracker: the run's :class:`~alframe.tracking.run.Tracker`; a cold start's timings and
            the strategy's ``last_info`` (as :func:`query` gives them) go out with its next request.

    Returns:
        ``[k] int64`` sorted pool indices.
    """
    if not s.loop.initial_by_strategy or k == 0:
        return initial_indices(s, data, state, k)
    torch.manual_seed(round_seed(s.seed, 0))
    net = build_net(s, data.num_classes, data.input_shape).to(device).eval()
    chosen, info, _ = query(s, strategy, net, data, state, 0, device, spread, k=k)
    if tracker is not None:
        tracker.log_metrics(info, step=state.n_labelled, defer=True)
    return np.sort(chosen)


def check_query(chosen: np.ndarray, candidates: np.ndarray, state: PoolState, k: int, name: str) -> None:
    """Enforce the strategy contract: ``min(k, M)`` unique candidate indices, none labelled.

    Raises:
        RuntimeError: naming the strategy and what it broke.
    """
    want = min(k, len(candidates))
    if len(chosen) != want:
        raise RuntimeError(f"strategy {name!r} returned {len(chosen)} indices, expected {want}")
    if len(np.unique(chosen)) != len(chosen):
        raise RuntimeError(f"strategy {name!r} returned duplicate indices")
    outside = np.setdiff1d(chosen, candidates)
    if len(outside):
        raise RuntimeError(f"strategy {name!r} returned indices outside the scored pool: {outside[:10].tolist()}")
    if state.labelled_mask[chosen].any():
        raise RuntimeError(f"strategy {name!r} returned already-labelled indices")


def record_seed_labels(data: ALData, state: PoolState, initial_size: int) -> int:
    """Record labels a person already gave (``dataset.seed_labels``) as round-0 labels (once:
    only while nothing is labelled; ``state.progress.seed_labels`` counts them).

    Returns:
        How many initial samples are still to be requested from the oracle:
        ``max(0, initial_size - number of labels)``.
    """
    seed_idx = data.extras.get("seed_idx")
    if seed_idx is not None and len(seed_idx) and state.n_labelled == 0:
        state.label(np.asarray(seed_idx), np.asarray(data.extras["seed_labels"]), 0, num_classes=data.num_classes)
        state.progress.seed_labels = int(len(seed_idx))
    return max(0, int(initial_size) - state.n_labelled)


def query(s, strategy: QueryStrategy, net: ALNet, data: ALData, state: PoolState, r: int, device,
          spread=None, k: int | None = None) -> tuple[np.ndarray, dict[str, float], np.ndarray | None]:
    """Score the pool (or a seeded subset of ``loop.pool_subset``) once, with what the strategy
    ``requires``, and let it pick round ``r``'s batch of ``loop.query_size`` (capped by the budget
    and the pool).

    Args:
        s: the run's settings.
        device, spread: where scoring runs (:mod:`alframe.scoring`).
        k: the batch size instead of ``loop.query_size`` (the initial set: :func:`initial_request`).

    Returns:
        ``([k] int64 pool indices, {"score_seconds", "query_seconds"}, [k] float acquisition
        scores or None)``; the batch is checked by :func:`check_query`; the scores
        (:meth:`~alframe.strategies.base.QueryStrategy.scores_of`) are shown to the person who labels.

    Raises:
        RuntimeError: the strategy broke its contract.
    """
    loop, rng, pool = s.loop, round_rng(s.seed, r), state.pool_idx
    k = loop.query_size if k is None else int(k)
    k = k if loop.budget is None else min(k, loop.budget - state.n_labelled)
    k = min(k, len(pool))
    candidates = pool
    if loop.pool_subset is not None and loop.pool_subset < len(pool):
        candidates = np.sort(rng.choice(pool, size=loop.pool_subset, replace=False))
    score_seed = round_seed(s.seed, r, SCORE)
    torch.manual_seed(score_seed)  # MC-dropout masks, drawn per sample
    faults.point("score")
    t0 = time.perf_counter()
    outputs = compute_outputs(net, data.train, candidates, strategy.requires,
                              mc_samples=int(getattr(strategy, "mc_samples", 0) or 0),
                              batch_size=loop.eval_batch_size, device=device, spread=spread,
                              labelled_idx=state.labelled_idx,
                              # consistent MC dropout: one mask per MC sample for the whole pool
                              mask_seed=score_seed if strategy.consistent_dropout else None)
    outputs.n_labelled = state.n_labelled  # the labelled-set size, for budget-dependent strategies
    score_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    chosen = np.asarray(strategy.query(outputs, k, rng), dtype=np.int64)
    query_s = time.perf_counter() - t0
    check_query(chosen, candidates, state, k, strategy.name)
    scores = strategy.scores_of(outputs, chosen)
    # what the strategy chose by (e.g. ProbCover's radius and purity): logged with the timings
    return chosen, {"score_seconds": score_s, "query_seconds": query_s, **getattr(strategy, "last_info", {})}, scores
