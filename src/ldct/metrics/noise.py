"""Noise measurements in HU: body mask, soft-tissue ROIs, noise standard deviation, noise power spectrum.

All functions take (y, x) slices or (z, y, x) volumes (processed slice by slice) in HU.

- :func:`body_mask`: threshold (> -500 HU), largest connected component, holes filled (the table and
  the air outside drop out).
- :func:`soft_tissue_roi`: flat soft tissue inside the body: local mean and pixel in [-100, 150] HU, away
  from the body edge, and local standard deviation in the lowest ``flat_quantile`` of the candidates.
- :func:`noise_std_hu`: with a reference, the std of ``img - ref`` in the ROI (exact for simulated pairs);
  without one, the std of a Gaussian high-pass of ``img`` in the ROI divided by the high-pass's white-noise
  gain (so white noise of std s reads s; correlated CT noise, whose power sits at lower frequencies,
  reads somewhat low).
- :func:`noise_power_spectrum`: 2D and radial NPS (HU^2 mm^2, frequencies in cycles/mm) from square
  ROIs inside the body soft tissue, of ``img - ref`` or of ``img`` detrended by a 2nd-order polynomial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

SOFT_TISSUE_HU = (-100.0, 150.0)


def _per_slice(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 2:
        return x[None]
    if x.ndim == 3:
        return x
    raise ValueError(f"expected a (y, x) slice or (z, y, x) volume, got shape {x.shape}")


def body_mask(hu: np.ndarray, threshold: float = -500.0) -> np.ndarray:
    """(y, x) or (z, y, x) HU -> bool mask of the body: the largest connected region above ``threshold``
    with its holes (lungs, bowel gas) filled, per slice."""
    x = _per_slice(hu)
    out = np.zeros(x.shape, dtype=bool)
    for k, sl in enumerate(x):
        lab, n = ndi.label(sl > threshold)
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        out[k] = ndi.binary_fill_holes(lab == int(np.argmax(sizes)))
    return out.reshape(np.shape(hu))


def _local_mean_std(x: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.float64)
    m = ndi.uniform_filter(x, size)
    v = ndi.uniform_filter(x * x, size) - m * m
    return m, np.sqrt(np.clip(v, 0.0, None))


def soft_tissue_roi(
    ref_hu: np.ndarray,
    *,
    hu_range: tuple[float, float] = SOFT_TISSUE_HU,
    size: int = 9,
    flat_quantile: float = 0.5,
    erode_px: int = 8,
) -> np.ndarray:
    """Bool mask of flat soft tissue inside the body, per slice.

    Args:
        ref_hu: (y, x) or (z, y, x) image the ROI is chosen on (the reference, or a smoothed image).
        hu_range: HU interval the pixel and its ``size`` x ``size`` local mean must lie in.
        size: side of the local window for mean and standard deviation.
        flat_quantile: keep candidates whose local std is at most this quantile of the candidates' local std.
        erode_px: distance from the body edge (pixels) excluded.
    """
    x = _per_slice(ref_hu)
    body = body_mask(x)
    out = np.zeros(x.shape, dtype=bool)
    lo, hi = hu_range
    for k, sl in enumerate(x):
        inner = ndi.binary_erosion(body[k], iterations=erode_px) if erode_px > 0 else body[k]
        m, s = _local_mean_std(sl, size)
        cand = inner & (m >= lo) & (m <= hi) & (sl >= lo) & (sl <= hi)
        if cand.any():
            out[k] = cand & (s <= np.quantile(s[cand], flat_quantile))
    return out.reshape(np.shape(ref_hu))


def highpass_gain(sigma: float) -> float:
    """Std of ``n - gaussian_filter(n, sigma)`` for unit white noise ``n`` (the high-pass's white-noise gain)."""
    r = int(4 * sigma + 0.5) * 2 + 1
    delta = np.zeros((2 * r + 1, 2 * r + 1))
    delta[r, r] = 1.0
    h = delta - ndi.gaussian_filter(delta, sigma)
    return float(np.sqrt(np.sum(h * h)))


def highpass_hu(img: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """(y, x) or (z, y, x) -> per-slice ``(img - gaussian_filter(img, sigma)) / highpass_gain(sigma)``:
    white noise keeps its std, smooth anatomy is removed."""
    x = _per_slice(img).astype(np.float64)
    hp = np.stack([sl - ndi.gaussian_filter(sl, sigma) for sl in x]) / highpass_gain(sigma)
    return hp.reshape(np.shape(img))


def _std(v: np.ndarray, robust: bool) -> float:
    if robust:
        return float(1.4826 * np.median(np.abs(v - np.median(v))))
    return float(np.std(v))


def noise_std_hu(
    img: np.ndarray,
    ref: np.ndarray | None = None,
    *,
    roi: np.ndarray | None = None,
    highpass_sigma: float = 2.0,
    robust: bool = False,
) -> float:
    """Noise standard deviation (HU) of ``img`` in body soft tissue.

    Args:
        img: (y, x) or (z, y, x) image in HU.
        ref: same-shape noise-free (or normal-dose) reference: std of ``img - ref`` in the ROI.
            Without it: std of :func:`highpass_hu` of ``img`` in the ROI.
        roi: bool mask; default :func:`soft_tissue_roi` of ``ref`` (or of a Gaussian-smoothed ``img``).
        highpass_sigma: Gaussian sigma (pixels) of the smoothing removed by the high-pass.
        robust: median absolute deviation (x 1.4826) instead of the plain std.

    Raises:
        ValueError: when the ROI is empty (no soft tissue found).
    """
    img = np.asarray(img, dtype=np.float64)
    if ref is not None and np.shape(ref) != img.shape:
        raise ValueError(f"img {img.shape} and ref {np.shape(ref)} differ in shape")
    if roi is None:
        src = ref if ref is not None else ndi.gaussian_filter(img, (0, 2, 2) if img.ndim == 3 else 2)
        roi = soft_tissue_roi(np.asarray(src))
    roi = np.asarray(roi, dtype=bool)
    if not roi.any():
        raise ValueError("no soft-tissue ROI found in the body (is this CT in HU?)")
    diff = img - np.asarray(ref, np.float64) if ref is not None else highpass_hu(img, highpass_sigma)
    return _std(diff[roi], robust)


def flat_region(guide: np.ndarray, erode_px: int = 8) -> np.ndarray:
    """Where NPS ROIs may lie: body soft tissue of ``guide`` ((y, x) or (z, y, x) HU; the reference when there
    is one, else the image itself), ``erode_px`` inside the body, with the Gaussian-smoothed (2 px) image in
    :data:`SOFT_TISSUE_HU`. The default region of :func:`noise_power_spectrum`."""
    src = np.stack([ndi.gaussian_filter(sl, 2) for sl in _per_slice(np.asarray(guide, dtype=np.float64))])
    lo, hi = SOFT_TISSUE_HU
    body = np.stack([ndi.binary_erosion(b, iterations=erode_px) for b in body_mask(src)])
    return (body & (src >= lo) & (src <= hi)).reshape(np.shape(guide))


def noise_correlation(img: np.ndarray, roi: np.ndarray | None = None, *, lag: int = 1,
                      highpass_sigma: float = 3.0) -> float:
    """Correlation of the noise of pixels ``lag`` apart (mean of the x and y directions), without a reference.

    The noise is the high-pass of ``img`` (minus a Gaussian of ``highpass_sigma`` pixels, which removes the
    smooth anatomy; flat tissue only: ``roi``, default :func:`soft_tissue_roi` of the smoothed image).
    About 0 for white noise; CT noise is correlated over the reconstruction kernel's width (on the AAPM-Mayo
    quarter dose: -0.03 to 0.10 with the sharp D45f kernel, 0.43 with the smooth B30f; from the true noise,
    quarter minus full dose: -0.04 to 0.06 and 0.39). NaN when the ROI is too small."""
    x = _per_slice(img).astype(np.float64)
    if roi is None:
        roi = soft_tissue_roi(np.stack([ndi.gaussian_filter(sl, 2) for sl in x]))
    m = np.asarray(roi, dtype=bool).reshape(x.shape)
    hp = np.stack([sl - ndi.gaussian_filter(sl, highpass_sigma) for sl in x])
    if m.sum() < 100:
        return float("nan")
    hp = hp - hp[m].mean()
    c0 = float(np.mean(hp[m] ** 2))
    pairs = []
    for a, b, ma, mb in ((hp[:, :, lag:], hp[:, :, :-lag], m[:, :, lag:], m[:, :, :-lag]),
                         (hp[:, lag:, :], hp[:, :-lag, :], m[:, lag:, :], m[:, :-lag, :])):
        both = ma & mb
        if both.any():
            pairs.append(float(np.mean(a[both] * b[both])))
    return float(np.mean(pairs) / c0) if pairs and c0 > 0 else float("nan")


@dataclass
class NPS:
    """A noise power spectrum. ``nps2d`` (n, n) in HU^2 mm^2 with zero frequency at the centre,
    ``freq`` (n,) its axis (cycles/mm); ``radial`` (k,) the radially averaged NPS at ``radial_freq``."""

    nps2d: np.ndarray
    freq: np.ndarray
    radial_freq: np.ndarray
    radial: np.ndarray
    n_rois: int
    pixel_spacing_mm: float

    @property
    def variance(self) -> float:
        """Integral of the NPS = noise variance (HU^2)."""
        df = float(self.freq[1] - self.freq[0])
        return float(self.nps2d.sum() * df * df)

    @property
    def mean_frequency(self) -> float:
        """NPS-weighted mean radial frequency (cycles/mm): higher means finer-grained noise."""
        fy, fx = np.meshgrid(self.freq, self.freq, indexing="ij")
        f = np.hypot(fy, fx)
        return float((f * self.nps2d).sum() / self.nps2d.sum())


def _detrend_poly2(roi: np.ndarray) -> np.ndarray:
    n = roi.shape[0]
    yy, xx = np.mgrid[0:n, 0:n] / (n - 1) - 0.5
    a = np.stack([np.ones_like(yy), yy, xx, yy * yy, xx * xx, yy * xx], -1).reshape(-1, 6)
    coef, *_ = np.linalg.lstsq(a, roi.ravel(), rcond=None)
    return roi - (a @ coef).reshape(n, n)


def nps_from_rois(rois: np.ndarray, pixel_spacing_mm: float = 1.0, detrend: str = "mean") -> NPS:
    """NPS of (N, n, n) noise ROIs: ``dx dy / (n n) * mean |FFT2(roi - trend)|^2``.

    ``detrend``: "mean" (for difference images) or "poly2" (2nd-order surface, for single images)."""
    rois = np.asarray(rois, dtype=np.float64)
    if rois.ndim != 3 or rois.shape[1] != rois.shape[2] or len(rois) == 0:
        raise ValueError(f"need (N, n, n) square ROIs, got shape {rois.shape}")
    n = rois.shape[1]
    if detrend == "mean":
        rois = rois - rois.mean(axis=(1, 2), keepdims=True)
    elif detrend == "poly2":
        rois = np.stack([_detrend_poly2(r) for r in rois])
    else:
        raise ValueError(f"detrend must be 'mean' or 'poly2', got {detrend!r}")
    power = np.abs(np.fft.fftshift(np.fft.fft2(rois), axes=(1, 2))) ** 2
    nps2d = power.mean(0) * pixel_spacing_mm**2 / (n * n)
    freq = np.fft.fftshift(np.fft.fftfreq(n, d=pixel_spacing_mm))
    rf, rad = radial_average(nps2d, freq)
    return NPS(nps2d, freq, rf, rad, len(rois), float(pixel_spacing_mm))


def radial_average(nps2d: np.ndarray, freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average a centred (n, n) spectrum over rings of width one frequency step, up to Nyquist."""
    fy, fx = np.meshgrid(freq, freq, indexing="ij")
    df = float(freq[1] - freq[0])
    ring = np.round(np.hypot(fy, fx) / df).astype(int)
    k = len(freq) // 2 + 1
    sums = np.bincount(ring.ravel(), weights=nps2d.ravel(), minlength=k)[:k]
    counts = np.bincount(ring.ravel(), minlength=k)[:k]
    return np.arange(k) * df, sums / np.maximum(counts, 1)


def noise_power_spectrum(
    img: np.ndarray,
    ref: np.ndarray | None = None,
    *,
    pixel_spacing_mm: float = 1.0,
    roi_size: int = 32,
    region: np.ndarray | None = None,
) -> NPS:
    """NPS of ``img`` (y, x) or (z, y, x) HU from square ROIs lying fully in body soft tissue.

    With ``ref``: ROIs of ``img - ref``, mean-removed. Without: ROIs of ``img``, 2nd-order detrended, the
    flatter half kept (anatomy left inside the ROIs still adds low-frequency power: a texture indicator,
    not a calibrated NPS). ``region`` (bool, same shape) overrides
    where ROIs may lie (default: body eroded by 8 px, with the smoothed image in [-100, 150] HU).

    Raises:
        ValueError: when no ROI of ``roi_size`` fits.
    """
    x = _per_slice(np.asarray(img, dtype=np.float64))
    r = None if ref is None else _per_slice(np.asarray(ref, dtype=np.float64))
    if r is not None and r.shape != x.shape:
        raise ValueError(f"img {x.shape} and ref {r.shape} differ in shape")
    region = _per_slice(np.asarray(flat_region(r if r is not None else x) if region is None else region, dtype=bool))
    noise = x - r if r is not None else x
    rois = []
    step = max(roi_size // 2, 1)
    for k in range(x.shape[0]):
        # fraction of region pixels in each roi_size square, via a summed-area table
        ii = np.pad(region[k].astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        for y0 in range(0, x.shape[1] - roi_size + 1, step):
            for x0 in range(0, x.shape[2] - roi_size + 1, step):
                y1, x1 = y0 + roi_size, x0 + roi_size
                if ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0] == roi_size * roi_size:
                    rois.append(noise[k, y0:y1, x0:x1])
    if not rois:
        raise ValueError(f"no {roi_size}x{roi_size} ROI fits inside the body soft tissue")
    stack = np.stack(rois)
    if r is None and len(stack) > 1:
        # without a reference, keep the flatter half of the ROIs (least anatomy left after detrending)
        var = np.array([_detrend_poly2(ndi.gaussian_filter(q, 2)).var() for q in stack])
        stack = stack[var <= np.median(var)]
    return nps_from_rois(stack, pixel_spacing_mm, "mean" if r is not None else "poly2")
