"""Batch-aware acquisition: BatchBALD and stochastic (power / softmax / softrank) acquisition.

- :class:`BatchBALD`: Kirsch, van Amersfoort & Gal 2019, "BatchBALD: Efficient and Diverse
  Batch Acquisition for Deep Bayesian Active Learning".
- :class:`PowerBALD`, :class:`PowerEntropy`: Kirsch, Farquhar, Atighehchian, Jesson,
  Branchaud-Charron & Gal 2023, "Stochastic Batch Acquisition: A Simple Baseline for Deep
  Active Learning" (TMLR).
"""

from __future__ import annotations

import numpy as np
import torch

from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.base import QueryStrategy, check_k, entropy, sorted_view, top_k
from alframe.strategies.bayesian import check_flag, check_mc_samples, mc_mutual_information


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A torch CPU generator seeded from the numpy generator (so one seed drives both)."""
    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))


class BatchBALD(QueryStrategy):
    """BatchBALD: greedily grow the batch that maximises the joint mutual information
    ``I[y_1..y_b; w] = H[y_1..y_b] - sum_i E_w H[y_i | w]`` between the batch's labels and the
    model parameters, estimated with T MC-dropout samples.

    Kirsch, van Amersfoort & Gal 2019. As in the paper (and its reference implementation),
    the joint entropy is exact while the number of label configurations of the already
    selected points, ``C^n``, is at most ``num_samples``; beyond that ``num_samples``
    configurations are drawn from the MC mixture (``num_samples / T`` per MC sample) and the
    joint entropy is an importance-sampled estimate, re-drawn at each greedy step. With a batch
    of size 1 BatchBALD is BALD.

    Reads ``mc_probs: [M, T, C]``; float64 throughout. Cost per greedy step:
    ``M * min(C^n, num_samples) * T * C`` multiply-adds, computed in candidate chunks whose
    intermediate ``[B, S, C]`` stays below ``chunk_elements`` numbers.

    Args:
        name: display name.
        mc_samples: T, MC-dropout passes per pool sample (>= 1).
        num_samples: most label configurations held for the joint entropy (>= 1); the paper's
            code uses 10,000 sampled configurations.
        chunk_elements: size budget (number of float64 values) of one intermediate block.
        consistent_dropout: score the pool with one dropout mask per MC sample shared by every
            point (default true, as the paper's code): the joint entropy is defined for labels
            under the same parameter sample w_t, so with per-point masks an exact copy of a
            chosen point looks informative.

    Raises:
        ValueError: a parameter out of range.
    """

    requires = frozenset({"mc_probs"})

    def __init__(self, name: str | None = None, mc_samples: int = 20, num_samples: int = 10000,
                 chunk_elements: int = 4_000_000, consistent_dropout: bool = True):
        super().__init__(name)
        self.mc_samples = check_mc_samples(mc_samples)
        self.consistent_dropout = check_flag(consistent_dropout, "strategy.consistent_dropout")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if int(chunk_elements) < 1:
            raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}")
        self.num_samples = int(num_samples)
        self.chunk_elements = int(chunk_elements)

    def query(self, outputs: ModelOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        k = check_k(k)
        idx, order = sorted_view(outputs)  # work in ascending-index order: ties -> smaller index
        p = outputs.require("mc_probs").double()[torch.as_tensor(order)]  # [M, T, C]
        m, t, c = p.shape
        k = min(k, m)
        gen = torch_generator(rng)
        cond = entropy(p).mean(dim=1)  # [M] E_w H[y_i | w]
        chosen: list[int] = []
        joint = torch.ones(1, t, dtype=torch.float64)  # [S, T]: p(config s | w_t)
        weights = None  # [S] 1 / q(config s) when configurations are sampled, else None (exact)
        offset = 0.0  # entropy correction for the per-configuration rescaling of sampled ``joint``
        taken = torch.zeros(m, dtype=torch.bool)
        for step in range(k):
            if step > 0:
                joint, weights, offset = self._joint(p[chosen], joint, weights, gen)
            h = self._joint_entropy_with(p, joint, weights) + offset  # [M] H[y_chosen, y_i]
            scores = h - cond - cond[chosen].sum()
            scores[taken] = -torch.inf
            best = int(torch.argmax(scores))  # first maximum = smallest absolute index
            chosen.append(best)
            taken[best] = True
        return idx[np.asarray(chosen, dtype=np.int64)]

    def joint_mutual_information(self, mc_probs: torch.Tensor, rng: np.random.Generator | None = None) -> float:
        """``I[y_1..y_n; w]`` (nats) of one given set of points, computed as :meth:`query` does
        (exact while ``C^(n-1) <= num_samples``, sampled configurations beyond).

        Args:
            mc_probs: ``[n, T, C]`` MC-dropout probabilities of the n points, n >= 1.
            rng: generator for sampled configurations (default: seed 0).
        """
        p = mc_probs.double()
        gen = torch_generator(rng if rng is not None else np.random.default_rng(0))
        joint, weights, offset = torch.ones(1, p.shape[1], dtype=torch.float64), None, 0.0
        for i in range(1, len(p)):
            joint, weights, offset = self._joint(p[:i], joint, weights, gen)
        h = float(self._joint_entropy_with(p[-1:], joint, weights)[0]) + offset
        return h - float(entropy(p).mean(dim=1).sum())

    def _joint(self, p_sel: torch.Tensor, joint: torch.Tensor, weights, gen):
        """Configurations of the selected points' labels: ``[S, T]`` probabilities under each
        MC sample, exact (all C^n configurations) or sampled (with 1/q importance weights).

        Sampled rows are rescaled by ``alpha_s = 1 / max_t p(config s | w_t)`` against underflow;
        since ``sum_c P(s, c) / q(s) = 1`` the entropy estimate then needs ``+ mean_s log alpha_s``,
        returned as the third value."""
        n, t, c = p_sel.shape
        if weights is None and c ** n <= self.num_samples:
            # exact: extend every configuration by every label of the newest point
            new = (joint[:, None, :] * p_sel[-1].T[None, :, :]).reshape(-1, t)
            return new, None, 0.0
        return self._sampled_joint(p_sel, gen)

    def _sampled_joint(self, p_sel: torch.Tensor, gen: torch.Generator):
        """``num_samples`` configurations drawn from the MC mixture (see :meth:`_joint`)."""
        n, t, c = p_sel.shape
        # S/T configurations from each MC sample's (independent) label distribution
        per_t = max(self.num_samples // t, 1)
        draws = torch.multinomial(p_sel.permute(1, 0, 2).reshape(t * n, c), per_t, replacement=True,
                                  generator=gen).reshape(t, n, per_t)  # labels y[t, i, s]
        labels = draws.permute(0, 2, 1).reshape(t * per_t, n)  # [S, n]
        # p(config s | w_t') = prod_i p_t'(y_si | x_i), as exp(sum log) to avoid underflow
        logp = torch.log(p_sel.permute(0, 2, 1))  # [n, C, T]
        ls = torch.zeros(t * per_t, t, dtype=torch.float64)
        for i in range(n):
            ls += logp[i][labels[:, i]]
        top = ls.max(dim=1, keepdim=True).values  # finite: each draw has p > 0 under its own w_t
        new = torch.exp(ls - top)
        q = new.mean(dim=1)  # (rescaled) mixture probability of each drawn configuration
        return new, 1.0 / q, float(-top.mean())

    def _joint_entropy_with(self, p: torch.Tensor, joint: torch.Tensor, weights) -> torch.Tensor:
        """``[M]`` joint entropy ``H[y_chosen, y_i]`` for every candidate i (exact sum over the
        configurations, or the importance-weighted estimate when ``weights`` is given)."""
        m, t, c = p.shape
        s = joint.shape[0]
        w = torch.ones(s, dtype=torch.float64) if weights is None else weights / s
        out = torch.empty(m, dtype=torch.float64)
        step = max(1, self.chunk_elements // max(s * c, 1))
        jt = joint / t
        for a in range(0, m, step):
            pb = p[a:a + step]
            b = pb.shape[0]
            # P(config, y_i = c) = (1/T) sum_t p(config | w_t) p_t(c | x_i): one [S, T] x [T, B*C] GEMM
            pj = torch.mm(jt, pb.permute(1, 0, 2).reshape(t, b * c))
            out[a:a + b] = -(w @ torch.special.xlogy(pj, pj)).reshape(b, c).sum(dim=1)
        return out

    def __repr__(self) -> str:
        return (f"BatchBALD(name={self.name!r}, mc_samples={self.mc_samples}, "
                f"num_samples={self.num_samples}, consistent_dropout={self.consistent_dropout})")


STOCHASTIC_MODES = ("power", "softmax", "softrank")


class _StochasticAcquisition(QueryStrategy):
    """Stochastic batch acquisition (Kirsch et al. 2023): sample the batch without replacement
    with probabilities ``~ s^beta`` (``power``), ``~ exp(beta * s)`` (``softmax``) or
    ``~ rank^-beta`` (``softrank``, rank 1 = highest score), via the Gumbel-top-k trick.
    ``beta`` is the coldness (1 / temperature): ``beta -> inf`` gives top-k, ``beta = 0``
    uniform random sampling.

    Args:
        name: display name.
        mode: one of ``power``, ``softmax``, ``softrank``.
        beta: coldness >= 0 (the paper's default is 1).

    Raises:
        ValueError: unknown ``mode`` or negative ``beta``.
    """

    def __init__(self, name: str | None = None, mode: str = "power", beta: float = 1.0):
        super().__init__(name)
        if mode not in STOCHASTIC_MODES:
            raise ValueError(f"mode must be one of {list(STOCHASTIC_MODES)}, got {mode!r}")
        if not np.isfinite(beta) or beta < 0:
            raise ValueError(f"beta (coldness, 1/temperature) must be a finite number >= 0, got {beta!r}")
        self.mode, self.beta = mode, float(beta)

    def base_scores(self, outputs: ModelOutputs) -> np.ndarray:
        """``[M] float64`` non-negative acquisition scores to sample from."""
        raise NotImplementedError

    def keys(self, scores: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gumbel-perturbed log-weights ``[M]``; their top k is a sample without replacement."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.mode == "power":
            logw = self.beta * np.log(np.maximum(scores, np.finfo(np.float64).tiny))
        elif self.mode == "softmax":
            logw = self.beta * scores
        else:  # softrank: rank 1 for the highest score, ties -> smaller index first
            rank = np.empty(len(scores))
            rank[np.lexsort((idx, -scores))] = np.arange(1, len(scores) + 1)
            logw = -self.beta * np.log(rank)
        return logw + rng.gumbel(size=len(scores))

    def query(self, outputs: ModelOutputs, k: int, rng: np.random.Generator) -> np.ndarray:
        k = check_k(k)
        idx = np.asarray(outputs.idx, dtype=np.int64)
        return top_k(self.keys(self.base_scores(outputs), idx, rng), idx, k)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, mode={self.mode!r}, beta={self.beta})"


class PowerBALD(_StochasticAcquisition):
    """PowerBALD (and SoftmaxBALD / SoftrankBALD via ``mode``): stochastic acquisition on BALD
    scores. Kirsch et al. 2023, "Stochastic Batch Acquisition"; BALD: Houlsby et al. 2011.

    Reads ``mc_probs: [M, T, C]``.

    Args:
        name: display name.
        mc_samples: T, MC-dropout passes per pool sample (>= 1).
        mode: ``power`` | ``softmax`` | ``softrank``.
        beta: coldness >= 0.
        consistent_dropout: one dropout mask per MC sample shared across the pool.
    """

    requires = frozenset({"mc_probs"})

    def __init__(self, name: str | None = None, mc_samples: int = 20, mode: str = "power", beta: float = 1.0,
                 consistent_dropout: bool = False):
        super().__init__(name, mode=mode, beta=beta)
        self.mc_samples = check_mc_samples(mc_samples)
        self.consistent_dropout = check_flag(consistent_dropout, "strategy.consistent_dropout")

    def base_scores(self, outputs: ModelOutputs) -> np.ndarray:
        return mc_mutual_information(outputs.require("mc_probs")).numpy()


class PowerEntropy(_StochasticAcquisition):
    """PowerEntropy (and Softmax/Softrank variants via ``mode``): stochastic acquisition on
    predictive entropy. Kirsch et al. 2023, "Stochastic Batch Acquisition".

    With ``mc_samples = 0`` (default) the entropy is that of one deterministic pass
    (reads ``probs: [M, C]``); with ``mc_samples = T >= 1`` it is the entropy of the
    MC-dropout-averaged prediction (reads ``mc_probs: [M, T, C]``).

    Args:
        name: display name.
        mc_samples: 0 or T >= 1.
        mode: ``power`` | ``softmax`` | ``softrank``.
        beta: coldness >= 0.
        consistent_dropout: one dropout mask per MC sample shared across the pool (T >= 1 only).
    """

    def __init__(self, name: str | None = None, mc_samples: int = 0, mode: str = "power", beta: float = 1.0,
                 consistent_dropout: bool = False):
        super().__init__(name, mode=mode, beta=beta)
        self.consistent_dropout = check_flag(consistent_dropout, "strategy.consistent_dropout")
        if mc_samples == 0:
            self.mc_samples = 0
            self.requires = frozenset({"probs"})
        else:
            self.mc_samples = check_mc_samples(mc_samples)
            self.requires = frozenset({"mc_probs"})

    def base_scores(self, outputs: ModelOutputs) -> np.ndarray:
        if self.mc_samples:
            return entropy(outputs.require("mc_probs").double().mean(dim=1)).numpy()
        return entropy(outputs.require("probs")).numpy()
