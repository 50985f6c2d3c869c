"""MC-dropout acquisition functions (Gal, Islam & Ghahramani 2017, "Deep Bayesian Active
Learning with Image Data").

Each reads ``mc_probs: [M, T, C]``, the softmax of T stochastic forward passes with dropout
sampling (BatchNorm in eval mode), computed by :func:`alframe.scoring.pool.compute_outputs` with
``T = strategy.mc_samples``. All arithmetic is float64 with ``0 log 0 = 0``, so probabilities
of exactly 0 or 1 give finite scores in float32 and float64 inputs alike.
"""

from __future__ import annotations

import numpy as np
import torch

from alframe.scoring.outputs import ModelOutputs
from alframe.strategies.base import ScoreStrategy, entropy


def check_flag(value, key: str) -> bool:
    """A boolean option (e.g. ``consistent_dropout``).

    Raises:
        ValueError: ``value`` is not true/false (names ``key``).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{key}={value!r} is invalid: must be true or false")
    return bool(value)


def check_mc_samples(mc_samples: int) -> int:
    """Validate T, the number of MC-dropout samples.

    Raises:
        ValueError: ``mc_samples`` is not an integer >= 1.
    """
    if isinstance(mc_samples, bool) or int(mc_samples) != mc_samples or int(mc_samples) < 1:
        raise ValueError(f"mc_samples (T, the number of MC-dropout passes) must be an integer >= 1, "
                         f"got {mc_samples!r}")
    return int(mc_samples)


def mc_mutual_information(mc_probs: torch.Tensor) -> torch.Tensor:
    """BALD mutual information ``I[y; w | x] = H[E_w p(y|x,w)] - E_w H[p(y|x,w)]`` (nats).

    Args:
        mc_probs: ``[M, T, C]`` class probabilities of T MC-dropout samples.

    Returns:
        ``[M] float64``, >= 0 (rounding below zero is clipped to 0); exactly 0 when all T
        samples agree up to float rounding.
    """
    p = mc_probs.double()
    mi = entropy(p.mean(dim=1)) - entropy(p).mean(dim=1)
    return mi.clamp_min(0.0)


class _MCStrategy(ScoreStrategy):
    """Shared constructor of the MC-dropout strategies.

    Args:
        name: display name.
        mc_samples: T, the number of stochastic forward passes per pool sample (>= 1).
        consistent_dropout: share one dropout mask per MC sample across the pool (seeded by the
            round; BatchBALD's consistent MC dropout) instead of fresh masks per point.

    Raises:
        ValueError: ``mc_samples`` < 1 or not an integer; ``consistent_dropout`` not a boolean.
    """

    requires = frozenset({"mc_probs"})

    def __init__(self, name: str | None = None, mc_samples: int = 20, consistent_dropout: bool = False):
        super().__init__(name)
        self.mc_samples = check_mc_samples(mc_samples)
        self.consistent_dropout = check_flag(consistent_dropout, "strategy.consistent_dropout")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, mc_samples={self.mc_samples}, "
                f"consistent_dropout={self.consistent_dropout})")


class BALD(_MCStrategy):
    """Bayesian Active Learning by Disagreement: score = mutual information between the label
    and the model parameters, estimated with MC dropout.

    Houlsby, Huszár, Ghahramani & Lengyel 2011, "Bayesian Active Learning for Classification
    and Preference Learning"; with MC dropout: Gal, Islam & Ghahramani 2017.

    Reads ``mc_probs: [M, T, C]``. Score ``[M]`` in nats, in ``[0, log C]``.
    """

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        return mc_mutual_information(outputs.require("mc_probs")).numpy()


class VariationRatios(_MCStrategy):
    """Variation ratios: score = 1 - (number of MC samples voting for the modal class) / T.

    Freeman 1965, "Elementary Applied Statistics"; as an acquisition function: Gal, Islam &
    Ghahramani 2017. Reads ``mc_probs: [M, T, C]``; score ``[M]`` in ``[0, 1 - 1/C]``. When a
    sample's probabilities tie, the vote goes to the smallest class index.
    """

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        p = outputs.require("mc_probs")
        m, t, c = p.shape
        votes = p.argmax(dim=2)  # [M, T]
        counts = torch.zeros(m, c, dtype=torch.float64).scatter_add_(
            1, votes, torch.ones(m, t, dtype=torch.float64))
        return (1.0 - counts.max(dim=1).values / t).numpy()


class MeanSTD(_MCStrategy):
    """Mean standard deviation: score = mean over classes of the standard deviation of
    ``p(y=c|x,w)`` across the T MC samples, ``sigma_c = sqrt(E[p_c^2] - E[p_c]^2)``.

    Kampffmeyer et al. 2016, "Semantic Segmentation of Small Objects ..."; Kendall et al. 2015;
    as compared in Gal, Islam & Ghahramani 2017. Reads ``mc_probs: [M, T, C]``; score ``[M]``
    in ``[0, 0.5]``.
    """

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        p = outputs.require("mc_probs").double()
        var = (p.square().mean(dim=1) - p.mean(dim=1).square()).clamp_min(0.0)
        return var.sqrt().mean(dim=1).numpy()


class MCEntropy(_MCStrategy):
    """Max entropy of the MC-averaged prediction: score = ``H[(1/T) sum_t p(y|x,w_t)]`` (nats).

    Shannon 1948; with MC dropout: Gal, Islam & Ghahramani 2017 ("Max Entropy"). Reads
    ``mc_probs: [M, T, C]``; score ``[M]`` in ``[0, log C]``.
    """

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        return entropy(outputs.require("mc_probs").double().mean(dim=1)).numpy()
