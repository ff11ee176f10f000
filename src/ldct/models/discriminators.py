"""Discriminators / critics for the GAN methods. All take (B, in_channels, H, W) for any H, W >= 32.

- ``wgan_critic``: the WGAN-VGG critic (Yang et al. 2018): six 3x3 convs (64, 64, 128, 128, 256, 256;
  stride 1, 2, 1, 2, 1, 2) with leaky ReLU and **no normalisation** (the gradient penalty is per sample),
  then dense 1024 -> leaky ReLU -> dense 1 with a linear output. Returns (B, 1).
- ``srgan_discriminator``: the SRGAN discriminator (Ledig et al. 2017): eight 3x3 convs (64 ... 512,
  alternating stride 1/2) with batch norm (not on the first) and leaky ReLU, dense 1024 -> leaky ReLU ->
  dense 1. Returns logits (B, 1).
- ``patchgan``: the 70x70 PatchGAN of pix2pix/CycleGAN (Isola et al. 2017): 4x4 convs C64-C128-C256
  (stride 2) -C512 (stride 1) -> 1-channel map of logits, (B, 1, H', W'); each value judges a 70x70 patch.
  ``in_channels`` is 2C for pix2pix (input and output concatenated), C for CycleGAN.

The dense heads of the first two sit behind an adaptive average pool to ``pool_size`` x ``pool_size``,
so any patch size works (the published nets assume 64x64 or 96x96 inputs).
"""

from __future__ import annotations

import torch
from torch import nn

from ldct.models.registry import NETWORKS


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class _DenseHead(nn.Module):
    def __init__(self, channels: int, pool_size: int, hidden: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * pool_size * pool_size, hidden), _lrelu(), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x))


@NETWORKS.register("wgan_critic")
class WGANCritic(nn.Module):
    """forward: (B, in_channels, H, W) -> (B, 1) unbounded critic score (no batch norm)."""

    def __init__(self, *, in_channels: int = 1, channels: int = 64, pool_size: int = 4, hidden: int = 1024):
        super().__init__()
        widths = [channels, channels, 2 * channels, 2 * channels, 4 * channels, 4 * channels]
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c in enumerate(widths):
            layers += [nn.Conv2d(c_in, c, 3, stride=1 + i % 2, padding=1), _lrelu()]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = _DenseHead(c_in, pool_size, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@NETWORKS.register("srgan_discriminator")
class SRGANDiscriminator(nn.Module):
    """forward: (B, in_channels, H, W) -> (B, 1) logits (real > 0)."""

    def __init__(self, *, in_channels: int = 1, channels: int = 64, pool_size: int = 4, hidden: int = 1024):
        super().__init__()
        widths = [
            channels,
            channels,
            2 * channels,
            2 * channels,
            4 * channels,
            4 * channels,
            8 * channels,
            8 * channels,
        ]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1), _lrelu()]
        c_in = widths[0]
        for i, c in enumerate(widths[1:], start=1):
            stride = 2 if i % 2 == 1 else 1
            layers += [
                nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c),
                _lrelu(),
            ]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = _DenseHead(c_in, pool_size, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'instance' or 'none', not {kind!r}")


@NETWORKS.register("patchgan")
class PatchGAN(nn.Module):
    """forward: (B, in_channels, H, W) -> (B, 1, H', W') patch logits (H' = H/8 - 2 for num_layers=3).

    ``num_layers=3`` gives the 70x70 receptive field; ``norm`` is "batch" (pix2pix), "instance"
    (CycleGAN) or "none".
    """

    def __init__(self, *, in_channels: int = 1, channels: int = 64, num_layers: int = 3, norm: str = "batch"):
        super().__init__()
        bias = norm != "batch"  # batch norm's shift makes a conv bias redundant
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), _lrelu()]
        c_in = channels
        for i in range(1, num_layers + 1):
            c = channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(c_in, c, 4, stride=stride, padding=1, bias=bias), _norm(norm, c), _lrelu()]
            c_in = c
        layers.append(nn.Conv2d(c_in, 1, 4, stride=1, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
