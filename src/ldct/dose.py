"""Dose estimation for dose-conditioned models (``ldct denoise`` without ``--dose``).

A dose-conditioned model needs the scan's dose as a fraction of the normal dose it was trained
against. Without ``--dose`` it is estimated, in this order, from whatever the user gave a reference for:

1. **CTDIvol** (DICOM (0018,9345), mGy) relative to ``reference_ctdivol`` (the normal-dose protocol's).
2. **Tube current-time product** (mAs: ExposureInuAs (0018,1153) / 1000 when every slice states it,
   as ldct's simulated low-dose series do, which avoids the rounding of the integer Exposure tag;
   else DICOM Exposure (0018,1152), or XRayTubeCurrent x ExposureTime / 1000) relative to
   ``reference_mas``. Only meaningful between scans of the same kV, pitch, collimation and patient
   size; CTDIvol already accounts for most of that.
3. **Image noise**: quantum noise variance scales with 1/dose, so ``dose ~ (sigma_ref / sigma)^2``
   with sigma the noise standard deviation (HU) in homogeneous soft tissue, measured by
   :func:`measure_noise_hu`, and ``reference_noise_hu`` the same measure on a normal-dose scan of
   the same protocol and reconstruction kernel (the kernel changes noise texture and magnitude).

The result is clipped to [0.05, 1] and returned with a sentence saying what was used. Tube-current
modulation makes tag values per slice: the mean over slices is used (as in the volume's metadata;
the median of the headers when the metadata lacks the value).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ldct.errors import LdctError
from ldct.volume import Volume

#: dose fractions are clipped to this range
DOSE_RANGE = (0.05, 1.0)

#: soft-tissue HU interval (on a smoothed image) where noise is measured
SOFT_TISSUE_HU = (-150.0, 200.0)


def _header_median(vol: Volume, *keywords: str) -> float | None:
    """Median over slices of the first DICOM keyword present in the per-slice headers."""
    for kw in keywords:
        vals = []
        for h in vol.headers or []:
            v = getattr(h, kw, None) if not isinstance(h, dict) else h.get(kw)
            if v not in (None, ""):
                try:
                    vals.append(float(v))
                except (TypeError, ValueError):
                    continue
        if vals:
            return float(np.median(vals))
    return None


def _meta_or_header(vol: Volume, meta_key: str, *keywords: str) -> float | None:
    v = vol.meta.get(meta_key)
    if v not in (None, ""):
        try:
            return float(v)
        except (TypeError, ValueError):
            pass
    return _header_median(vol, *keywords)


def ctdivol_of(vol: Volume) -> float | None:
    """CTDIvol in mGy from the metadata or the DICOM headers (median over slices), None if absent."""
    return _meta_or_header(vol, "ctdivol", "CTDIvol")


def _header_mean_all(vol: Volume, keyword: str) -> float | None:
    """Mean over slices of ``keyword`` when every per-slice header has a finite value, else None."""
    vals = []
    for h in vol.headers or []:
        v = getattr(h, keyword, None) if not isinstance(h, dict) else h.get(keyword)
        try:
            f = float(v) if v not in (None, "") else math.nan
        except (TypeError, ValueError):
            f = math.nan
        if not math.isfinite(f):
            return None
        vals.append(f)
    return float(np.mean(vals)) if vals else None


def exposure_mas_of(vol: Volume) -> float | None:
    """Tube current-time product in mAs, None if absent.

    ExposureInuAs (micro-ampere-seconds) is preferred when every slice states it: it keeps the
    precision that the integer Exposure (mAs) tag rounds away at low doses.
    """
    uas = _header_mean_all(vol, "ExposureInuAs")
    if uas is not None:
        return uas / 1000.0
    mas = _meta_or_header(vol, "exposure_mas", "Exposure")
    if mas is not None:
        return mas
    uas = _header_median(vol, "ExposureInuAs")
    if uas is not None:
        return uas / 1000.0
    ma = _meta_or_header(vol, "tube_current_ma", "XRayTubeCurrent")
    ms = _header_median(vol, "ExposureTime")
    if ma is not None and ms is not None:
        return ma * ms / 1000.0
    return None


def measure_noise_hu(vol: Volume, *, max_slices: int = 16, window: int = 7) -> float:
    """Noise standard deviation (HU) in homogeneous soft tissue of a CT volume.

    For each slice (at most ``max_slices``, evenly spread), the local standard deviation in
    ``window`` x ``window`` neighbourhoods is taken at pixels whose *smoothed* value lies in soft
    tissue ([-150, 200] HU), away from edges (eroded mask, low smoothed gradient); the result is the
    first quartile over all such pixels - an automatic version of a soft-tissue ROI standard deviation
    that favours the most homogeneous regions (texture inflates the higher quantiles). For pure noise
    the quartile scales linearly with the noise std, so ratios between scans are unbiased.
    Raises LdctError when the volume has too little soft tissue to measure.
    """
    if not vol.is_hu:
        raise LdctError("cannot measure CT noise in an image that is not in HU", vol.meta.get("source_path"))
    data = vol.data if vol.data.ndim == 3 else vol.data[..., 0]
    idx = np.unique(np.linspace(0, data.shape[0] - 1, min(max_slices, data.shape[0])).round().astype(int))
    stds = []
    for k in idx:
        x = data[k].astype(np.float64)
        smooth = ndimage.gaussian_filter(x, 2.0)
        grad = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1)) / 8.0  # HU per pixel
        mask = (smooth > SOFT_TISSUE_HU[0]) & (smooth < SOFT_TISSUE_HU[1]) & (grad < 10.0)
        mask = ndimage.binary_erosion(mask, iterations=window)
        if mask.sum() < 200:
            continue
        mean = ndimage.uniform_filter(x, window)
        var = ndimage.uniform_filter(x * x, window) - mean * mean
        stds.append(np.sqrt(np.clip(var[mask], 0.0, None)))
    if not stds:
        raise LdctError(
            "too little homogeneous soft tissue to measure image noise; pass --dose",
            vol.meta.get("source_path"),
        )
    return float(np.quantile(np.concatenate(stds), 0.25))


def _clip(d: float) -> float:
    return float(min(max(d, DOSE_RANGE[0]), DOSE_RANGE[1]))


def estimate_dose(
    vol: Volume,
    *,
    reference_ctdivol: float | None = None,
    reference_mas: float | None = None,
    reference_noise_hu: float | None = None,
) -> tuple[float, str]:
    """Estimate a scan's dose fraction relative to a normal-dose reference.

    Args:
        vol: the low-dose CT (HU).
        reference_ctdivol: CTDIvol (mGy) of the normal-dose protocol.
        reference_mas: tube current-time product (mAs) of the normal-dose protocol.
        reference_noise_hu: soft-tissue noise std (HU, as :func:`measure_noise_hu` measures it) of a
            normal-dose scan with the same kernel.

    Returns:
        ``(dose, how)``: the dose fraction clipped to [0.05, 1] and a sentence naming the source.
        Sources are tried in the order CTDIvol, mAs, image noise, using those with a reference.

    Raises:
        LdctError: no reference was given, a reference is not positive, or no given reference can be
            used (its tag is missing and no other reference was given).
    """
    src = vol.meta.get("source_path")
    refs = {"reference_ctdivol": reference_ctdivol, "reference_mas": reference_mas,
            "reference_noise_hu": reference_noise_hu}
    for name, value in refs.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            raise LdctError(f"{name} must be a positive number, got {value}")
    if all(v is None for v in refs.values()):
        raise LdctError(
            "cannot estimate the dose of a dose-conditioned model without a reference: pass --dose, "
            "or a normal-dose reference CTDIvol (mGy), mAs, or soft-tissue noise (HU)",
            src,
        )
    missing = []
    if reference_ctdivol is not None:
        ctdi = ctdivol_of(vol)
        if ctdi is not None and ctdi > 0:
            d = _clip(ctdi / reference_ctdivol)
            return d, f"dose {d:.3g} from CTDIvol {ctdi:.3g} mGy / reference {reference_ctdivol:.3g} mGy"
        missing.append("CTDIvol tag absent")
    if reference_mas is not None:
        mas = exposure_mas_of(vol)
        if mas is not None and mas > 0:
            d = _clip(mas / reference_mas)
            return d, f"dose {d:.3g} from exposure {mas:.3g} mAs / reference {reference_mas:.3g} mAs"
        missing.append("exposure (mAs) tags absent")
    if reference_noise_hu is not None:
        sigma = measure_noise_hu(vol)
        d = _clip((reference_noise_hu / max(sigma, 1e-6)) ** 2)
        note = f" ({'; '.join(missing)})" if missing else ""
        return d, (
            f"dose {d:.3g} from image noise: soft-tissue std {sigma:.3g} HU vs reference "
            f"{reference_noise_hu:.3g} HU, dose ~ (ref/std)^2{note}"
        )
    raise LdctError(f"cannot estimate the dose: {'; '.join(missing)}; pass --dose or another reference", src)
