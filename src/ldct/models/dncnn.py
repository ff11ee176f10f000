"""DnCNN (Zhang et al., IEEE TIP 26(7), 2017): residual learning of the noise.

17 layers of 3x3 convolutions, 64 channels: conv + ReLU, 15 x (conv + BN + ReLU), conv to the image
channels. The network predicts the noise; the output is ``x - noise`` (``residual=True``). Same-padded
convolutions, so any H, W works.
"""

from __future__ import annotations

import torch
from torch import nn

from ldct.models.common import resolve_out_channels
from ldct.models.registry import NETWORKS


@NETWORKS.register("dncnn")
class DnCNN(nn.Module):
    """forward: (B, in_channels, H, W) -> (B, out_channels, H, W), any H, W.

    Args:
        in_channels: image channels (1 for CT, 3 for RGB).
        out_channels: defaults to ``in_channels``.
        depth: total conv layers (17 in the paper for known-sigma Gaussian denoising).
        width: feature channels (64).
        batch_norm: BN in the middle layers (as in the paper).
        residual: predict the noise and return ``x - noise``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int | None = None,
        depth: int = 17,
        width: int = 64,
        batch_norm: bool = True,
        residual: bool = True,
    ):
        super().__init__()
        if depth < 2:
            raise ValueError(f"dncnn: depth must be >= 2, got {depth}")
        out_channels = resolve_out_channels(in_channels, out_channels, residual, "dncnn")
        self.residual = residual
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(width, width, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(width, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x - y if self.residual else y
