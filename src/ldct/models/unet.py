"""U-Net (Ronneberger et al., MICCAI 2015) for image-to-image denoising.

``depth`` down-sampling stages (2x2 max-pool) between double 3x3 conv blocks whose width doubles per
stage from ``width`` (64 in the paper), a bottleneck, and a mirrored decoder (2x2 transposed conv, concat
with the skip, double conv). Same-padded convolutions; the input is padded to a multiple of 2**depth and
the output cropped back, so any H, W works. ``residual=True`` (default) adds the input to the output: the
net predicts the negative noise, which trains much faster for denoising.

The halves are reusable: ``encode(x) -> (latent, skips)`` and ``decode(latent, skips) -> y`` on inputs
whose H, W are multiples of :attr:`size_multiple`; ``encode`` accepts an optional per-stage modulation
list (dose conditioning), one ``(scale, shift)`` per entry of :attr:`encoder_channels`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ldct.models.common import (
    Modulation,
    check_multiple,
    crop_to,
    modulate,
    pad_to_multiple,
    resolve_out_channels,
    stage_mod,
)
from ldct.models.registry import NETWORKS


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; use batch, instance or none")


class DoubleConv(nn.Sequential):
    """(conv3x3 -> norm -> ReLU) x 2: (B, cin, H, W) -> (B, cout, H, W)."""

    def __init__(self, cin: int, cout: int, norm: str = "batch"):
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
        )


@NETWORKS.register("unet")
class UNet(nn.Module):
    """forward: (B, in_channels, H, W) -> (B, out_channels, H, W), any H, W.

    Args:
        in_channels: image channels (1 for CT, 3 for RGB).
        out_channels: defaults to ``in_channels``.
        width: channels of the first stage (64 in the paper); stage i has ``width * 2**i``.
        depth: number of 2x down-samplings (4 in the paper).
        norm: "batch" (default), "instance" or "none".
        residual: add the input to the output (global residual).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int | None = None,
        width: int = 64,
        depth: int = 4,
        norm: str = "batch",
        residual: bool = True,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"unet: depth must be >= 1, got {depth}")
        out_channels = resolve_out_channels(in_channels, out_channels, residual, "unet")
        self.residual = residual
        self.depth = depth
        self.size_multiple = 2**depth
        chans = [width * 2**i for i in range(depth + 1)]
        #: channels of each encoder stage output (the skips, then the bottleneck = latent)
        self.encoder_channels: list[int] = list(chans)
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans[:-1]:
            self.down.append(DoubleConv(cin, c, norm))
            cin = c
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(chans[-2], chans[-1], norm)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for i in reversed(range(depth)):
            self.up.append(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2))
            self.up_conv.append(DoubleConv(2 * chans[i], chans[i], norm))
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    def encode(
        self, x: torch.Tensor, mods: Sequence[Modulation | None] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, C, H, W), H and W multiples of ``size_multiple`` -> latent (B, width*2**depth, H/2**depth,
        W/2**depth) and the ``depth`` skip tensors (finest first)."""
        check_multiple(x, self.size_multiple, "unet")
        skips = []
        for i, block in enumerate(self.down):
            x = modulate(block(x), stage_mod(mods, i))
            skips.append(x)
            x = self.pool(x)
        latent = modulate(self.bottleneck(x), stage_mod(mods, self.depth))
        return latent, skips

    def decode(self, latent: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Latent and skips from :meth:`encode` -> (B, out_channels, H, W) (no global residual)."""
        x = latent
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips), strict=True):
            x = conv(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, size = pad_to_multiple(x, self.size_multiple)
        y = crop_to(self.decode(*self.encode(xp)), size)
        return x + y if self.residual else y
