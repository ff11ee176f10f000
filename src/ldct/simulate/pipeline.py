"""``simulate_low_dose``: normal-dose HU slices -> low-dose HU slices at any dose fraction.

Projection mode (default for CT): line integrals of the normal-dose image set each ray's count
level; :func:`ldct.simulate.noise.low_dose_increment` draws the extra quantum + electronic noise of
a scan at dose d; its fan-beam FBP (in HU) is added to the normal-dose image. The anatomy is never
re-reconstructed, so no projector error enters the output. Pixels below -1500 HU (padding outside
the reconstruction circle) are kept as they are.

Image modes (``gaussian``, ``poisson-gaussian``): white noise whose strength follows the same rule
(added std = sigma_full * sqrt(1/d - 1), sigma_full = the scan's measured noise, or ``noise_sigma``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ldct.errors import LdctError
from ldct.simulate.calibrate import Calibration, calibrate_i0, choose_slices, noise_level
from ldct.simulate.geometry import FanBeamGeometry, default_geometry
from ldct.simulate.image_noise import IMAGE_MODES, image_noise, intensity_range
from ldct.simulate.noise import (
    DEFAULT_COUNT_FLOOR,
    DEFAULT_SIGMA_E,
    low_dose_increment,
    slice_generator,
    standard_normal,
    tube_current_modulation,
)
from ldct.simulate.physics import (
    MU_WATER_PER_MM,
    PADDING_HU,
    effective_view_merge,
    hu_to_mu,
    line_integrals,
    noise_image_hu,
)
from ldct.simulate.projector import FILTERS

MODES = ("projection",) + IMAGE_MODES
#: HU above which a pixel counts as body
BODY_HU = -500.0
#: poisson-gaussian mode: share of the added variance that is signal-independent (Gaussian)
GAUSSIAN_SHARE = 0.1


@dataclass
class SimulationResult:
    """Output of :func:`simulate_doses`."""

    low_dose: dict[float, np.ndarray]
    """dose fraction -> float32 array shaped like the input (HU for CT)"""
    parameters: dict[str, Any]
    """every parameter that shaped the output (for the manifest): mode, seed, i0, calibration, ..."""
    warnings: list[str] = field(default_factory=list)


def check_dose(dose: float) -> float:
    """A dose fraction in (0, 1], else :class:`LdctError`."""
    try:
        d = float(dose)
    except (TypeError, ValueError):
        raise LdctError(f"dose must be a number in (0, 1], got {dose!r}") from None
    if not (math.isfinite(d) and 0.0 < d <= 1.0):
        raise LdctError(f"dose must be a fraction in (0, 1] (0.25 = quarter dose), got {dose}")
    return d


def check_inputs(arr: np.ndarray, doses: Sequence[float], mode: str, filter: str, ps: float, is_hu: bool) -> None:
    if mode not in MODES:
        raise LdctError(f"unknown simulation mode {mode!r}; known: {', '.join(MODES)}")
    if filter not in FILTERS and filter != "auto":
        raise LdctError(f"unknown reconstruction filter {filter!r}; known: auto, {', '.join(FILTERS)}")
    if not (math.isfinite(ps) and ps > 0):
        raise LdctError(f"pixel spacing must be a positive number of mm, got {ps}")
    if not doses:
        raise LdctError("give at least one dose")
    for d in doses:
        check_dose(d)
    if arr.size == 0:
        raise LdctError("image is empty")
    bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise LdctError(f"image contains {bad} NaN or infinite values")
    if mode == "projection":
        if not is_hu:
            raise LdctError("projection-domain simulation needs CT in HU; this image is a photograph "
                            "(use --mode gaussian or poisson-gaussian)")
        if arr.ndim not in (2, 3):
            raise LdctError(f"expected a slice (y, x) or volume (z, y, x) in HU, got shape {arr.shape}")
        if min(arr.shape[-2:]) < 8:
            raise LdctError(f"image {arr.shape[-2]}x{arr.shape[-1]} is too small to simulate")
        body = np.count_nonzero(arr > BODY_HU)
        if body < max(16, 0.002 * arr.size):
            raise LdctError(f"no body in the image: only {body} pixels above {BODY_HU:g} HU "
                            "(is it CT in HU, with a patient in the field of view?)")


def _edge_warnings(vol: np.ndarray, ps: float, geom: FanBeamGeometry) -> list[str]:
    """Warn when the body touches the image border or leaves the scan field of view."""
    h, w = vol.shape[-2:]
    border = np.concatenate([vol[:, 0, :], vol[:, -1, :], vol[:, :, 0], vol[:, :, -1]], axis=1)
    frac = float(np.mean(border > BODY_HU))
    out = []
    if frac > 0.02:
        out.append(f"the body reaches the image edge ({100 * frac:.0f} % of edge pixels above {BODY_HU:g} HU): "
                   "anatomy outside the reconstructed field of view is missing from the projections, so the "
                   "simulated noise is too low near it")
    y = (np.arange(h) - (h - 1) / 2.0) * ps
    x = (np.arange(w) - (w - 1) / 2.0) * ps
    outside = (x[None, :] ** 2 + y[:, None] ** 2) > geom.fov_radius**2
    if outside.any():
        n = int(np.count_nonzero((vol > BODY_HU) & outside[None]))
        if n:
            out.append(f"{n} body pixels lie outside the scan field of view (radius {geom.fov_radius:.0f} mm)")
    return out


def _dose_key(d: float) -> int:
    return round(d * 1e6)


def simulate_doses(
    hu: np.ndarray,
    doses: Sequence[float],
    *,
    pixel_spacing_mm: float,
    mode: str = "projection",
    i0: float | None = None,
    sigma_e: float = DEFAULT_SIGMA_E,
    filter: str = "hann",
    seed: int | None = None,
    geometry: FanBeamGeometry | None = None,
    device: str | torch.device = "cpu",
    mu_water: float = MU_WATER_PER_MM,
    count_floor: float = DEFAULT_COUNT_FLOOR,
    view_merge: int = 4,
    variance_downsample: int = 4,
    noise_sigma: float | None = None,
    tcm: float = 1.0,
    is_hu: bool = True,
    batch_size: int | None = None,
    calibration_slices: int = 4,
) -> SimulationResult:
    """Simulate several dose levels of the same slices (the line integrals are computed once).

    Same arguments as :func:`simulate_low_dose` (which calls this), plus ``doses`` (a list), ``is_hu``
    (False for photographs: image modes only) and ``batch_size`` (slices per projector call).
    Slice k at dose d gets noise seeded by (seed, k, d), so results do not depend on batching or on
    the other doses asked for.
    """
    arr = np.asarray(hu, dtype=np.float32)
    doses = [check_dose(d) for d in doses]
    check_inputs(arr, doses, mode, filter, float(pixel_spacing_mm), is_hu)
    params: dict[str, Any] = {"mode": mode, "seed": seed, "pixel_spacing_mm": float(pixel_spacing_mm)}
    if mode != "projection":
        return _simulate_image(arr, doses, params, seed=seed, noise_sigma=noise_sigma, is_hu=is_hu)
    vol = arr[None] if arr.ndim == 2 else arr
    shape = vol.shape[1:]
    geom = geometry or default_geometry(shape, pixel_spacing_mm)
    dev = torch.device(device)
    warn = _edge_warnings(vol, pixel_spacing_mm, geom)
    params.update(sigma_e=float(sigma_e), filter=filter, geometry=geom.to_dict(), mu_water_per_mm=mu_water,
                  count_floor=count_floor, view_merge=effective_view_merge(geom, view_merge),
                  variance_downsample=int(variance_downsample), tcm=float(tcm))
    todo = [d for d in doses if d < 1.0]
    calib: Calibration | None = None
    if i0 is not None and not (math.isfinite(i0) and i0 > 0):
        raise LdctError(f"i0 must be a positive photon count, got {i0}")
    if (i0 is None or filter == "auto") and todo:
        calib = calibrate_i0(vol, pixel_spacing_mm, geom, filter=filter, view_merge=view_merge,
                             variance_downsample=variance_downsample, mu_water=mu_water, seed=seed, device=dev,
                             max_slices=calibration_slices, tcm=tcm)
        filter = calib.filter  # "auto" resolves to the filter matching the scan's noise texture
        params["filter"] = filter
        if i0 is None:
            i0 = calib.i0
        else:
            calib = None  # the flux was given; only the filter came from the scan
    params.update(i0=None if i0 is None else float(i0), i0_source="calibrated" if calib else "given",
                  calibration=calib.to_dict() if calib else None)
    out = {d: vol.copy() for d in doses}
    bs = batch_size or (32 if dev.type == "cuda" else 4)
    for b0 in range(0, vol.shape[0] if todo else 0, bs):
        x = torch.as_tensor(vol[b0 : b0 + bs], device=dev)
        p = line_integrals(hu_to_mu(x, mu_water), geom, pixel_spacing_mm, variance_downsample=variance_downsample)
        keep = x < PADDING_HU
        flux = float(i0) * tube_current_modulation(p, tcm)  # (B, V, 1) photons per reading
        for d in todo:
            gens = [slice_generator(seed, k, dev, _dose_key(d)) for k in range(b0, b0 + x.shape[0])]
            xi = standard_normal(tuple(p.shape[1:]), gens, dev)
            dp = low_dose_increment(p, d, flux, xi, sigma_e=sigma_e, count_floor=count_floor)
            del xi
            noise = noise_image_hu(dp, geom, shape, pixel_spacing_mm, filter=filter, view_merge=view_merge,
                                   mu_water=mu_water)
            ld = torch.where(keep, x, x + noise)
            out[d][b0 : b0 + x.shape[0]] = ld.cpu().numpy()
    if arr.ndim == 2:
        out = {d: v[0] for d, v in out.items()}
    return SimulationResult(low_dose=out, parameters=params, warnings=warn)


def _simulate_image(arr: np.ndarray, doses: list[float], params: dict[str, Any], *, seed: int | None,
                    noise_sigma: float | None, is_hu: bool) -> SimulationResult:
    """Image-domain modes: white noise of std sigma_full * sqrt(1/d - 1) (see module docstring)."""
    mode = params["mode"]
    warn: list[str] = []
    if is_hu:
        vol = arr[None] if arr.ndim == 2 else arr
        idx, masks = choose_slices(vol, 4)
        black, clip = -1024.0, None
        signal = float(np.mean(vol[idx][masks] - black)) if masks.any() else 1064.0
        if noise_sigma is None:
            if masks.sum() < 400:
                raise LdctError("too little homogeneous soft tissue to measure the scan's noise; pass --sigma")
            # the estimator reads white noise of std 1 as c_white: undo that so the added noise has the
            # same estimator reading as the scan's noise times sqrt(1/d - 1)
            white = np.random.default_rng(0).standard_normal(masks.shape)
            noise_sigma = noise_level(vol[idx], masks) / noise_level(white, masks)
            params["noise_sigma_source"] = "measured"
    else:
        full = intensity_range(arr)
        black, clip, signal = 0.0, (0.0, full), max(float(np.mean(arr)), 1e-3 * full)
        if noise_sigma is None:
            noise_sigma = 0.01 * full
            params["noise_sigma_source"] = "1% of the intensity range"
    params.setdefault("noise_sigma_source", "given")
    params["noise_sigma"] = float(noise_sigma)
    out: dict[float, np.ndarray] = {}
    for d in doses:
        if d >= 1.0:
            out[d] = arr.copy()
            continue
        add = float(noise_sigma) * math.sqrt(1.0 / d - 1.0)
        ss = None if seed is None else np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _dose_key(d)])
        if mode == "gaussian":
            out[d] = image_noise(arr, mode="gaussian", sigma=add, seed=ss, clip=clip)
        else:
            gain = (1.0 - GAUSSIAN_SHARE) * add * add / signal
            out[d] = image_noise(arr, mode="poisson-gaussian", sigma=add * math.sqrt(GAUSSIAN_SHARE), gain=gain,
                                 black=black, seed=ss, clip=clip)
    return SimulationResult(low_dose=out, parameters=params, warnings=warn)


def simulate_low_dose(
    hu: np.ndarray,
    dose: float,
    *,
    pixel_spacing_mm: float,
    mode: str = "projection",
    i0: float | None = None,
    sigma_e: float = DEFAULT_SIGMA_E,
    filter: str = "hann",
    seed: int | None = None,
    geometry: FanBeamGeometry | None = None,
    device: str | torch.device = "cpu",
    mu_water: float = MU_WATER_PER_MM,
    count_floor: float = DEFAULT_COUNT_FLOOR,
    view_merge: int = 4,
    variance_downsample: int = 4,
    noise_sigma: float | None = None,
    tcm: float = 1.0,
) -> np.ndarray:
    """Simulate a low-dose version of normal-dose CT.

    Args:
        hu: (H, W) slice or (Z, H, W) slices of one scan, float HU.
        dose: fraction of the normal dose, 0 < dose <= 1 (1 returns the input unchanged).
        pixel_spacing_mm: in-plane pixel size (mm); scales the default geometry.
        mode: ``"projection"`` (physics, default), ``"gaussian"`` or ``"poisson-gaussian"`` (image domain).
        i0: normal-dose photons per detector reading; None = calibrated so the simulated full-dose noise
            matches this input's measured noise (:func:`ldct.simulate.calibrate.calibrate_i0`; costs about
            one extra noise reconstruction on up to 4 slices; pass the value for repeated calls).
        sigma_e: electronic noise std (counts).
        filter: FBP filter for the added noise: ram-lak, shepp-logan, cosine, hamming, hann, or "auto" (the
            filter whose noise texture matches the scan's own, chosen during calibration).
        seed: noise seed (same seed, same output); None = fresh randomness.
        geometry: fan-beam geometry; None = :func:`default_geometry` for this image.
        device: torch device ("cpu", "cuda").
        mu_water: attenuation of water per mm (effective energy).
        count_floor: counts are floored here before the log.
        view_merge: views summed per backprojection for the noise (1 = every view).
        variance_downsample: resolution reduction for the line integrals that set the noise variance
            (1 = full resolution).
        noise_sigma: image modes only: full-dose noise std (HU or intensity); None = measured.
        tcm: angular tube-current modulation strength (1 = flux ~ exp(p_max / 2) per view, 0 = off);
            ``i0`` is then the mean flux over views.
    Returns:
        float32 array shaped like ``hu``.
    Raises:
        LdctError: bad dose, NaN/Inf values, no body in the image, too little soft tissue to calibrate.
    """
    res = simulate_doses(hu, [dose], pixel_spacing_mm=pixel_spacing_mm, mode=mode, i0=i0, sigma_e=sigma_e,
                         filter=filter, seed=seed, geometry=geometry, device=device, mu_water=mu_water,
                         count_floor=count_floor, view_merge=view_merge, variance_downsample=variance_downsample,
                         noise_sigma=noise_sigma, tcm=tcm)
    return res.low_dose[check_dose(dose)]
