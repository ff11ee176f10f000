"""Write evaluation results: per-slice CSV, summary CSV/JSON, figures, and a rich table.

Files in the output folder (each written atomically)::

    per_slice.csv        one row per (method, dose, slice): ids, every metric, noise columns
    summary.csv          one row per (dose, method): means, n slices, PSNR gain over the low-dose input
    summary.json         the summary rows plus metadata (model, windows and data ranges, data, split)
    metrics_dose<D>.png  bar plots of PSNR/SSIM/RMSE (soft tissue and full window) and noise per method
    samples_dose<D>.png  low dose | output | normal dose | difference, a few slices
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ldct.atomic import atomic_file
from ldct.evaluation.core import EvalResults
from ldct.hu import DISPLAY_WINDOWS, to_display

TABLE_COLUMNS = (
    ("psnr_soft_tissue", "PSNR soft dB", "{:.2f}"),
    ("psnr_gain_soft_tissue", "gain dB", "{:+.2f}"),
    ("ssim_soft_tissue", "SSIM soft", "{:.4f}"),
    ("rmse_soft_tissue", "RMSE soft HU", "{:.1f}"),
    ("psnr_full", "PSNR full dB", "{:.2f}"),
    ("ssim_full", "SSIM full", "{:.4f}"),
    ("rmse_full", "RMSE full HU", "{:.1f}"),
    ("noise_std_hu", "noise HU", "{:.1f}"),
    ("nps_mean_f", "NPS f c/mm", "{:.3f}"),
    ("structure_score", "structure", "{:+.2f}"),
    ("hu_shift_soft", "HU shift soft", "{:+.1f}"),
)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.6g}")
    return "" if v is None else v


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in cols})
    return path


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return None if math.isnan(f) else (("inf" if f > 0 else "-inf") if math.isinf(f) else f)
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_tables(results: EvalResults, out_dir: str | Path, rows_name: str = "per_slice") -> dict[str, Path]:
    """``<rows_name>.csv`` (one row per item), ``summary.csv`` and ``summary.json`` (kind ``ldct-evaluation``,
    the meta and the summary) in ``out_dir`` (created); returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {rows_name: write_csv(results.rows, out / f"{rows_name}.csv"),
             "summary_csv": write_csv(results.summary, out / "summary.csv")}
    with atomic_file(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(_json_safe({"kind": "ldct-evaluation", **results.meta,
                                              "summary": results.summary}), indent=2) + "\n")
    paths["summary_json"] = out / "summary.json"
    return paths


def write_results(results: EvalResults, out_dir: str | Path, *, figures: bool = True) -> dict[str, Path]:
    """Write CSVs, summary.json and (optionally) figures to ``out_dir``; returns name -> path."""
    out = Path(out_dir)
    paths = write_tables(results, out)
    if results.samples:  # slices for the `ldct report` viewer (ldct.report.samples)
        from ldct.report.samples import write_samples

        paths["samples"] = write_samples(results.samples, out / "samples.npz", model=str(results.meta.get("model")))
    if figures and results.rows:
        for dose in sorted({r["dose"] for r in results.summary}):
            paths[f"metrics_{dose:g}"] = metrics_figure(results, dose, out / f"metrics_dose{dose:g}.png")
            if results.samples.get(dose):
                paths[f"samples_{dose:g}"] = samples_figure(results.samples[dose], dose,
                                                            out / f"samples_dose{dose:g}.png",
                                                            model=str(results.meta.get("model", "model")))
    return paths


def save_figure(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def metrics_figure(results: EvalResults, dose: float, path: Path) -> Path:
    """Bar plots of the summary at one dose."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results.summary if r["dose"] == dose]
    panels = [c for c in ("psnr_soft_tissue", "ssim_soft_tissue", "rmse_soft_tissue", "psnr_full", "ssim_full",
                          "noise_std_hu", "nps_mean_f", "structure_score") if c in rows[0]]
    ncol = min(4, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 4.0 * nrow), squeeze=False)
    names = [r["method"] for r in rows]
    titles = {"noise_std_hu": "noise std HU\n(soft-tissue ROI)", "nps_mean_f": "NPS mean frequency c/mm\n(flat soft tissue)",
              "structure_score": "structure removed\n(~0: noise only)"}
    for ax, col in zip(axes.ravel(), panels):
        # points, not bars: the axis is scaled to the values and need not start at 0
        for k, r in enumerate(rows):
            v = r[col]
            if np.isfinite(v):
                base = r["method"].startswith(("low-dose", "gaussian", "bm3d"))
                ax.plot([k], [v], "s" if base else "o", ms=8, color="0.45" if base else "C0")
        ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=9)
        ax.set_xlim(-0.5, len(rows) - 0.5)
        label = {"psnr": "PSNR dB", "ssim": "SSIM", "rmse": "RMSE HU"}.get(col.split("_")[0], "HU")
        win = results.meta.get("windows", {}).get(col.split("_", 1)[1], col)
        ax.set_title(titles.get(col, f"{label}\n{win}"), fontsize=10)
        ax.tick_params(axis="y", labelsize=9)
        ax.grid(alpha=0.3, axis="y")
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    counts = sorted({int(r["n"]) for r in rows})
    n_text = f"{counts[0]} slices" if len(counts) == 1 else f"{'/'.join(map(str, counts))} slices (see n)"
    fig.suptitle(f"dose {dose:g} of normal dose, {n_text} ({rows[0]['patients']}); grey squares: baselines",
                 fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def samples_figure(samples: list[dict[str, np.ndarray]], dose: float, path: Path, *, model: str = "model") -> Path:
    """Rows of low dose | output | normal dose | output - normal dose (soft display window C40/W400)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    win = DISPLAY_WINDOWS["soft"]
    n = len(samples)
    fig, axes = plt.subplots(n, 4, figsize=(12, 3.1 * n), squeeze=False)
    titles = (f"low dose ({dose:g})", model, "normal dose", f"{model} - normal dose [-100, 100] HU")
    for r, s in enumerate(samples):
        ims = (to_display(s["ld"], win), to_display(s["out"], win), to_display(s["nd"], win))
        for c, im in enumerate(ims):
            axes[r, c].imshow(im, cmap="gray", vmin=0, vmax=255)
        axes[r, 3].imshow(np.clip(s["out"] - s["nd"], -100, 100), cmap="RdBu_r", vmin=-100, vmax=100)
        for c in range(4):
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=9)
        axes[r, 0].text(2, 12, f"{s.get('patient_id')} #{s.get('slice_index')}", color="yellow", fontsize=8)
    fig.suptitle(f"display window {win.describe()}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def summary_table(results: EvalResults, title: str = "evaluation") -> Any:
    """A rich Table of the summary (one block of rows per dose)."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("dose", justify="right")
    t.add_column("method")
    t.add_column("n", justify="right")
    cols = [c for c in TABLE_COLUMNS if results.summary and c[0] in results.summary[0]]
    for _, head, _ in cols:
        t.add_column(head, justify="right")
    last = None
    for r in results.summary:
        if last is not None and r["dose"] != last:
            t.add_section()
        last = r["dose"]
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            cells.append("-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v))
        t.add_row(f"{r['dose']:g}", r["method"], str(r["n"]), *cells)
    return t
