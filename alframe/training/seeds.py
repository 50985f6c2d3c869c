"""Seeds of round ``r``: all randomness of a round comes from ``(seed, r)``, so a resumed run
repeats an uninterrupted one exactly."""

from __future__ import annotations

import numpy as np

#: torch random streams of one round: training (init, order, dropout) and MC-dropout scoring
TRAIN, SCORE = 0, 1


def round_seed(seed: int, round: int, stream: int = TRAIN) -> int:
    """The torch seed of ``stream`` in round ``round`` of a run with ``seed`` (an int in
    [0, 2^31 - 1)); scoring has its own stream, so a model reloaded on resume draws the same
    MC-dropout masks as the one still in memory."""
    return (int(seed) * 1_000_003 + int(round) * 7919 + int(stream) * 104_729) % (2**31 - 1)


def round_rng(seed: int, round: int) -> np.random.Generator:
    """The NumPy generator of round ``round`` (pool subset, strategy draws, initial set)."""
    return np.random.default_rng([int(seed), int(round)])
