"""Residual denoising network: head conv, residual blocks, tail conv, global residual.

EDSR-style body (Lim et al., 2017) at full resolution: conv3x3 (in -> width), ``num_blocks`` residual
blocks (conv3x3 -> [BN] -> ReLU -> conv3x3 -> [BN], scaled by ``res_scale``, plus the block input), a
conv3x3 after the blocks with a long skip from the head, then conv3x3 (width -> out). The input is added to
the output (global residual). No down-sampling, so any H, W works without padding.

Halves: ``encode(x) -> (latent, [])`` (head + blocks; optional per-block modulation, one per entry of
:attr:`encoder_channels`) and ``decode(latent, skips) -> y`` (tail conv, no global residual).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ldct.models.common import Modulation, modulate, resolve_out_channels, stage_mod
from ldct.models.registry import NETWORKS


class ResBlock(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): ``x + res_scale * body(x)``."""

    def __init__(self, channels: int, batch_norm: bool = False, res_scale: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels))
        layers += [nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(channels))
        self.body = nn.Sequential(*layers)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


@NETWORKS.register("resnet")
class ResNet(nn.Module):
    """forward: (B, in_channels, H, W) -> (B, out_channels, H, W), any H, W.

    Args:
        in_channels: image channels (1 for CT, 3 for RGB).
        out_channels: defaults to ``in_channels``.
        width: feature channels (64).
        num_blocks: residual blocks (16).
        batch_norm: BN inside the blocks (off by default, as in EDSR).
        res_scale: scale of each block's residual branch (1.0; 0.1 helps very wide/deep nets).
        residual: add the input to the output (global residual).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int | None = None,
        width: int = 64,
        num_blocks: int = 16,
        batch_norm: bool = False,
        res_scale: float = 1.0,
        residual: bool = True,
    ):
        super().__init__()
        out_channels = resolve_out_channels(in_channels, out_channels, residual, "resnet")
        self.residual = residual
        self.size_multiple = 1
        self.encoder_channels: list[int] = [width] * (num_blocks + 1)
        self.head = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(width, batch_norm, res_scale) for _ in range(num_blocks))
        self.body_end = nn.Conv2d(width, width, 3, padding=1)
        self.tail = nn.Conv2d(width, out_channels, 3, padding=1)

    def encode(
        self, x: torch.Tensor, mods: Sequence[Modulation | None] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, C, H, W) -> latent (B, width, H, W) and an empty skip list.

        ``mods`` (optional): one modulation for the head output, then one per residual block."""
        h = modulate(self.head(x), stage_mod(mods, 0))
        y = h
        for i, block in enumerate(self.blocks):
            y = modulate(block(y), stage_mod(mods, i + 1))
        return h + self.body_end(y), []

    def decode(self, latent: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Latent (B, width, H, W) -> (B, out_channels, H, W) (no global residual)."""
        return self.tail(latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.decode(*self.encode(x))
        return x + y if self.residual else y
