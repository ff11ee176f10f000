"""Task-based image quality: what medical physicists measure beyond PSNR (AAPM TG-233, the FDA's
low-contrast detectability method).

- :func:`noise_texture`: noise std and NPS peak / mean frequency of an image in flat soft tissue, without
  a reference (a texture indicator: a denoiser that smooths too much shows its NPS at low frequencies).
- :func:`hu_accuracy`: mean CT-number shift against the reference in flat ROIs of fat, soft tissue and
  contrast-enhanced vessels (:data:`HU_CLASSES`).
- :func:`insert_disk`, :func:`ttf_disk`: the task transfer function (TTF, MTF50/MTF10) of a circular edge
  of known contrast (the circular-edge method of TG-233: radial edge spread function oversampled in 0.1 px
  bins, differentiated, Hann-windowed, Fourier transformed).
- :func:`cho_dprime`, :func:`npw_dprime`: detectability index d' of a signal from signal-present and
  signal-absent ROIs: channelized Hotelling observer with Laguerre-Gauss channels
  (:func:`laguerre_gauss_channels`) and the non-prewhitening matched filter.
- :func:`structure_score`: how much anatomy a denoiser removed ("method noise"): the correlation between the
  local energy of the residual (input - output) and the edges of the image; ~0 when only noise was removed.

All take HU arrays (numpy) and pixel spacing in mm where frequencies are involved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ldct.metrics.noise import body_mask, flat_region, noise_power_spectrum, noise_std_hu, soft_tissue_roi


# --- noise texture ----------------------------------------------------------------------------------------
@dataclass
class NoiseTexture:
    """Noise std (HU, Gaussian high-pass in flat soft tissue) and NPS peak / mean frequency (cycles/mm,
    2nd-order-detrended 32 px ROIs in the flatter half of the soft tissue); NaN where not measurable."""

    std_hu: float
    nps_peak: float
    nps_mean_f: float
    radial_freq: np.ndarray | None = None
    radial: np.ndarray | None = None

    def to_dict(self) -> dict[str, float]:
        return {"noise_hu": self.std_hu, "nps_peak": self.nps_peak, "nps_mean_f": self.nps_mean_f}


def noise_texture(img: np.ndarray, spacing_mm: float, guide: np.ndarray | None = None) -> NoiseTexture:
    """:class:`NoiseTexture` of ``img`` ((y, x) or (z, y, x) HU) in the flat soft tissue of ``guide`` (the
    reference when there is one, so that every method is measured in the same place; default ``img``)."""
    g = img if guide is None else guide
    src = ndi.gaussian_filter(np.asarray(g, np.float32), (0, 2, 2) if np.ndim(g) == 3 else 2)
    roi = soft_tissue_roi(src)
    std = noise_std_hu(img, roi=roi) if np.any(roi) else math.nan
    try:
        nps = noise_power_spectrum(img, pixel_spacing_mm=spacing_mm, region=flat_region(g))
    except ValueError:
        return NoiseTexture(std, math.nan, math.nan)
    k = int(np.argmax(nps.radial[1:])) + 1  # skip the zero frequency
    return NoiseTexture(std, float(nps.radial_freq[k]), nps.mean_frequency, nps.radial_freq, nps.radial)


# --- HU accuracy ------------------------------------------------------------------------------------------
#: tissue classes of :func:`hu_accuracy`: HU range of the (smoothed) reference
HU_CLASSES: dict[str, tuple[float, float]] = {
    "fat": (-150.0, -60.0),
    "soft": (0.0, 100.0),          # organs, muscle
    "enhanced": (150.0, 400.0),    # contrast-filled vessels (and trabecular bone)
}


def hu_rois(ref: np.ndarray, classes: dict[str, tuple[float, float]] | None = None) -> dict[str, np.ndarray]:
    """Flat ROIs per tissue class, chosen on the Gaussian-smoothed (2 px) reference: inside the body, 4 px from
    its edge, the pixel and its 9x9 mean in the class's HU range, the flatter half (``soft_tissue_roi``)."""
    g = ndi.gaussian_filter(np.asarray(ref, np.float32), (0, 2, 2) if np.ndim(ref) == 3 else 2)
    return {k: soft_tissue_roi(g, hu_range=r, erode_px=4) for k, r in (classes or HU_CLASSES).items()}


def hu_accuracy(img: np.ndarray, ref: np.ndarray, rois: dict[str, np.ndarray] | None = None,
                min_pixels: int = 50) -> dict[str, float]:
    """Mean HU shift of ``img`` against ``ref`` per tissue class (``hu_shift_<class>``, HU; NaN when the
    class has fewer than ``min_pixels`` ROI pixels): a denoiser must not move CT numbers."""
    rois = hu_rois(ref) if rois is None else rois
    d = np.asarray(img, np.float64) - np.asarray(ref, np.float64)
    return {f"hu_shift_{k}": float(d[m].mean()) if m.sum() >= min_pixels else math.nan for k, m in rois.items()}


