"""SRResNet (Ledig et al., CVPR 2017), the SRGAN generator.

conv 9x9 + PReLU -> ``num_blocks`` residual blocks (conv3-BN-PReLU-conv3-BN + skip) -> conv3-BN + long skip
-> log2(scale) pixel-shuffle x2 stages (conv3 to 4C, PixelShuffle(2), PReLU) -> conv 9x9 to the output.
The published net ends in tanh; ldct's range is [-1, 1] but outputs are left linear so the HU window
edges are reachable. ``residual=True`` adds the bicubic upsampling of the input to the output (the net
then learns the detail and the noise removal only; the last layer starts at zero, so the untrained net
is bicubic upsampling), which converges much faster on short CPU runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldct.models.registry import NETWORKS


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleX2(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


@NETWORKS.register("srresnet")
class SRResNet(nn.Module):
    """forward: (B, in_channels, h, w) -> (B, out_channels, h * scale, w * scale); scale in {1, 2, 4, 8}."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int | None = None,
        channels: int = 64,
        num_blocks: int = 16,
        scale: int = 4,
        residual: bool = False,
    ):
        super().__init__()
        if scale not in (1, 2, 4, 8):
            raise ValueError(f"scale must be 1, 2, 4 or 8, not {scale}")
        out_channels = in_channels if out_channels is None else out_channels
        if residual and in_channels != out_channels:
            raise ValueError("residual=True needs in_channels == out_channels")
        self.scale = scale
        self.residual = residual
        self.head = nn.Sequential(nn.Conv2d(in_channels, channels, 9, padding=4), nn.PReLU(channels))
        self.blocks = nn.Sequential(*[ResidualBlock(channels) for _ in range(num_blocks)])
        self.fuse = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        self.upsample = nn.Sequential(*[UpsampleX2(channels) for _ in range(scale.bit_length() - 1)])
        self.tail = nn.Conv2d(channels, out_channels, 9, padding=4)
        if residual:  # start as bicubic upsampling
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        h = h + self.fuse(self.blocks(h))
        y = self.tail(self.upsample(h))
        if self.residual:
            base = x if self.scale == 1 else F.interpolate(x, scale_factor=self.scale, mode="bicubic")
            y = y + base
        return y
