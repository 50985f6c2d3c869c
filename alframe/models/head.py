"""A classifier head on feature vectors: the network trained each round on frozen features
(``model=head`` with ``dataset=features``, ``model=frozen`` with a backbone)."""

from __future__ import annotations

import math

from torch import nn

from alframe.models.base import ALNet


class FeatureHead(ALNet):
    """Head-only network on feature vectors ``[B, D]``.

    Trunk: ``nn.Flatten`` (no parameters, no dropout: MC dropout samples the head alone, exactly).
    Head, ``hidden = 0`` (a linear probe): ``Dropout(dropout), Linear(D, C)``; its embedding
    (the input of the last Linear, :meth:`ALNet.embed`) is the feature vector itself.
    ``hidden = H > 0``: ``Linear(D, H), ReLU, Dropout(dropout), Linear(H, C)``; the embedding is
    the hidden layer ``[B, H]``.

    Args:
        num_classes: C.
        input_shape: ``(D,)``; any shape is flattened (D = its product).
        hidden: width of an optional hidden layer (0 = none).
        dropout: dropout before the classifier (0 = none; MC strategies need > 0).

    Raises:
        ValueError: ``hidden < 0`` or ``dropout`` outside ``[0, 1)``.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], hidden: int = 0, dropout: float = 0.5):
        if int(hidden) < 0 or not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"model.net.hidden={hidden} must be >= 0 and model.net.dropout={dropout} in [0, 1)")
        d = int(math.prod(input_shape))
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        if hidden:
            head = nn.Sequential(nn.Linear(d, int(hidden)), nn.ReLU(), *drop, nn.Linear(int(hidden), num_classes))
        else:
            head = nn.Sequential(*drop, nn.Linear(d, num_classes))
        super().__init__(nn.Flatten(), head)