# --- resolution: task transfer function ---------------------------------------------------------------
def insert_disk(img: np.ndarray, center_yx: tuple[float, float], radius_px: float, contrast_hu: float, *,
                supersample: int = 8) -> np.ndarray:
    """``img`` + a disk of ``contrast_hu`` (partial-volume edge: each pixel gets the disk's area fraction,
    from ``supersample``^2 sub-pixels). A copy; (y, x) or (z, y, x) (the same disk on every slice)."""
    out = np.array(img, dtype=np.float32, copy=True)
    cy, cx = center_yx
    r = radius_px
    y0, y1 = max(0, int(math.floor(cy - r - 1))), min(out.shape[-2], int(math.ceil(cy + r + 2)))
    x0, x1 = max(0, int(math.floor(cx - r - 1))), min(out.shape[-1], int(math.ceil(cx + r + 2)))
    s = supersample
    sub = (np.arange(s) + 0.5) / s - 0.5
    yy = (np.arange(y0, y1)[:, None] + sub[None, :]).reshape(-1)
    xx = (np.arange(x0, x1)[:, None] + sub[None, :]).reshape(-1)
    inside = ((yy[:, None] - cy) ** 2 + (xx[None, :] - cx) ** 2) <= r * r
    frac = inside.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
    out[..., y0:y1, x0:x1] += contrast_hu * frac.astype(np.float32)
    return out


@dataclass
class TTF:
    """Task transfer function of a circular edge: ``ttf`` at ``freq`` (cycles/mm), normalised to 1 at 0;
    MTF50 and MTF10 (cycles/mm, NaN when not reached); the measured contrast (HU) and the oversampled edge
    spread function (``esf_r`` px from the centre, ``esf`` HU)."""

    freq: np.ndarray
    ttf: np.ndarray
    mtf50: float
    mtf10: float
    contrast_hu: float
    esf_r: np.ndarray
    esf: np.ndarray


def _crossing(freq: np.ndarray, curve: np.ndarray, level: float) -> float:
    below = np.nonzero(curve < level)[0]
    if len(below) == 0 or below[0] == 0:
        return math.nan
    k = int(below[0])
    f0, f1, c0, c1 = freq[k - 1], freq[k], curve[k - 1], curve[k]
    return float(f0 + (c0 - level) * (f1 - f0) / (c0 - c1))


