"""Query strategies (acquisition functions). Hydra's ``_target_`` is the registry:
``conf/strategy/<name>.yaml`` points at one class here."""

from alframe.strategies.base import QueryStrategy, ScoreStrategy, top_k
from alframe.strategies.batch import BatchBALD, PowerBALD, PowerEntropy
from alframe.strategies.bayesian import BALD, MCEntropy, MeanSTD, VariationRatios
from alframe.strategies.coverage import ProbCover
from alframe.strategies.diversity import BADGE, CoreSet, KMeansSampling, TypiClust
from alframe.strategies.epig import EPIG
from alframe.strategies.hybrid import ClusterMargin
from alframe.strategies.switch import BudgetSwitch
from alframe.strategies.uncertainty import Entropy, LeastConfidence, Margin, RandomSampling

__all__ = ["QueryStrategy", "ScoreStrategy", "top_k", "RandomSampling", "LeastConfidence", "Margin", "Entropy",
           "BALD", "VariationRatios", "MeanSTD", "MCEntropy", "BatchBALD", "PowerBALD", "PowerEntropy",
           "CoreSet", "KMeansSampling", "BADGE", "TypiClust", "ClusterMargin", "ProbCover", "EPIG",
           "BudgetSwitch"]
