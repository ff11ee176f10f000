"""Volume inference: HU slices in, denoised HU slices out, streamed in slice batches.

The network only ever sees HU clipped to its window and mapped to [-1, 1] (``ldct.hu``). Its output is
applied as a *correction* to the unclipped input::

    out = in + (net_to_hu(f(hu_to_net(in))) - clip(in, window))

Inside the window this is exactly the network's output; outside it (bone, contrast, metal above the
window's top, air/padding below its bottom) the part of the input the network never saw is added back,
so a 2500 HU metal implant stays 2500 HU (plus the network's local correction) instead of being clipped to
the window's top. For super-resolution models (``scale > 1``) the excess ``in - clip(in)`` is upsampled
bilinearly and added to the network's output.

Only one batch of slices is on the device at a time: :func:`iter_predict` yields batches as they finish,
:func:`predict_volume` fills one float32 output array from them. A network output with a NaN or
infinite value anywhere is refused (:func:`check_finite_output`): broken weights never become a volume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ldct.errors import LdctError
from ldct.hu import Window, hu_to_net, net_to_hu
from ldct.infer.tiling import check_tiling, tiled_forward

PRECISIONS = ("32", "bf16", "16")
Progress = Callable[[int, int], Any]


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a torch device (LdctError when CUDA is asked for but absent)."""
    s = (spec or "auto").strip().lower()
    if s == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise LdctError(f"--device {spec}: no CUDA GPU is available (torch {torch.__version__}, {build})")
        return torch.device(s)
    raise LdctError(f"--device {spec!r}: use auto, cpu or cuda")


def _autocast(device: torch.device, precision: str):
    if precision not in PRECISIONS:
        raise LdctError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if device.type != "cuda" or precision == "32":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def check_finite_output(y: torch.Tensor, source: str | Path | None, what: str) -> None:
    """Raise :class:`LdctError` (naming the model ``source``) when the network output ``y`` has a NaN or
    infinite value: the model's weights are broken or do not suit this input, and nothing is written."""
    if not bool(torch.isfinite(y).all()):
        bad = int((~torch.isfinite(y)).sum())
        raise LdctError(f"the model's output for {what} has {bad} NaN or infinite values (broken weights, or a "
                        "model that does not suit this input); nothing was written", source)


def _call(module: nn.Module, x: torch.Tensor, dose: torch.Tensor | None) -> torch.Tensor:
    return module(x) if dose is None else module(x, dose)


