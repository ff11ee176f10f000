"""Calibrate the incident flux I0 to the scan's own noise.

A literature I0 (e.g. 1e5 photons per reading) ignores the scan: the same flux adds very different
noise to a slim or a large patient, a smooth or a sharp kernel. Instead:

1. **Measure the scan's noise**: the local standard deviation in ``window`` x ``window`` neighbourhoods
   at pixels of homogeneous soft tissue (smoothed value in [-150, 200] HU, low smoothed gradient,
   eroded mask), summarised by its first quartile (texture inflates the upper quantiles; an automatic
   soft-tissue ROI std, after Christianson et al. 2015, AJR 204:1244).
2. **Measure the simulator's full-dose noise** at a reference flux ``I0_ref``: FBP of Gaussian
   line-integral noise with variance ``exp(p) / I0_ref`` (the quantum noise of a full-dose scan), the
   same estimator on the same pixels.
3. Quantum noise variance scales as 1 / I0, so ``I0 = I0_ref * (sigma_ref / sigma_scan)^2`` makes the
   simulated full-dose noise match the scan's (per scan, hence per kernel: a sharp kernel has more
   image noise and gets a lower I0, so the noise *added* at dose d is sigma_scan * sqrt(1/d - 1)).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage

from ldct.errors import LdctError
from ldct.simulate.geometry import FanBeamGeometry
from ldct.simulate.noise import full_dose_std, slice_generator, standard_normal, tube_current_modulation
from ldct.simulate.physics import MU_WATER_PER_MM, hu_to_mu, line_integrals, noise_image_hu

#: smoothed HU interval counted as soft tissue (fat to enhanced organs)
SOFT_TISSUE_HU = (-150.0, 200.0)
#: reference flux for the calibration run (photons per detector reading)
I0_REF = 1e6
#: fewest mask pixels (all calibration slices together) to trust the estimate
MIN_MASK_PIXELS = 400


def soft_tissue_mask(hu: np.ndarray, *, window: int = 7) -> np.ndarray:
    """(H, W) bool: homogeneous soft-tissue pixels of one slice (see module docstring)."""
    smooth = ndimage.gaussian_filter(hu.astype(np.float32), 2.0)
    grad = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1)) / 8.0  # HU per pixel
    mask = (smooth > SOFT_TISSUE_HU[0]) & (smooth < SOFT_TISSUE_HU[1]) & (grad < 10.0)
    return ndimage.binary_erosion(mask, iterations=window // 2 + 1)


def local_std(x: np.ndarray, *, window: int = 7) -> np.ndarray:
    """(H, W) standard deviation in ``window`` x ``window`` neighbourhoods."""
    x = x.astype(np.float64)
    mean = ndimage.uniform_filter(x, window)
    var = ndimage.uniform_filter(x * x, window) - mean * mean
    return np.sqrt(np.clip(var, 0.0, None))


def noise_level(images: np.ndarray, masks: np.ndarray, *, window: int = 7, quantile: float = 0.25) -> float:
    """First quartile of the local std over the masked pixels of (Z, H, W) ``images``."""
    vals = [local_std(im, window=window)[m] for im, m in zip(images, masks, strict=True) if m.any()]
    if not vals:
        return float("nan")
    return float(np.quantile(np.concatenate(vals), quantile))


#: candidate FBP filters for ``filter="auto"``, smooth to sharp
AUTO_FILTERS = ("hann", "shepp-logan", "ram-lak")


def texture_ratio(images: np.ndarray, masks: np.ndarray) -> float:
    """Share of the noise at high spatial frequency: noise level of a 1-pixel high-pass over the noise level.

    Smooth-kernel (hann-like) noise is correlated over several pixels and gives a low ratio; sharp-kernel
    (ram-lak-like) noise is close to white and gives a high one. Same estimator for a scan and for simulated noise.
    """
    hp = images - ndimage.gaussian_filter(images, sigma=(0, 1.0, 1.0))
    return noise_level(hp, masks) / max(noise_level(images, masks), 1e-6)


@dataclass
class Calibration:
    """Result of :func:`calibrate_i0`."""

    i0: float
    """calibrated normal-dose flux (photons per detector reading)"""
    sigma_scan_hu: float
    """the scan's noise level (first quartile of 7x7 local std in soft tissue, HU)"""
    sigma_ref_hu: float
    """the simulator's full-dose noise level at ``i0_ref``, same estimator"""
    i0_ref: float
    slices: list[int]
    mask_pixels: int
    filter: str = "hann"
    """the FBP filter the calibration is for (chosen by noise texture when asked for "auto")"""
    texture_scan: float | None = None
    """the scan's :func:`texture_ratio` (``filter="auto"`` only)"""
    texture_sim: float | None = None
    """the chosen filter's simulated :func:`texture_ratio` (``filter="auto"`` only)"""

    def to_dict(self) -> dict:
        return asdict(self)


