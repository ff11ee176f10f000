"""Small helpers shared by the networks: padding any (H, W) to a size multiple, cropping back, and the
optional per-stage feature modulation hook used by dose-conditioned encoders.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: A per-stage modulation ``(scale, shift)``, each (B, C, 1, 1), applied as ``x * (1 + scale) + shift``.
Modulation = tuple[torch.Tensor, torch.Tensor]


def pad_to_multiple(
    x: torch.Tensor, multiple: int, min_size: int = 1
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (B, C, H, W) at the bottom/right so H and W are multiples of ``multiple`` and >= ``min_size``.

    Reflect padding where the image is large enough (no artificial edge for the convolutions), else
    replicate. Returns the padded tensor and the original (H, W) for :func:`crop_to`.
    """
    h, w = x.shape[-2:]
    th = max(-(-h // multiple) * multiple, -(-min_size // multiple) * multiple)
    tw = max(-(-w // multiple) * multiple, -(-min_size // multiple) * multiple)
    ph, pw = th - h, tw - w
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop (B, C, H', W') to the top-left (B, C, H, W) given by ``size``."""
    return x[..., : size[0], : size[1]]


def modulate(x: torch.Tensor, mod: Modulation | None) -> torch.Tensor:
    """Apply an optional (scale, shift) modulation to (B, C, H, W) features: ``x * (1 + scale) + shift``."""
    if mod is None:
        return x
    scale, shift = mod
    return x * (1.0 + scale) + shift


def stage_mod(mods: Sequence[Modulation | None] | None, i: int) -> Modulation | None:
    """The i-th modulation of an optional list (None when no list is given)."""
    return None if mods is None else mods[i]


def check_multiple(x: torch.Tensor, multiple: int, who: str) -> None:
    """Raise ValueError unless H and W of (B, C, H, W) are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(
            f"{who}.encode needs H and W divisible by {multiple}, got {h}x{w}; "
            f"pad with ldct.models.common.pad_to_multiple (forward() does this itself)"
        )


def resolve_out_channels(in_channels: int, out_channels: int | None, residual: bool, who: str) -> int:
    """out_channels defaults to in_channels; a global residual needs them equal."""
    out = in_channels if out_channels is None else int(out_channels)
    if residual and out != in_channels:
        raise ValueError(
            f"{who}: a global residual needs out_channels == in_channels ({out} != {in_channels})"
        )
    return out
