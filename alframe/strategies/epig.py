"""Expected predictive information gain (EPIG): Bickford Smith, Kirsch, Farquhar, Gal, Foster &
Rainforth 2023, "Prediction-Oriented Bayesian Active Learning" (AISTATS).

``EPIG(x) = E_{x*}[ I(y; y* | x, x*) ] = E_{x*}[ KL( p(y, y*|x, x*) || p(y|x) p(y*|x*) ) ]``: how
much labelling ``x`` tells about the predictions at target inputs ``x*``, where BALD measures
what it tells about the parameters. With K parameter samples theta_k (MC dropout),
``p(y, y*|x, x*) = (1/K) sum_k p(y|x, theta_k) p(y*|x*, theta_k)`` and the marginals are the
MC averages, so ``I = H[y|x] + H[y*|x*] - H[y, y*|x, x*]`` (the authors' matmul estimator);
the joint of a block of candidates with every target is one ``[B C, K] x [K, N* C]`` product.
"""

from __future__ import annotations

import numpy as np
import torch

from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.base import QueryStrategy, check_k, entropy, sorted_view, top_k
from alframe.strategies.bayesian import check_flag, check_mc_samples


def _normalised(p: torch.Tensor) -> torch.Tensor:
    """float64 copy with every distribution summing to 1 (float32 softmax rows sum to 1 only up
    to ~1e-7, which would leave EPIG ~1e-7 away from 0 where the samples agree)."""
    p = p.double()
    return p / p.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)


def epig_scores(probs_pool: torch.Tensor, probs_targ: torch.Tensor, chunk_elements: int = 4_000_000) -> torch.Tensor:
    """EPIG of each candidate over a target set, in nats.

    Args:
        probs_pool: ``[M, K, C]`` class probabilities of the candidates under K parameter samples.
        probs_targ: ``[N*, K, C]`` those of the targets under the same K samples (same order).
        chunk_elements: most float64 numbers of one joint block ``[B, C, N*, C]``.

    Returns:
        ``[M] float64``, in ``[0, log C]`` (rounding below 0 clipped); 0 where all K samples
        agree on the candidate or on every target.

    Raises:
        ValueError: shapes that do not match, or ``N* = 0``.
    """
    if probs_pool.ndim != 3 or probs_targ.ndim != 3 or probs_pool.shape[1:] != probs_targ.shape[1:]:
        raise ValueError(f"EPIG needs [M, K, C] candidates and [N*, K, C] targets with the same K and C, got "
                         f"{tuple(probs_pool.shape)} and {tuple(probs_targ.shape)}")
    if probs_targ.shape[0] == 0:
        raise ValueError("EPIG needs at least one target input")
    p, q = _normalised(probs_pool), _normalised(probs_targ)
    m, k, c = p.shape
    n_t = q.shape[0]
    h_pool = entropy(p.mean(dim=1))  # [M] H[y|x]
    h_targ = entropy(q.mean(dim=1)).mean()  # E_{x*} H[y*|x*]
    qt = q.permute(1, 0, 2).reshape(k, n_t * c) / k  # [K, N* C]
    h_joint = torch.empty(m, dtype=torch.float64)
    step = max(1, int(chunk_elements) // (c * c * n_t))
    for a in range(0, m, step):
        pb = p[a:a + step]
        b = pb.shape[0]
        joint = torch.mm(pb.permute(0, 2, 1).reshape(b * c, k), qt)  # [B C, N* C]: p(y, y*|x, x*)
        h = -torch.special.xlogy(joint, joint).reshape(b, c, n_t, c).sum(dim=(1, 3))  # [B, N*]
        h_joint[a:a + b] = h.mean(dim=1)
    return (h_pool + h_targ - h_joint).clamp_min(0.0)


class EPIG(QueryStrategy):
    """EPIG: query the candidates with the largest expected predictive information gain about a
    target set drawn from the candidates (the pool, or ``loop.pool_subset``'s subset).

    Bickford Smith, Kirsch, Farquhar, Gal, Foster & Rainforth 2023, "Prediction-Oriented
    Bayesian Active Learning" (AISTATS); the authors' code (github.com/fbickfordsmith/epig) and
    Baal implement the same estimator. Each query draws ``n_target`` distinct target inputs
    uniformly from the candidates with the query's ``rng`` (the paper's ``p*(x*)`` = the pool
    distribution) and scores every candidate with :func:`epig_scores`; the batch is the top
    ``k`` (ties: the smaller index), as the authors' code does for batches without stochastic
    acquisition.

    Consistent MC dropout is required: the estimator pairs ``p(y|x, theta_k)`` with
    ``p(y*|x*, theta_k)`` under the same parameter sample theta_k, which holds only when one
    dropout mask per MC sample is shared by the whole scored pool (``consistent_dropout``, as
    the authors score candidates and targets in one pass under one mask). With masks drawn
    per point the candidate's and the target's samples are independent and the estimate is
    only noise around 0, so ``consistent_dropout=false`` (here or as ``loop.consistent_dropout``)
    is refused.

    Reads ``mc_probs: [M, T, C]``. Time O(M N* T C^2) for the products and O(M N* C^2) log
    evaluations, in candidate blocks of at most ``chunk_elements`` float64 numbers; memory
    O(M T C + chunk_elements). After a query, ``last_info`` holds ``epig_max`` (nats).

    Args:
        name: display name.
        mc_samples: T, MC-dropout passes per pool sample (>= 1).
        n_target: target inputs drawn per query (>= 1; the authors' default 100); fewer when
            there are fewer candidates.
        chunk_elements: size budget of one joint block.
        consistent_dropout: must be true.

    Raises:
        ValueError: a parameter out of range or ``consistent_dropout`` false; ``k < 1`` in
            :meth:`query`.
    """

    requires = frozenset({"mc_probs"})

    def __init__(self, name: str | None = None, mc_samples: int = 20, n_target: int = 100,
                 chunk_elements: int = 4_000_000, consistent_dropout: bool = True):
        super().__init__(name)
        self.mc_samples = check_mc_samples(mc_samples)
        if isinstance(n_target, bool) or int(n_target) != n_target or int(n_target) < 1:
            raise ValueError(f"n_target (target inputs per query) must be an integer >= 1, got {n_target!r}")
        if int(chunk_elements) < 1:
            raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements!r}")
        self.n_target, self.chunk_elements = int(n_target), int(chunk_elements)
        self.consistent_dropout = consistent_dropout
        self.last_info: dict[str, float] = {}

    @property
    def consistent_dropout(self) -> bool:
        return True

    @consistent_dropout.setter
    def consistent_dropout(self, value: bool) -> None:
        if not check_flag(value, "strategy.consistent_dropout"):
            raise ValueError("strategy=epig needs consistent MC dropout (one mask per MC sample for the whole pool): "
                             "its estimator pairs candidates and targets under the same parameter sample; "
                             "consistent_dropout=false (or loop.consistent_dropout=false) is not allowed")

    def query(self, outputs: ModelOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        k = check_k(k)
        self.last_info = {}
        idx, order = sorted_view(outputs)
        p = outputs.require("mc_probs")[torch.as_tensor(order)]
        targets = np.sort(rng.choice(len(idx), size=min(self.n_target, len(idx)), replace=False))
        scores = epig_scores(p, p[torch.as_tensor(targets)], self.chunk_elements).numpy()
        self.last_info = {"epig_max": float(scores.max())} if len(scores) else {}
        return top_k(scores, idx, k)

    def __repr__(self) -> str:
        return f"EPIG(name={self.name!r}, mc_samples={self.mc_samples}, n_target={self.n_target})"
