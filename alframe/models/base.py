"""The network contract every alframe model follows.

A model is a deterministic ``trunk`` followed by a ``head`` (an ``nn.Sequential`` whose last
module is the ``nn.Linear`` classifier). Dropout belongs in the head where the architecture
allows it: MC-dropout scoring then runs the trunk once and samples only the head, which is
exact. Models with dropout inside the trunk are detected and sampled as a whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.FeatureAlphaDropout)


class ALNet(nn.Module):
    """Trunk + head network.

    Args:
        trunk: maps images ``[B, C, H, W]`` to features ``[B, F]`` (or any shape the head takes).
        head: ``nn.Sequential`` ending in ``nn.Linear(D, num_classes)``; ``head[:-1]`` gives
            the penultimate embedding ``[B, D]``.

    Raises:
        TypeError: ``head`` is not an ``nn.Sequential`` ending in ``nn.Linear``.
    """

    def __init__(self, trunk: nn.Module, head: nn.Sequential):
        super().__init__()
        if not isinstance(head, nn.Sequential) or not isinstance(head[-1], nn.Linear):
            raise TypeError("head must be an nn.Sequential whose last module is nn.Linear")
        self.trunk, self.head = trunk, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` for images ``[B, C_in, H, W]``."""
        return self.head(self.trunk(x))

    def embed_features(self, h: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding ``[B, D]`` from trunk features ``h``."""
        return self.head[:-1](h)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding ``[B, D]`` for images ``x`` (call in eval mode)."""
        return self.embed_features(self.trunk(x))

    @property
    def embedding_dim(self) -> int:
        """D, the size of the penultimate embedding."""
        return self.head[-1].in_features

    @property
    def num_classes(self) -> int:
        """C, the number of outputs."""
        return self.head[-1].out_features

    @property
    def trunk_is_deterministic(self) -> bool:
        """True when no dropout layer sits in the trunk (head-only MC sampling is exact)."""
        return not any(isinstance(m, DROPOUT_TYPES) for m in self.trunk.modules())

    @property
    def has_dropout(self) -> bool:
        """True when the network has a dropout layer with p > 0 (MC dropout is possible)."""
        return any(isinstance(m, DROPOUT_TYPES) and m.p > 0 for m in self.modules())


@contextlib.contextmanager
def mc_dropout(net: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with dropout layers sampling: BatchNorm keeps its running statistics.

    Restores every module's previous ``training`` flag on exit.
    """
    previous = {m: m.training for m in net.modules()}
    net.eval()
    for m in net.modules():
        if isinstance(m, DROPOUT_TYPES):
            m.train()
    try:
        yield net
    finally:
        for m, flag in previous.items():
            m.training = flag
