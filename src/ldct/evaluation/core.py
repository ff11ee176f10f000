"""Score a denoiser (and classical baselines) on whole slices: :func:`evaluate`.

For every (slice, dose) of a :class:`ldct.data.SliceDataset` the rows are:

- ``low-dose``: the input itself (bicubic-upsampled to the reference size for super-resolution);
- ``gaussian``: :func:`ldct.baselines.gaussian_filter_hu` of the input (sigma in pixels, fixed);
- ``bm3d``: :func:`ldct.baselines.bm3d_hu` with the noise level estimated from the input (no oracle);
- the model (named by ``name``): a :class:`ldct.Denoiser`, run as ``ldct denoise`` runs it, with the dose
  passed to dose-conditioned networks.

Each row holds :func:`ldct.metrics.compute_metrics` (PSNR, SSIM, RMSE in HU, MSE in HU^2 in every named
window of ``ldct.hu.METRIC_WINDOWS``; both images clipped to the window, data range = window width) and
noise in body soft tissue (ROI chosen on the normal-dose image, the same pixels for every row):
``noise_std_hu`` (high-pass noise of the row's image, no reference), ``residual_std_hu`` (std of image
minus normal dose) and ``noise_std_nd_hu`` (the normal dose's own high-pass noise). Texture and structure
(``ldct.metrics.task``): ``nps_mean_f`` (cycles/mm, NPS of the row's image in the normal dose's flat soft
tissue; ``nps_mean_f_nd`` the normal dose's own: a plastic look shows as a much lower value) and
``structure_score`` (the residual input - output against the normal dose's edges: ~0 when only noise was
removed, positive when anatomy was; NaN for the input itself). HU accuracy: ``hu_shift_fat``,
``hu_shift_soft``, ``hu_shift_enhanced`` (mean of image - normal dose in flat ROIs of each tissue, HU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ldct.hu import METRIC_WINDOWS

BASELINES = ("low-dose", "gaussian", "bm3d")
GAUSSIAN_SIGMA_PX = 1.0
ID_COLUMNS = ("method", "dose", "patient_id", "slice_index", "kernel", "z_mm", "source")


@dataclass
class EvalResults:
    """Per-slice rows and per-(dose, method) means, plus a few slices kept for figures."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    metric_columns: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    samples: dict[float, list[dict[str, np.ndarray]]] = field(default_factory=dict, repr=False)
    """dose -> up to ``keep_samples`` slices of {"ld", "out", "nd"} (H, W) HU (model output)."""

    def row(self, method: str, dose: float | None = None) -> dict[str, Any]:
        """The summary row of ``method`` (at ``dose``; the only dose when None)."""
        rows = [r for r in self.summary if r["method"] == method and (dose is None or r["dose"] == dose)]
        if len(rows) != 1:
            raise KeyError(f"no single summary row for method {method!r} at dose {dose}: {len(rows)} found")
        return rows[0]


def _upsample(hu: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) HU -> (H, W) by bicubic interpolation (the super-resolution input baseline)."""
    t = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bicubic", align_corners=False)[0, 0].numpy()


def _noise(img: np.ndarray, nd: np.ndarray, roi: np.ndarray | None) -> dict[str, float]:
    from ldct.metrics.noise import noise_std_hu

    if roi is None or not roi.any():
        return {"noise_std_hu": math.nan, "residual_std_hu": math.nan}
    return {"noise_std_hu": noise_std_hu(img, roi=roi), "residual_std_hu": noise_std_hu(img, nd, roi=roi)}


def _texture(img: np.ndarray, ld: np.ndarray, nd: np.ndarray, region: np.ndarray, spacing: float | None,
             is_input: bool, curves: list | None = None) -> dict[str, float]:
    """NPS mean frequency of ``img`` in the normal dose's flat tissue ``region``, and the structure score of
    the residual ``ld - img`` against the normal dose's edges; the radial NPS is appended to ``curves``."""
    from ldct.metrics.noise import noise_power_spectrum
    from ldct.metrics.task import structure_score

    try:
        nps = noise_power_spectrum(img, pixel_spacing_mm=spacing or 1.0, region=region)
        f = nps.mean_frequency
        if curves is not None:
            curves.append((nps.radial_freq, nps.radial))
    except ValueError:
        f = math.nan
    score = math.nan if is_input or ld.shape != img.shape else structure_score(ld - img, nd)
    return {"nps_mean_f": f, "structure_score": score}


def _mean_curves(curves: dict[tuple[float, str], list]) -> list[dict[str, Any]]:
    """Per (dose, method): the radial NPS averaged over slices (same ROI size, so the same number of
    rings; the frequency axis is averaged too when pixel sizes differ)."""
    out = []
    for (dose, method), cs in sorted(curves.items(), key=lambda kv: (kv[0][0], _order(kv[0][1]))):
        n = min(len(c[0]) for c in cs)
        out.append({"dose": dose, "method": method, "slices": len(cs),
                    "freq": np.mean([c[0][:n] for c in cs], axis=0).round(5).tolist(),
                    "nps": np.mean([c[1][:n] for c in cs], axis=0).round(3).tolist()})
    return out


