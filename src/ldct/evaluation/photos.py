"""``ldct evaluate`` for a model trained on photographs (``data.kind: photos``): :func:`evaluate_photo_run`.

The run's held-out files (``split.json``, split by file; ``--split all`` = every photo in DATA) are read
whole and given the same fixed-seed image-domain noise as the run's test set
(:meth:`ldct.data.photos.PhotoDataset.whole`: ``data.sim`` of the recipe, seed ``data.seed``, per file
id). Rows per image:

- ``noisy``: the noisy input itself;
- ``gaussian``: :func:`ldct.baselines.gaussian_filter_hu` per channel (sigma ``GAUSSIAN_SIGMA_PX`` px);
- the model (``method/network``), run by :meth:`ldct.Denoiser.photo` as ``ldct denoise`` runs it.

Metrics (:func:`ldct.metrics.photo_metrics`) on intensities, not HU: PSNR and SSIM with ``data_range``
= the file's full scale (255 for 8-bit files, 65535 for 16-bit), SSIM per colour channel and averaged
(scikit-image's ``channel_axis``), RMSE/MSE in intensity units. Every image is clipped to [0, full scale]
(as the written PNG is); nothing is rounded.

Files written to the output folder (atomically): ``per_image.csv``, ``summary.csv`` (mean per method,
``psnr_gain`` over the noisy input on the same images), ``summary.json`` (kind ``ldct-evaluation``,
``data_kind: photos``, noise, data range, files) and ``samples.png`` (noisy | gaussian | model | clean).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ldct.errors import LdctError
from ldct.evaluation.core import GAUSSIAN_SIGMA_PX, EvalResults, spread
from ldct.evaluation.report import save_figure, write_tables
from ldct.metrics.image import PHOTO_METRICS

PHOTO_BASELINES = ("noisy", "gaussian")
TABLE_COLUMNS = (("psnr", "PSNR dB", "{:.2f}"), ("psnr_gain", "gain dB", "{:+.2f}"), ("ssim", "SSIM", "{:.4f}"),
                 ("rmse", "RMSE", "{:.2f}"))


def describe_noise(sim: dict[str, Any]) -> str:
    if sim.get("mode") == "poisson-gaussian":
        gain, sigma = float(sim.get("gain") or 0), float(sim.get("sigma") or 0)
        return f"poisson-gaussian, gain {gain:g}, sigma {sigma:g} (0..255 units)"
    return f"gaussian, sigma {float(sim.get('sigma') or 0):g} (0..255 units)"


def evaluate_photos(
    model: Any,
    dataset: Any,
    *,
    name: str = "model",
    baselines: bool | Sequence[str] = True,
    device: str = "cpu",
    tile: int | None = None,
    max_images: int | None = None,
    keep_samples: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, np.ndarray]], dict[str, float]]:
    """Per-image rows, per-method summary, kept samples and timing for a whole-image
    :class:`ldct.data.photos.PhotoDataset` (``model``: a photo :class:`ldct.Denoiser`, or None)."""
    from ldct.baselines import gaussian_filter_hu
    from ldct.metrics import photo_metrics

    chosen = set(PHOTO_BASELINES if baselines is True else () if baselines is False else baselines)
    if chosen - set(PHOTO_BASELINES):
        raise ValueError(f"unknown baselines {sorted(chosen - set(PHOTO_BASELINES))}; known: {PHOTO_BASELINES}")
    idx = spread(list(range(len(dataset))), max_images)
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, np.ndarray]] = []
    timing = {"model_s": 0.0}
    for n, k in enumerate(idx):
        noisy, clean, scale = dataset.whole(k)
        if min(clean.shape[1:]) < 11:
            raise LdctError(f"image of {clean.shape[1]}x{clean.shape[2]} pixels is too small for SSIM (11x11 window)",
                            dataset.paths[k])
        outputs: dict[str, np.ndarray] = {}
        if "noisy" in chosen:
            outputs["noisy"] = noisy
        if "gaussian" in chosen:
            outputs["gaussian"] = np.clip(gaussian_filter_hu(noisy, GAUSSIAN_SIGMA_PX), 0.0, scale)
        if model is not None:
            t0 = time.perf_counter()
            outputs[name] = model.for_full_scale(scale).photo(noisy, tile=tile, device=device)
            timing["model_s"] += time.perf_counter() - t0
        ident = {"image": dataset.ids[k], "file": str(dataset.paths[k]), "height": int(clean.shape[1]),
                 "width": int(clean.shape[2]), "channels": int(clean.shape[0]), "data_range": scale}
        for method, img in outputs.items():
            rows.append({"method": method, **ident, **photo_metrics(img, clean, scale)})
        if len(samples) < keep_samples:
            samples.append({"image": dataset.ids[k], "clean": clean, "scale": scale, **outputs})
        if progress is not None:
            progress(n + 1, len(idx))
    return rows, summarize_photos(rows), samples, timing


def summarize_photos(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of every metric per method, ``n`` images, and ``psnr_gain``: PSNR minus the noisy input's on
    the same images (dB)."""
    order = {m: i for i, m in enumerate(PHOTO_BASELINES)}
    methods = sorted({r["method"] for r in rows}, key=lambda m: (order.get(m, len(order)), m))
    noisy = {r["image"]: r["psnr"] for r in rows if r["method"] == "noisy"}
    out = []
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        s: dict[str, Any] = {"method": m, "n": len(rs)}
        for c in PHOTO_METRICS:
            vals = np.asarray([r[c] for r in rs], dtype=np.float64)
            s[c] = float(np.mean(vals)) if np.isfinite(vals).all() else math.nan
        gains = [r["psnr"] - noisy[r["image"]] for r in rs if r["image"] in noisy]
        s["psnr_gain"] = float(np.mean(gains)) if gains else math.nan
        s["images"] = ",".join(r["image"] for r in rs)
        out.append(s)
    return out


