"""Downsampling for super-resolution pairs (low-dose, low-resolution input; normal-dose target)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ldct.errors import LdctError

DOWNSAMPLE_METHODS = ("area", "bicubic")


def downsample(x: np.ndarray, factor: int, method: str = "area", *, channels_last: bool = False) -> np.ndarray:
    """Shrink the last two axes (or the two before the channel axis) by an integer ``factor``.

    Args:
        x: (H, W), (Z, H, W) or, with ``channels_last``, (..., H, W, C).
        factor: 1 (copy), 2 or 4 (any integer >= 1 works). H and W are cropped to multiples of it
            (bottom / right), so a 64x64 patch becomes 16x16 at x4.
        method: ``"area"`` (mean of factor x factor blocks) or ``"bicubic"`` (antialiased bicubic,
            as in the SRGAN/BasicSR recipes).
    Returns:
        float32 array with H // factor, W // factor.
    """
    if factor < 1 or int(factor) != factor:
        raise LdctError(f"downsample factor must be a positive integer, got {factor}")
    if method not in DOWNSAMPLE_METHODS:
        raise LdctError(f"unknown downsample method {method!r}; known: {', '.join(DOWNSAMPLE_METHODS)}")
    arr = np.asarray(x, dtype=np.float32)
    if factor == 1:
        return arr.copy()
    if channels_last:
        arr = np.moveaxis(arr, -1, -3)
    lead, (h, w) = arr.shape[:-2], arr.shape[-2:]
    if h < factor or w < factor:
        raise LdctError(f"image {h}x{w} is too small to downsample by {factor}")
    h2, w2 = h // factor, w // factor
    t = torch.from_numpy(np.ascontiguousarray(arr[..., : h2 * factor, : w2 * factor])).reshape(-1, 1, h2 * factor,
                                                                                               w2 * factor)
    if method == "area":
        out = F.avg_pool2d(t, factor)
    else:
        out = F.interpolate(t, size=(h2, w2), mode="bicubic", align_corners=False, antialias=True)
    out = out.reshape(*lead, h2, w2).numpy()
    return np.moveaxis(out, -3, -1) if channels_last else out
