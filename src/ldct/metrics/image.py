"""Full-reference image metrics in Hounsfield units, each tied to a named HU window.

For every window [lo, hi] both images are clipped to the window and compared with ``data_range = hi - lo``:

- ``psnr_<window>``: 10 log10(data_range**2 / MSE) in dB, equal to
  ``skimage.metrics.peak_signal_noise_ratio(ref, pred, data_range=data_range)``;
- ``ssim_<window>``: mean SSIM with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population
  covariances, averaged over the pixels whose window lies inside the image, equal to
  ``skimage.metrics.structural_similarity(ref, pred, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=data_range)`` (Wang et al. 2004);
- ``rmse_<window>``: root mean squared error in HU; ``mse_<window>``: mean squared error in HU**2.

torchmetrics' SSIM differs from scikit-image by up to ~5e-3 on CT (its border handling), so it is not used.
On CPU the metrics call scikit-image itself (the reference; ~25 ms per 512x512 SSIM). With ``device=``
(e.g. "cuda") they are computed batched in torch float64 by :func:`ssim_torch`, a separable Gaussian
convolution over the "valid" region (exactly scikit-image's cropping); tests check both paths against
scikit-image to 1e-4 on real slices. :func:`ssim_torch` (differentiable, any dtype) also backs the SSIM
training loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from ldct.hu import METRIC_WINDOWS, Window

METRICS = ("psnr", "ssim", "rmse", "mse")


def gaussian_kernel1d(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1D Gaussian of ``size`` taps (odd), the window scikit-image uses for sigma 1.5."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(r**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype)


def _blur_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian on (N, C, H, W), 'valid' region only: (N, C, H-k+1, W-k+1)."""
    c = x.shape[1]
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim_torch(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float | torch.Tensor,
    *,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: str = "mean",
) -> torch.Tensor:
    """SSIM of (N, C, H, W) tensors (H, W >= win_size), differentiable.

    ``data_range``: scalar or (N,) tensor. ``reduction``: "mean" -> scalar over everything, "none" -> (N,)
    per image (mean over channels and valid pixels).
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"ssim needs equal (N, C, H, W) shapes, got {tuple(pred.shape)}, {tuple(target.shape)}"
        )
    if min(pred.shape[-2:]) < win_size:
        raise ValueError(f"ssim needs H, W >= {win_size}, got {tuple(pred.shape[-2:])}")
    g = gaussian_kernel1d(win_size, sigma, pred.dtype).to(pred.device)
    dr = torch.as_tensor(data_range, dtype=pred.dtype, device=pred.device).reshape(-1, 1, 1, 1)
    c1, c2 = (k1 * dr) ** 2, (k2 * dr) ** 2
    n = pred.shape[0]
    stacked = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=0)
    mx, my, mxx, myy, mxy = _blur_valid(stacked, g).split(n, dim=0)
    vx, vy, vxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    if reduction == "none":
        return s.flatten(1).mean(1)
    if reduction == "mean":
        return s.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def resolve_windows(windows: Iterable[str | Window] | None = None) -> list[Window]:
    """Names from :data:`ldct.hu.METRIC_WINDOWS` (or Window objects) -> windows; None = all of them."""
    if windows is None:
        return list(METRIC_WINDOWS.values())
    out = []
    for w in windows:
        if isinstance(w, Window):
            if not w.name:
                raise ValueError(f"metric window {w} needs a name (it goes into the metric keys)")
            out.append(w)
        elif w in METRIC_WINDOWS:
            out.append(METRIC_WINDOWS[w])
        else:
            raise ValueError(f"unknown metric window {w!r}; known: {', '.join(METRIC_WINDOWS)}")
    return out


def metric_keys(windows: Iterable[str | Window] | None = None) -> list[str]:
    """Column names produced by :func:`compute_metrics`, e.g. ``psnr_soft_tissue``."""
    return [f"{m}_{w.name}" for w in resolve_windows(windows) for m in METRICS]


def describe_metrics(windows: Iterable[str | Window] | None = None) -> dict[str, str]:
    """Key -> human description naming the unit, HU window and data range (for tables and CSV headers)."""
    units = {"psnr": "PSNR dB", "ssim": "SSIM", "rmse": "RMSE HU", "mse": "MSE HU^2"}
    return {
        f"{m}_{w.name}": f"{units[m]}, {w.describe()}, data_range {w.width:g} HU"
        for w in resolve_windows(windows)
        for m in METRICS
    }


def _row(rows: dict[str, float], w: Window, mse: float, ssim: float) -> None:
    rows[f"psnr_{w.name}"] = 10.0 * math.log10(w.width**2 / mse) if mse > 0 else math.inf
    rows[f"ssim_{w.name}"] = ssim
    rows[f"rmse_{w.name}"] = math.sqrt(mse)
    rows[f"mse_{w.name}"] = mse


def compute_metrics_batch(
    pred_hu: np.ndarray | torch.Tensor,
    ref_hu: np.ndarray | torch.Tensor,
    windows: Iterable[str | Window] | None = None,
    *,
    device: str | torch.device | None = None,
) -> list[dict[str, float]]:
    """Per-slice metrics of (N, H, W) HU stacks (H, W >= 11) -> N dicts (see :func:`compute_metrics`).

    ``device=None``: scikit-image per slice on CPU; else batched torch float64 on that device."""
    ws = resolve_windows(windows)
    if device is None:
        p = np.asarray(pred_hu.detach().cpu() if isinstance(pred_hu, torch.Tensor) else pred_hu, np.float64)
        r = np.asarray(ref_hu.detach().cpu() if isinstance(ref_hu, torch.Tensor) else ref_hu, np.float64)
    else:
        p = torch.as_tensor(pred_hu).detach().to(device, torch.float64)
        r = torch.as_tensor(ref_hu).detach().to(device, torch.float64)
    if p.shape != r.shape or p.ndim != 3:
        raise ValueError(
            f"compute_metrics_batch needs equal (N, H, W) shapes, got {tuple(p.shape)}, {tuple(r.shape)}"
        )
    rows: list[dict[str, float]] = [{} for _ in range(p.shape[0])]
    for w in ws:
        if isinstance(p, np.ndarray):
            for i in range(p.shape[0]):
                pc, rc = np.clip(p[i], w.lo, w.hi), np.clip(r[i], w.lo, w.hi)
                ssim = structural_similarity(
                    rc, pc, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=w.width
                )
                _row(rows[i], w, float(np.mean((pc - rc) ** 2)), float(ssim))
        else:
            pc, rc = p.clamp(w.lo, w.hi), r.clamp(w.lo, w.hi)
            mse = (pc - rc).pow(2).flatten(1).mean(1).cpu()
            ssim_t = ssim_torch(pc[:, None], rc[:, None], w.width, reduction="none").cpu()
            for i in range(p.shape[0]):
                _row(rows[i], w, float(mse[i]), float(ssim_t[i]))
    return rows


def compute_metrics(
    pred_hu: np.ndarray | torch.Tensor,
    ref_hu: np.ndarray | torch.Tensor,
    windows: Sequence[str | Window] | None = None,
) -> dict[str, float]:
    """PSNR, SSIM, RMSE (HU) and MSE (HU^2) of one (H, W) slice per named window.

    Args:
        pred_hu: (H, W) prediction in HU (singleton leading dims are squeezed).
        ref_hu: (H, W) reference (normal dose) in HU.
        windows: names from :data:`ldct.hu.METRIC_WINDOWS` ("full", "soft_tissue", "chest", "abdomen",
            "head") or named :class:`ldct.hu.Window` s; None = all.

    Returns:
        ``{"psnr_full": ..., "ssim_full": ..., "rmse_full": ..., "mse_full": ..., "psnr_soft_tissue": ...}``.
        Both images are clipped to each window and ``data_range`` is the window width.
    """
    p = pred_hu.detach().cpu().numpy() if isinstance(pred_hu, torch.Tensor) else np.asarray(pred_hu)
    r = ref_hu.detach().cpu().numpy() if isinstance(ref_hu, torch.Tensor) else np.asarray(ref_hu)
    while p.ndim > 2 and p.shape[0] == 1:
        p = p[0]
    while r.ndim > 2 and r.shape[0] == 1:
        r = r[0]
    if p.ndim != 2:
        raise ValueError(
            f"compute_metrics takes one (H, W) slice, got {tuple(p.shape)}; use compute_metrics_batch for stacks"
        )
    return compute_metrics_batch(p[None], r[None], windows)[0]


#: column names of :func:`photo_metrics` (photographs: no HU window, the image's intensity range)
PHOTO_METRICS = ("psnr", "ssim", "rmse", "mse")


def photo_metrics(pred: np.ndarray, ref: np.ndarray, data_range: float = 255.0) -> dict[str, float]:
    """PSNR, SSIM, RMSE and MSE of a (C, H, W) or (H, W) photograph in intensity units (not HU).

    Both images are clipped to [0, data_range] (255 for 8-bit files, 65535 for 16-bit) and compared with
    that ``data_range``: ``psnr`` = ``skimage.metrics.peak_signal_noise_ratio``; ``ssim`` =
    ``skimage.metrics.structural_similarity`` with the settings of :func:`compute_metrics` (11x11 Gaussian
    window, sigma 1.5, population covariances) and ``channel_axis=0`` for colour (SSIM per channel,
    averaged, as scikit-image does); ``rmse``/``mse`` in intensity units (squared). H, W >= 11.
    """
    p = np.clip(np.asarray(pred, dtype=np.float64), 0.0, data_range)
    r = np.clip(np.asarray(ref, dtype=np.float64), 0.0, data_range)
    if p.shape != r.shape or p.ndim not in (2, 3):
        raise ValueError(f"photo_metrics needs equal (C, H, W) or (H, W) shapes, got {p.shape}, {r.shape}")
    if p.ndim == 3 and p.shape[0] == 1:
        p, r = p[0], r[0]
    ssim = structural_similarity(r, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=data_range, channel_axis=0 if p.ndim == 3 else None)
    mse = float(np.mean((p - r) ** 2))
    return {"psnr": 10.0 * math.log10(data_range**2 / mse) if mse > 0 else math.inf, "ssim": float(ssim),
            "rmse": math.sqrt(mse), "mse": mse}
