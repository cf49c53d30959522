"""The regression head shared by every model: optional FDS, then one linear layer.

Every model in this repository is ``encoder -> features z -> RegressionHead``; the head is where
FDS sits (SPEC 4 and 7), so the rule about which features RankSim sees is written once:

* ``fds.faithful = False`` (library default): the regressor sees the smoothed features, RankSim
  and the statistics pass see the encoder's own ``z``.
* ``fds.faithful = True`` (paper-table configs): as in the authors' code, whose smoothing writes
  into ``z`` in place, RankSim and the statistics pass see the smoothed features too (quirk 2).
"""

from __future__ import annotations

import torch
from torch import nn


class RegressionHead(nn.Module):
    """``(z, targets, epoch) -> (prediction (B, 1), features (B, D))``.

    Smoothing happens only in training mode and only when ``targets`` and ``epoch`` are given
    (FDS needs the label of each sample); evaluation never smooths.
    """

    def __init__(self, in_features: int, fds: nn.Module | None = None):
        super().__init__()
        self.fds = fds
        self.linear = nn.Linear(in_features, 1)

    def forward(self, z: torch.Tensor, targets: torch.Tensor | None = None,
                epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if z.dim() != 2:
            raise ValueError(f"RegressionHead expects features of shape (B, D), got {tuple(z.shape)}")
        smoothed = z
        if self.fds is not None and self.training and targets is not None and epoch is not None:
            smoothed = self.fds.smooth(z, targets, epoch)
        returned = smoothed if (self.fds is not None and self.fds.faithful) else z
        return self.linear(smoothed), returned