def ttf_disk(img: np.ndarray, center_yx: tuple[float, float], radius_px: float, spacing_mm: float, *,
             bin_px: float = 0.1, half_width_px: float | None = None) -> TTF:
    """TTF of the circular edge of a disk of radius ``radius_px`` centred at ``center_yx`` (px) in ``img``
    ((y, x), or (n, y, x) realisations averaged into one edge spread function, which lowers the noise).

    The radial ESF is the mean HU in ``bin_px`` rings from ``radius - half_width`` to ``radius + half_width``
    (default: the radius, at most 20 px); its derivative (the LSF) is Hann-windowed and Fourier transformed.
    """
    a = np.asarray(img, dtype=np.float64)
    a = a[None] if a.ndim == 2 else a
    hw = float(half_width_px if half_width_px is not None else min(radius_px, 20.0))
    if hw < 3:
        raise ValueError(f"the disk is too small for a TTF (radius {radius_px} px; at least 3 px each side)")
    cy, cx = center_yx
    y0, y1 = int(max(0, cy - radius_px - hw - 1)), int(min(a.shape[1], cy + radius_px + hw + 2))
    x0, x1 = int(max(0, cx - radius_px - hw - 1)), int(min(a.shape[2], cx + radius_px + hw + 2))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d = np.hypot(yy - cy, xx - cx)
    lo, hi = radius_px - hw, radius_px + hw
    sel = (d >= lo) & (d < hi)
    n_bins = int(round((hi - lo) / bin_px))
    idx = np.minimum(((d[sel] - lo) / bin_px).astype(int), n_bins - 1)
    vals = a[:, y0:y1, x0:x1][:, sel].mean(0)
    sums = np.bincount(idx, weights=vals, minlength=n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    r = lo + (np.arange(n_bins) + 0.5) * bin_px
    ok = counts > 0
    esf = np.interp(r, r[ok], sums[ok] / counts[ok])
    lsf = -np.gradient(esf, bin_px)  # disk brighter than the background: positive LSF at the edge
    contrast = float(esf[r < radius_px - 2].mean() - esf[r > radius_px + 2].mean())
    if contrast < 0:
        lsf = -lsf
    lsf = lsf * np.hanning(n_bins)
    n_fft = 1 << int(math.ceil(math.log2(4 * n_bins)))
    spec = np.abs(np.fft.rfft(lsf, n=n_fft))
    freq = np.fft.rfftfreq(n_fft, d=bin_px * spacing_mm)
    keep = freq <= 0.5 / spacing_mm  # up to the image's Nyquist frequency
    ttf = spec[keep] / spec[0] if spec[0] > 0 else spec[keep] * math.nan
    f = freq[keep]
    return TTF(f, ttf, _crossing(f, ttf, 0.5), _crossing(f, ttf, 0.1), abs(contrast), r, esf)


# --- detectability ------------------------------------------------------------------------------------------
def laguerre_gauss_channels(size: int, n_channels: int = 6, width_px: float = 8.0) -> np.ndarray:
    """(n_channels, size, size) Laguerre-Gauss channels centred in a ``size`` ROI:
    ``u_j(r) = sqrt(2)/a exp(-pi r^2/a^2) L_j(2 pi r^2/a^2)`` with ``a = width_px`` (unit norm)."""
    from scipy.special import eval_laguerre

    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    r2 = (yy - c) ** 2 + (xx - c) ** 2
    g = 2 * math.pi * r2 / width_px**2
    out = np.stack([math.sqrt(2) / width_px * np.exp(-g / 2) * eval_laguerre(j, g) for j in range(n_channels)])
    return out / np.linalg.norm(out.reshape(n_channels, -1), axis=1)[:, None, None]


def cho_dprime(present: np.ndarray, absent: np.ndarray, *, channels: np.ndarray | None = None,
               radius_px: float | None = None, n_channels: int = 6) -> float:
    """Detectability index of the channelized Hotelling observer: ``sqrt(dv^T S^-1 dv)`` with ``v`` the channel
    outputs of the (N, n, n) signal-present and (M, n, n) signal-absent ROIs, ``dv`` the difference of their
    means and ``S`` the mean of their covariances. Channels: Laguerre-Gauss of width 1.5 x ``radius_px``
    (the signal's; default n/8) unless given. Estimated on the ROIs themselves (resubstitution: slightly
    optimistic for few ROIs; use at least 10 ROIs per channel and class)."""
    p, q = np.asarray(present, np.float64), np.asarray(absent, np.float64)
    if p.ndim != 3 or q.ndim != 3 or p.shape[1:] != q.shape[1:]:
        raise ValueError(f"need (N, n, n) ROIs of one size, got {p.shape} and {q.shape}")
    n = p.shape[-1]
    if channels is None:
        channels = laguerre_gauss_channels(n, n_channels, 1.5 * (radius_px if radius_px else n / 8))
    u = np.asarray(channels, np.float64).reshape(len(channels), -1)
    vp, vq = p.reshape(len(p), -1) @ u.T, q.reshape(len(q), -1) @ u.T
    if min(len(vp), len(vq)) <= len(u):
        raise ValueError(f"need more ROIs than channels ({len(u)}) in each class, got {len(vp)} and {len(vq)}")
    dv = vp.mean(0) - vq.mean(0)
    s = 0.5 * (np.cov(vp, rowvar=False) + np.cov(vq, rowvar=False))
    return float(math.sqrt(max(float(dv @ np.linalg.solve(s, dv)), 0.0)))


def npw_dprime(present: np.ndarray, absent: np.ndarray, signal: np.ndarray | None = None) -> float:
    """Detectability index of the non-prewhitening matched filter: template ``signal`` (the expected
    signal, (n, n); default the difference of the ROI means), ``d' = (mean t_p - mean t_a) / sqrt((var t_p +
    var t_a) / 2)``."""
    p, q = np.asarray(present, np.float64), np.asarray(absent, np.float64)
    w = (p.mean(0) - q.mean(0)) if signal is None else np.asarray(signal, np.float64)
    tp, tq = (p * w).sum(axis=(1, 2)), (q * w).sum(axis=(1, 2))
    return float((tp.mean() - tq.mean()) / math.sqrt(0.5 * (tp.var(ddof=1) + tq.var(ddof=1))))


# --- structure removed -------------------------------------------------------------------------------------
def structure_score(residual: np.ndarray, guide: np.ndarray, *, mask: np.ndarray | None = None,
                    edge_sigma: float = 1.5, energy_sigma: float = 3.0) -> float:
    """How much anatomy a residual (input - output, HU) holds: the Pearson correlation, over the body of
    ``guide``, between the residual's local energy (Gaussian-smoothed square, ``energy_sigma`` px) and the
    edge strength of ``guide`` (gradient magnitude after a Gaussian of ``edge_sigma`` px). ``guide`` is the
    reference when there is one, else the output. ~0 for a residual of noise only (its energy does not follow
    edges); a denoiser that blurs edges leaves its removed anatomy along them (clearly positive)."""
    r = np.asarray(residual, np.float64)
    g = np.asarray(guide, np.float64)
    if r.shape != g.shape:
        raise ValueError(f"residual {r.shape} and guide {g.shape} differ in shape")
    r2, g2 = (r[None], g[None]) if r.ndim == 2 else (r, g)
    m = np.asarray(body_mask(g2)).reshape(g2.shape) if mask is None else np.asarray(mask, bool).reshape(g2.shape)
    scores = []
    for rs, gs, ms in zip(r2, g2, m, strict=True):
        ms = ndi.binary_erosion(ms, iterations=4)
        if ms.sum() < 100:
            continue
        energy = ndi.gaussian_filter(rs * rs, energy_sigma)
        edges = ndi.gaussian_gradient_magnitude(gs, edge_sigma)
        e, k = energy[ms], edges[ms]
        if e.std() == 0 or k.std() == 0:
            continue
        scores.append(float(np.corrcoef(e, k)[0, 1]))
    return float(np.mean(scores)) if scores else math.nan