def samples_figure(samples: list[dict[str, np.ndarray]], path: Path, *, model: str) -> Path:
    """Rows of noisy | gaussian | model | clean for a few images (8-bit display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in ("noisy", "gaussian", model, "clean") if c in samples[0]]
    fig, axes = plt.subplots(len(samples), len(cols), figsize=(3 * len(cols), 3 * len(samples)), squeeze=False)
    for r, s in enumerate(samples):
        for c, key in enumerate(cols):
            img = np.clip(np.asarray(s[key], dtype=np.float64) * (255.0 / s["scale"]), 0, 255).astype(np.uint8)
            ax = axes[r, c]
            ax.imshow(np.moveaxis(img, 0, -1) if img.shape[0] == 3 else img[0], cmap=None if img.shape[0] == 3
                      else "gray", vmin=0, vmax=255)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(key, fontsize=9)
        axes[r, 0].text(1, 4, str(s["image"]), color="yellow", fontsize=8, va="top")
    fig.tight_layout()
    return save_figure(fig, path)


def photo_summary_table(results: EvalResults, title: str = "evaluation", caption: str | None = None) -> Any:
    """A rich Table of a photo evaluation's summary."""
    from rich.table import Table

    t = Table(title=title, caption=caption)
    t.add_column("method")
    t.add_column("n", justify="right")
    for _, head, _ in TABLE_COLUMNS:
        t.add_column(head, justify="right")
    for r in results.summary:
        cells = []
        for key, _, fmt in TABLE_COLUMNS:
            v = r.get(key)
            cells.append("-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v))
        t.add_row(r["method"], str(r["n"]), *cells)
    return t


def evaluate_photo_run(
    model: Any,
    meta: dict[str, Any],
    model_path: Path,
    data: Path,
    *,
    run_dir: Path | None,
    out: str | Path | None = None,
    doses: Sequence[float] | None = None,
    baselines: bool | Sequence[str] = True,
    split: str = "test",
    device: str = "cpu",
    max_images: int | None = None,
    tile: int | None = None,
    figures: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[EvalResults, Path]:
    """:func:`ldct.evaluation.run.evaluate_run` for a photo model (see the module docstring)."""
    from ldct.data.photos import PhotoDataset, find_photos
    from ldct.denoiser import resolve_device
    from ldct.evaluation.runs import choose_part, default_out_dir, model_name, run_data_config

    if doses:
        raise LdctError("--doses does not apply to a model trained on photographs (the noise is the recipe's "
                        "data.sim)")
    cfg = run_data_config(meta, data, model_path)
    try:
        files = find_photos(data, cfg.include, cfg.exclude)
    except LdctError:
        raise LdctError("the model was trained on photographs, but this holds no PNG/JPG photographs "
                        "(for CT use a CT model)", data) from None
    ids, run_split = choose_part(list(files), split=split, run_dir=run_dir, recipe_split=cfg.split, data=data,
                                 noun="photographs")
    ds = PhotoDataset({k: files[k] for k in ids}, sim=cfg.sim, channels=cfg.channels, patch_size=None, seed=cfg.seed)
    net = meta.get("network") or {}
    name = model_name(meta)
    dev = resolve_device(device)
    rows, summary, samples, timing = evaluate_photos(model, ds, name=name, baselines=baselines,
                                                     device=dev, tile=tile, max_images=max_images,
                                                     progress=progress)
    ranges = sorted({float(r["data_range"]) for r in rows})
    scored = [k for k in ids if any(r["image"] == k for r in rows)]  # --max-slices may keep fewer
    trained_on = sorted(set(scored) & set(run_split.train)) if run_split else []
    results = EvalResults(rows, summary, list(PHOTO_METRICS), meta={
        "model": name, "data_kind": "photos", "checkpoint": str(model_path),
        "run_dir": str(run_dir) if run_dir else None, "step": meta.get("step"), "network": net, "data": str(data),
        "split": split, "split_by": "file", "images": scored, "patients": [],
        "images_in_training_set": trained_on, "noise": dict(cfg.sim), "noise_description": describe_noise(cfg.sim),
        "noise_seed": cfg.seed, "channels": cfg.channels, "data_range": ranges,
        "metrics": {"psnr": "PSNR dB, data_range = the file's full scale (255 for 8-bit)",
                    "ssim": "SSIM (11x11 Gaussian window, sigma 1.5, per channel, averaged), same data_range",
                    "rmse": "RMSE in intensity units (0..255 for 8-bit)", "mse": "MSE in intensity units^2"},
        "gaussian_sigma_px": GAUSSIAN_SIGMA_PX, "n_items": len(scored), "timing_s": timing,
    })
    if trained_on:
        results.meta.setdefault("warnings", []).append(
            f"{len(trained_on)} evaluated photograph(s) were in the model's training set ({', '.join(trained_on[:5])}"
            f"{', ...' if len(trained_on) > 5 else ''})")
    out_dir = default_out_dir(out, run_dir, model_path, split)
    write_photo_results(results, samples, out_dir, figures=figures)
    return results, out_dir


def write_photo_results(results: EvalResults, samples: list[dict[str, np.ndarray]], out_dir: Path, *,
                        figures: bool = True) -> dict[str, Path]:
    """``per_image.csv``, ``summary.csv``, ``summary.json`` and (``figures``) ``samples.png``."""
    paths = write_tables(results, out_dir, "per_image")
    if figures and samples:
        paths["samples"] = samples_figure(samples, Path(out_dir) / "samples.png", model=str(results.meta.get("model")))
    return paths
