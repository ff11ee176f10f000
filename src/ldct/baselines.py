"""Classical denoising baselines in HU: Gaussian filter and BM3D with a noise level estimated blind.

Both work slice by slice on (y, x) slices or (z, y, x) volumes of float HU and return float32 HU of the
same shape; the input is never modified. BM3D (``bm3d`` package, default 'np' profile; the 'refilter'
profile crashes in bm3d 4.0.3) gets its noise standard deviation from the image itself, never from the
reference: :func:`estimate_noise_sigma_hu` is the median absolute deviation of a Gaussian high-pass
(white-noise gain corrected) over flat body soft tissue, falling back to the body (or the whole slice)
when too little soft tissue is visible.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ldct.metrics.noise import body_mask, highpass_hu, soft_tissue_roi

#: fewer ROI pixels than this and the estimate falls back to a larger region
MIN_ROI_PIXELS = 500


def _slices(hu: np.ndarray) -> np.ndarray:
    x = np.asarray(hu, dtype=np.float64)
    if x.ndim == 2:
        return x[None]
    if x.ndim == 3:
        return x
    raise ValueError(f"expected a (y, x) slice or (z, y, x) volume in HU, got shape {x.shape}")


def gaussian_filter_hu(hu: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """In-plane Gaussian smoothing of (y, x) or (z, y, x) HU (``sigma`` in pixels), slice by slice."""
    x = _slices(hu)
    out = np.stack([ndi.gaussian_filter(s, sigma, mode="nearest") for s in x]).astype(np.float32)
    return out.reshape(np.shape(hu))


def estimate_noise_sigma_hu(hu: np.ndarray, highpass_sigma: float = 2.0) -> float:
    """Blind noise std (HU) of one (y, x) slice: robust std (MAD x 1.4826) of :func:`highpass_hu` in flat
    body soft tissue (:func:`soft_tissue_roi` of a smoothed copy); falls back to the body, then the slice.

    CT noise is spatially correlated; the high-pass keeps frequencies above ~0.1 cycles/pixel, where most
    of the power of reconstructed CT noise lies, so the estimate reads slightly low for smooth kernels."""
    x = np.asarray(hu, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"estimate_noise_sigma_hu takes one (y, x) slice, got shape {x.shape}")
    hp = highpass_hu(x, highpass_sigma)
    smooth = ndi.gaussian_filter(x, 2.0)
    region = soft_tissue_roi(smooth)
    if region.sum() < MIN_ROI_PIXELS:
        region = ndi.binary_erosion(body_mask(smooth), iterations=4)
    if region.sum() < MIN_ROI_PIXELS:
        region = np.ones_like(x, dtype=bool)
    v = hp[region]
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def bm3d_hu(hu: np.ndarray, sigma_hu: float | None = None) -> np.ndarray:
    """BM3D of (y, x) or (z, y, x) HU, slice by slice.

    Args:
        hu: image in HU.
        sigma_hu: noise std in HU; None (default) estimates it per slice with
            :func:`estimate_noise_sigma_hu` (no oracle).

    Returns:
        float32 HU, same shape.
    """
    import bm3d  # imported lazily: it loads its compiled block-matching library on import

    x = _slices(hu)
    out = np.empty(x.shape, dtype=np.float32)
    for k, s in enumerate(x):
        sig = estimate_noise_sigma_hu(s) if sigma_hu is None else float(sigma_hu)
        if sig <= 0:
            out[k] = s
            continue
        # BM3D is scale invariant given sigma; work in units of 1000 HU to keep its internals well scaled
        den = bm3d.bm3d(s / 1000.0, sigma_psd=sig / 1000.0, profile="np")
        out[k] = np.asarray(den, dtype=np.float64).reshape(s.shape) * 1000.0
    return out.reshape(np.shape(hu))
