"""WGAN-VGG generator (Yang et al., IEEE TMI 2018): eight 3x3 conv layers of 32 channels with ReLU.

No pooling or striding, so any H x W works and the output has the input's size. The published net ends
with a ReLU (images in [0, 1]); ldct works in [-1, 1], so the last layer is linear. ``residual=True``
adds the input to the output (the net predicts the noise) and zero-initialises the last layer, so the
untrained net is the identity; this trains much faster on short runs.
"""

from __future__ import annotations

import torch
from torch import nn

from ldct.models.registry import NETWORKS


@NETWORKS.register("wgan_generator")
class WGANGenerator(nn.Module):
    """Plain CNN: ``depth`` conv3x3 layers, ``channels`` wide, ReLU between them.

    forward: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int | None = None,
        channels: int = 32,
        depth: int = 8,
        residual: bool = False,
    ):
        super().__init__()
        if depth < 2:
            raise ValueError("depth must be at least 2")
        out_channels = in_channels if out_channels is None else out_channels
        if residual and in_channels != out_channels:
            raise ValueError("residual=True needs in_channels == out_channels")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(channels, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.residual = residual
        if residual:  # start as the identity: training only ever improves on the input
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y