def evaluate(
    model: Any,
    dataset: Any,
    *,
    name: str = "model",
    doses: Sequence[float] | None = None,
    baselines: bool | Sequence[str] = True,
    windows: Sequence[str] | None = None,
    device: str = "cpu",
    tile: int | None = None,
    max_slices: int | None = None,
    bm3d_max_slices: int | None = 8,
    keep_samples: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResults:
    """Score ``model`` and the baselines on every (slice, dose) item of ``dataset``.

    Args:
        model: a :class:`ldct.Denoiser` (its window, scale, channels and dose input are used; the dose of each
            item is given to a dose-conditioned one), or None (baselines only).
        dataset: a :class:`ldct.data.SliceDataset` (anything with ``len`` and ``get_hu(i) -> (ld (C, h, w)
            HU, nd (C, H, W) HU, meta)`` where meta has ``dose``).
        name: the model's row name.
        doses: only these dose levels (default: all in the dataset).
        baselines: True (all), False, or a subset of ``("low-dose", "gaussian", "bm3d")``.
        windows: metric window names (default: all of ``ldct.hu.METRIC_WINDOWS``).
        max_slices: at most this many slices per dose (evenly spaced), None = all.
        bm3d_max_slices: BM3D (~30 s per 512x512 slice on one CPU core) on at most this many slices per
            dose (evenly spaced; the ``n`` column of the summary says how many), None = all.
        keep_samples: slices per dose kept for sample figures.
    Returns:
        :class:`EvalResults` with per-slice ``rows`` and per-(dose, method) ``summary``.
    """
    from ldct.metrics import compute_metrics
    from ldct.metrics.noise import flat_region, noise_std_hu, soft_tissue_roi
    from ldct.metrics.task import hu_accuracy, hu_rois

    wins = list(windows or METRIC_WINDOWS)
    chosen = set(BASELINES if baselines is True else () if baselines is False else baselines)
    unknown = chosen - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; known: {', '.join(BASELINES)}")
    items = _select(dataset, doses, max_slices)
    bm3d_set = {i for d in {m["dose"] for _, m in items} for i in
                spread([i for i, m in items if m["dose"] == d], bm3d_max_slices)}
    rows: list[dict[str, Any]] = []
    samples: dict[float, list[dict[str, np.ndarray]]] = {}
    timing = {"model_s": 0.0, "bm3d_s": 0.0}
    curves: dict[tuple[float, str], list] = {}
    for n_done, (i, _) in enumerate(items):
        ld, nd, meta = dataset.get_hu(i)
        ld_c, nd_c = ld[ld.shape[0] // 2], nd[nd.shape[0] // 2]
        dose = float(meta["dose"])
        ident = {k: meta.get(k) for k in ID_COLUMNS if k in meta}
        ident["dose"] = dose
        roi = soft_tissue_roi(nd_c)
        nd_noise = noise_std_hu(nd_c, roi=roi) if roi.any() else math.nan
        region = flat_region(nd_c)
        tissue = hu_rois(nd_c)
        spacing = meta.get("pixel_spacing_mm")
        nd_tex = _texture(nd_c, nd_c, nd_c, region, spacing, True, curves.setdefault((dose, "normal dose"), []))[
            "nps_mean_f"]
        outputs, ld_up = _baseline_outputs(ld_c, nd_c.shape, chosen, i in bm3d_set, timing)
        if model is not None:
            t0 = time.perf_counter()
            out = model.denoise_stack(ld, dose if model.dose_conditioned else None, tile=tile, device=device)
            timing["model_s"] += time.perf_counter() - t0
            if out.shape != nd_c.shape:
                raise ValueError(f"model output {out.shape} does not match the reference {nd_c.shape} "
                                 f"(scale {model.scale}) for {meta.get('source')}")
            outputs[name] = out
            kept = samples.setdefault(dose, [])
            if len(kept) < keep_samples:
                kept.append({"ld": ld_up, "out": out, "nd": nd_c,
                             **{k: ident.get(k) for k in ("patient_id", "slice_index")}})
        for method, img in outputs.items():
            row = {"method": method, **ident, **compute_metrics(img, nd_c, wins), **_noise(img, nd_c, roi),
                   "noise_std_nd_hu": nd_noise,
                   **_texture(img, ld_up, nd_c, region, spacing, method.startswith("low-dose"),
                              curves.setdefault((dose, method), [])),
                   "nps_mean_f_nd": nd_tex, **hu_accuracy(img, nd_c, tissue)}
            rows.append(row)
        if progress is not None:
            progress(n_done + 1, len(items))
    metric_cols = [k for k in rows[0] if k not in ID_COLUMNS] if rows else []
    meta = {"windows": {w: METRIC_WINDOWS[w].describe() for w in wins if w in METRIC_WINDOWS},
            "gaussian_sigma_px": GAUSSIAN_SIGMA_PX, "bm3d_max_slices": bm3d_max_slices, "model": name,
            "scale": model.scale if model else 1, "dose_conditioned": model.dose_conditioned if model else False,
            "n_items": len(items), "timing_s": timing,
            "nps_curves": _mean_curves({k: v for k, v in curves.items() if v})}
    return EvalResults(rows, summarize(rows, metric_cols), metric_cols, meta, samples)


def _baseline_outputs(ld_c: np.ndarray, nd_shape: tuple[int, ...], chosen: set[str], with_bm3d: bool,
                      timing: dict[str, float]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The baseline images of one (h, w) HU input at the reference size (bicubic-upsampled for
    super-resolution), and the upsampled input itself."""
    from ldct.baselines import bm3d_hu, gaussian_filter_hu

    sr = ld_c.shape != nd_shape
    ld_up = _upsample(ld_c, nd_shape) if sr else ld_c
    outputs: dict[str, np.ndarray] = {}
    if "low-dose" in chosen:
        outputs["low-dose (bicubic)" if sr else "low-dose"] = ld_up
    if "gaussian" in chosen:
        g = gaussian_filter_hu(ld_c, GAUSSIAN_SIGMA_PX)
        outputs["gaussian"] = _upsample(g, nd_shape) if sr else g
    if "bm3d" in chosen and with_bm3d:
        t0 = time.perf_counter()
        b = bm3d_hu(ld_c)
        timing["bm3d_s"] += time.perf_counter() - t0
        outputs["bm3d"] = _upsample(b, nd_shape) if sr else b
    return outputs, ld_up


def spread(idx: list[int], n: int | None) -> list[int]:
    """At most ``n`` of ``idx``, evenly spaced (all when n is None)."""
    if n is None or len(idx) <= n:
        return idx
    pick = np.unique(np.linspace(0, len(idx) - 1, n).round().astype(int))
    return [idx[k] for k in pick]


def _select(dataset: Any, doses: Sequence[float] | None, max_slices: int | None) -> list[tuple[int, dict]]:
    """(index, {dose}) of the dataset items to score."""
    if hasattr(dataset, "items"):
        metas = [{"dose": float(d)} for _, d in dataset.items]
    else:
        metas = [{"dose": float(dataset.get_hu(i)[2]["dose"])} for i in range(len(dataset))]
    keep = [(i, m) for i, m in enumerate(metas) if doses is None or any(abs(m["dose"] - d) < 1e-9 for d in doses)]
    out: list[tuple[int, dict]] = []
    for d in sorted({m["dose"] for _, m in keep}):
        idx = spread([i for i, m in keep if m["dose"] == d], max_slices)
        out.extend((i, {"dose": d}) for i in idx)
    return out


def summarize(rows: list[dict[str, Any]], metric_cols: list[str]) -> list[dict[str, Any]]:
    """Mean of every metric per (dose, method), with ``n`` slices, ``patients`` and, for PSNR, the gain
    over the low-dose input on the same slices (``psnr_gain_<window>``, dB)."""
    out = []
    keys = sorted({(r["dose"], r["method"]) for r in rows}, key=lambda k: (k[0], _order(k[1])))
    for dose, method in keys:
        rs = [r for r in rows if r["dose"] == dose and r["method"] == method]
        s: dict[str, Any] = {"dose": dose, "method": method, "n": len(rs),
                             "patients": ",".join(sorted({str(r.get("patient_id")) for r in rs}))}
        for c in metric_cols:
            vals = np.asarray([r[c] for r in rs], dtype=np.float64)
            s[c] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
        base = {_slice_key(r): r for r in rows if r["dose"] == dose and r["method"].startswith("low-dose")}
        for c in [c for c in metric_cols if c.startswith("psnr_")]:
            gains = [r[c] - base[k][c] for r in rs
                     if (k := _slice_key(r)) in base]
            s[c.replace("psnr_", "psnr_gain_")] = float(np.mean(gains)) if gains else math.nan
        out.append(s)
    return out


def _slice_key(row: dict[str, Any]) -> tuple:
    """Which slice a row scores: every identity column but method and dose (two scans of one patient in one
    folder, e.g. Mayo L067's sharp and smooth raw slices, share patient, slice index and source folder)."""
    vals = (row.get(k) for k in ID_COLUMNS if k not in ("method", "dose"))
    return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in vals)


def _order(method: str) -> tuple[int, str]:
    for k, b in enumerate(BASELINES):
        if method.startswith(b):
            return (k, method)
    return (len(BASELINES), method)
