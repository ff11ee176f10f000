"""Convolutional autoencoder, the baseline (and distillation teacher) of the anatomy-aware LDCT project.

Encoder: conv blocks 1 -> 64 -> 128 -> 256 -> 512 -> 512 (each two conv3x3 + BN + ReLU), a 2x2 max-pool
between consecutive blocks (4 pools: the latent is (B, 512, H/16, W/16)). Decoder, mirrored: deconv blocks
(2x2 stride-2 transposed conv + BN + ReLU, then conv3x3 + BN + ReLU) 512 -> 512 -> 256 -> 128 -> 64, then
conv3x3 64 -> out + tanh (output in the network range [-1, 1]). No skip connections: everything the
decoder sees passes through the latent, which is what makes it a useful teacher representation.

``encode(x) -> z`` and ``decode(z) -> y`` are the two halves (inputs with H, W multiples of
:attr:`size_multiple`); ``forward`` pads any H, W and crops back. ``residual=True`` (not in the original)
replaces the tanh output by ``x + conv(features)``, which trains much faster as a denoiser.
"""

from __future__ import annotations

import itertools
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


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class EncoderBlock(nn.Sequential):
    """(B, cin, H, W) -> (B, cout, H, W): two conv3x3 + BN + ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))


class DeconvBlock(nn.Sequential):
    """(B, cin, H, W) -> (B, cout, 2H, 2W): transposed conv 2x2/2 + BN + ReLU, conv3x3 + BN + ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            *_conv_bn_relu(cout, cout),
        )


@NETWORKS.register("autoencoder")
class AutoEncoder(nn.Module):
    """forward: (B, in_channels, H, W) -> (B, out_channels, H, W), any H, W.

    Args:
        in_channels: image channels (1 for CT, 3 for RGB).
        out_channels: defaults to ``in_channels``.
        channels: encoder block widths, (64, 128, 256, 512, 512) as published; a max-pool sits between
            consecutive blocks, so the latent has ``channels[-1]`` channels at 1/2**(len-1) resolution.
        residual: output ``x + conv(features)`` instead of ``tanh(conv(features))``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int | None = None,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        residual: bool = False,
    ):
        super().__init__()
        chans = [int(c) for c in channels]
        if len(chans) < 2:
            raise ValueError(f"autoencoder: need at least 2 encoder blocks, got channels={chans}")
        out_channels = resolve_out_channels(in_channels, out_channels, residual, "autoencoder")
        self.residual = residual
        self.size_multiple = 2 ** (len(chans) - 1)
        #: channels of each encoder block output (the last is the latent)
        self.encoder_channels: list[int] = list(chans)
        self.latent_channels = chans[-1]
        cins = [in_channels] + chans[:-1]
        self.encoder = nn.ModuleList(EncoderBlock(a, b) for a, b in zip(cins, chans, strict=True))
        self.pool = nn.MaxPool2d(2)
        rev = chans[::-1]  # 512, 512, 256, 128, 64
        self.decoder = nn.ModuleList(DeconvBlock(a, b) for a, b in itertools.pairwise(rev))
        self.out_conv = nn.Conv2d(chans[0], out_channels, 3, padding=1)

    def encode(self, x: torch.Tensor, mods: Sequence[Modulation | None] | None = None) -> torch.Tensor:
        """(B, C, H, W), H and W multiples of ``size_multiple`` -> latent z (B, channels[-1], H/s, W/s).

        ``mods`` (optional): one (scale, shift) per encoder block, applied to its output."""
        check_multiple(x, self.size_multiple, "autoencoder")
        for i, block in enumerate(self.encoder):
            if i > 0:
                x = self.pool(x)
            x = modulate(block(x), stage_mod(mods, i))
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, channels[-1], h, w) -> (B, out_channels, h*s, w*s); tanh unless ``residual``."""
        for block in self.decoder:
            z = block(z)
        y = self.out_conv(z)
        return y if self.residual else torch.tanh(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xp, size = pad_to_multiple(x, self.size_multiple)
        y = crop_to(self.decode(self.encode(xp)), size)
        return x + y if self.residual else y