def choose_slices(hu: np.ndarray, max_slices: int, *, candidates: int = 16) -> tuple[list[int], np.ndarray]:
    """Up to ``max_slices`` slice indices with the most soft tissue, and their (K, H, W) masks."""
    z = hu.shape[0]
    cand = np.unique(np.linspace(0, z - 1, min(candidates, z)).round().astype(int))
    masks = {int(k): soft_tissue_mask(hu[k]) for k in cand}
    order = sorted(masks, key=lambda k: -int(masks[k].sum()))[:max_slices]
    order = sorted(k for k in order if masks[k].any()) or order[:1]
    return order, np.stack([masks[k] for k in order])


def calibrate_i0(
    hu: np.ndarray,
    pixel_spacing_mm: float,
    geometry: FanBeamGeometry,
    *,
    filter: str = "hann",
    view_merge: int = 4,
    variance_downsample: int = 4,
    mu_water: float = MU_WATER_PER_MM,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    max_slices: int = 4,
    tcm: float = 1.0,
) -> Calibration:
    """Choose I0 so that the simulated full-dose noise matches the scan's measured noise.

    Args:
        hu: (Z, H, W) normal-dose slices in HU (one scan, one kernel).
        pixel_spacing_mm, geometry: as for the simulation itself.
        filter, view_merge, variance_downsample, mu_water: as for the simulation (they change the
            simulated noise, so the calibration must use the same values). ``filter="auto"`` picks, from
            :data:`AUTO_FILTERS`, the filter whose simulated noise texture (:func:`texture_ratio`) is closest
            to the scan's own, so a sharp-kernel scan gets sharp noise and a smooth one smooth noise.
        seed: seeds the calibration run (None: fresh entropy; the estimate then varies by ~1 %).
        max_slices: slices used (those with the most homogeneous soft tissue).
        tcm: tube-current modulation strength, as for the simulation.
    Raises:
        LdctError: too little homogeneous soft tissue to measure the noise (pass an explicit I0).
    """
    idx, masks = choose_slices(hu, max_slices)
    n_pix = int(masks.sum())
    if n_pix < MIN_MASK_PIXELS:
        raise LdctError(
            f"too little homogeneous soft tissue ({n_pix} pixels) to calibrate the flux to the scan's noise; "
            "pass an explicit --i0 (photons per detector reading at full dose, e.g. 3e5)"
        )
    sel = hu[idx]
    sigma_scan = noise_level(sel, masks)
    dev = torch.device(device)
    x = torch.as_tensor(sel, dtype=torch.float32, device=dev)
    p = line_integrals(hu_to_mu(x, mu_water), geometry, pixel_spacing_mm, variance_downsample=variance_downsample)
    gens = [slice_generator(None if seed is None else seed + 7919, k, dev) for k in idx]
    dp = full_dose_std(p, I0_REF * tube_current_modulation(p, tcm)) * standard_normal(tuple(p.shape[1:]), gens, dev)
    if not (math.isfinite(sigma_scan) and sigma_scan > 0):
        raise LdctError("could not measure the scan's noise (flat image?); pass an explicit --i0")
    candidates = AUTO_FILTERS if filter == "auto" else (filter,)
    tex_scan = texture_ratio(sel, masks) if filter == "auto" else None
    best: tuple[float, str, float, float | None] | None = None
    for name in candidates:
        noise = noise_image_hu(dp, geometry, sel.shape[1:], pixel_spacing_mm, filter=name, view_merge=view_merge,
                               mu_water=mu_water).cpu().numpy()
        tex = texture_ratio(noise, masks) if tex_scan is not None else None
        score = abs(tex - tex_scan) if tex is not None and tex_scan is not None else 0.0
        if best is None or score < best[0]:
            best = (score, name, noise_level(noise, masks), tex)
    assert best is not None
    _, chosen, sigma_ref, tex_sim = best
    i0 = I0_REF * (sigma_ref / sigma_scan) ** 2
    return Calibration(i0=float(i0), sigma_scan_hu=sigma_scan, sigma_ref_hu=sigma_ref, i0_ref=I0_REF,
                       slices=[int(k) for k in idx], mask_pixels=n_pix, filter=chosen,
                       texture_scan=tex_scan, texture_sim=tex_sim)