def iter_predict(
    module: nn.Module,
    hu: np.ndarray,
    *,
    window: Window,
    dose: float | None = None,
    batch_size: int = 4,
    tile: int | None = None,
    overlap: int = 32,
    device: str | torch.device = "cpu",
    precision: str = "32",
    scale: int = 1,
    channels: int = 1,
    source: str | Path | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Denoise ``hu`` batch by batch.

    Args:
        module: ``forward(x, dose=None)`` network (B, C, H, W) -> (B, C', H*scale, W*scale), network range.
            Plain ``forward(x)`` networks work when ``dose`` is None.
        hu: (z, y, x) or (y, x) HU array (a numpy memmap works: slices are read batch by batch).
        window: the network's HU window (``hu_to_net``/``net_to_hu``).
        dose: dose fraction in (0, 1] for dose-conditioned networks, passed as a (B,) tensor.
        batch_size: slices per forward pass; tile/overlap: tiled inference (see ``ldct.infer.tiling``).
        device: torch device or 'auto'/'cpu'/'cuda'; precision: '32', 'bf16' or '16' (autocast, CUDA only).
        scale: the network's output/input size ratio.
        channels: input channels of the network: 1, or an odd number of neighbouring slices (2.5D, edge
            slices repeated at the volume's ends); the output's centre channel is the denoised slice.
        source: the model's file or folder, named in the error when its output is not finite.
    Yields:
        ``(start, out)``: index of the first slice of the batch and (b, y*scale, x*scale) float32 HU.
    """
    if batch_size < 1:
        raise LdctError(f"--batch-size {batch_size}: must be at least 1")
    if tile is not None:
        check_tiling(tile, overlap)
    if channels < 1 or channels % 2 == 0:
        raise ValueError(f"channels must be 1 or an odd number of neighbouring slices, got {channels}")
    arr = hu[None] if hu.ndim == 2 else hu
    if arr.ndim != 3:
        raise LdctError(f"expected a (z, y, x) HU volume, got shape {tuple(hu.shape)}")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    module = module.to(dev).eval()
    z = arr.shape[0]
    with torch.inference_mode():
        for start in range(0, z, batch_size):
            stop = min(start + batch_size, z)
            if channels == 1:  # np.array copies: the input array is never written to
                stack = np.array(arr[start:stop], dtype=np.float32)[:, None]
            else:
                ks = np.arange(start, stop)[:, None] + np.arange(channels) - channels // 2
                stack = np.array(arr[np.clip(ks, 0, z - 1).ravel()], dtype=np.float32)
                stack = stack.reshape(stop - start, channels, *arr.shape[1:])
            xs = torch.from_numpy(stack).to(dev, non_blocking=True)  # (b, C, y, x) HU
            if not bool(torch.isfinite(xs).all()):
                raise LdctError(f"input slices {start}..{stop - 1} contain NaN or infinite values")
            x = xs[:, channels // 2 : channels // 2 + 1]  # (b, 1, y, x): the slices being denoised
            d = None if dose is None else torch.full((xs.shape[0],), float(dose), device=dev)
            net_in = hu_to_net(xs, window)

            def fn(t: torch.Tensor, d: torch.Tensor | None = d) -> torch.Tensor:
                with _autocast(dev, precision):
                    return _call(module, t, d).float()

            y = fn(net_in) if tile is None else tiled_forward(fn, net_in, tile=tile, overlap=overlap, scale=scale)
            check_finite_output(y, source, f"slices {start}..{stop - 1}")
            excess = x - x.clamp(window.lo, window.hi)
            if scale != 1:
                excess = F.interpolate(excess, scale_factor=scale, mode="bilinear", align_corners=False)
            if y.shape[-2:] != excess.shape[-2:]:
                raise RuntimeError(
                    f"network output {tuple(y.shape)} does not match the input {tuple(x.shape)} at scale {scale}"
                )
            if y.shape[1] > 1:
                y = y[:, y.shape[1] // 2 : y.shape[1] // 2 + 1]
            out = net_to_hu(y, window) + excess
            yield start, out[:, 0].float().cpu().numpy()


def predict_volume(
    module: nn.Module,
    hu: np.ndarray,
    *,
    window: Window,
    dose: float | None = None,
    batch_size: int = 4,
    tile: int | None = None,
    overlap: int = 32,
    device: str | torch.device = "cpu",
    precision: str = "32",
    scale: int = 1,
    channels: int = 1,
    progress: Progress | None = None,
    source: str | Path | None = None,
) -> np.ndarray:
    """Denoise a (z, y, x) (or (y, x)) HU volume; returns float32 HU of shape (z, y*scale, x*scale).

    Same arguments as :func:`iter_predict`; ``progress(done_slices, total_slices)`` is called after each batch.
    """
    squeeze = hu.ndim == 2
    arr = hu[None] if squeeze else hu
    z, h, w = arr.shape
    out = np.empty((z, h * scale, w * scale), dtype=np.float32)
    for start, batch in iter_predict(
        module, arr, window=window, dose=dose, batch_size=batch_size, tile=tile, overlap=overlap,
        device=device, precision=precision, scale=scale, channels=channels, source=source,
    ):
        out[start : start + len(batch)] = batch
        if progress is not None:
            progress(start + len(batch), z)
    return out[0] if squeeze else out
