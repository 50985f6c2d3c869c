"""The outputs contract between pool scoring and query strategies: :class:`ModelOutputs`.

Strategies import this module and nothing else of the scoring floor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

KNOWN_REQUIREMENTS = frozenset({"probs", "mc_probs", "embeddings", "labelled_embeddings"})


@dataclass
class ModelOutputs:
    """Model outputs over the candidate pool samples, row-aligned with ``idx``.

    Attributes:
        idx: ``[M] int64`` absolute indices of the scored (candidate) pool samples.
        probs: ``[M, C] float32`` or None.
        mc_probs: ``[M, T, C] float32`` or None.
        embeddings: ``[M, D] float32`` or None.
        labelled_embeddings: ``[L, D] float32`` or None.
        n_labelled: number of labelled samples (the budget spent) when the pool was scored, or
            None when not known; filled by the loop for every strategy (not a requirement).
    """

    idx: np.ndarray
    probs: torch.Tensor | None = None
    mc_probs: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None
    labelled_embeddings: torch.Tensor | None = None
    n_labelled: int | None = None

    def __len__(self) -> int:
        return len(self.idx)

    def require(self, name: str) -> torch.Tensor:
        """The field ``name``; raises ValueError naming it when it was not computed."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"model output {name!r} was not computed: add it to the strategy's `requires`")
        return value
