"""Report plots (matplotlib ``Figure`` objects, no pyplot state) rendered to PNG bytes.

Training curves reuse the engine's figures (``ldct.engine.logging.loss_figure`` / ``val_figure``) so the
report and the run folder show the same thing; the per-dose metric plot is drawn here from
``per_slice.csv`` (mean and standard deviation over slices, per method).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from ldct.report.data import Figure


def png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """A matplotlib Figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def training_figures(history: list[dict[str, float]]) -> list[Figure]:
    """Loss curves and validation metric curves from a run's ``metrics.csv`` rows."""
    from ldct.engine.logging import loss_figure, val_figure

    out = []
    fig = loss_figure(history)
    if fig is not None:
        out.append(Figure("training loss", png_bytes(fig), "per step, with a running mean"))
    fig = val_figure(history)
    if fig is not None:
        out.append(Figure("validation metrics", png_bytes(fig), "per HU window; dashed: the low-dose input"))
    return out


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def metric_vs_dose_figure(rows: list[dict[str, Any]], metrics: list[tuple[str, str]]) -> Figure | None:
    """Mean +- std over slices of each metric against dose, one line per method.

    Args:
        rows: per-slice rows with ``method``, ``dose`` and the metric columns.
        metrics: (column, axis label) pairs, one subplot each (columns absent from the rows are skipped).
    """
    from matplotlib.figure import Figure as MplFigure

    metrics = [(c, lab) for c, lab in metrics if any(np.isfinite(_num(r.get(c))) for r in rows)]
    if not rows or not metrics:
        return None
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    doses = sorted({_num(r["dose"]) for r in rows})
    fig = MplFigure(figsize=(5.6 * len(metrics), 4.4), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    if len(doses) == 1:  # one dose: a point per method (no bars: an axis that does not start at 0 misleads)
        for ax, (col, label) in zip(axes, metrics):
            for k, m in enumerate(methods):
                v = np.asarray([_num(r.get(col)) for r in rows if r["method"] == m])
                v = v[np.isfinite(v)]
                if len(v):
                    base = m.startswith(("low-dose", "gaussian", "bm3d"))
                    ax.errorbar([k], [v.mean()], yerr=[v.std()], marker="s" if base else "o", ms=7, capsize=4,
                                color="#6e7781" if base else "#1f6feb")
            ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right", fontsize=10)
            ax.set_xlim(-0.5, len(methods) - 0.5)
            ax.set_ylabel(label, fontsize=11)
            ax.tick_params(axis="y", labelsize=10)
            ax.grid(alpha=0.3, axis="y")
        return Figure(f"metrics at dose {doses[0]:g}", png_bytes(fig), "mean \u00b1 std over slices; grey squares: baselines")
    for ax, (col, label) in zip(axes, metrics):
        for m in methods:
            xs, ys, es = [], [], []
            for d in doses:
                v = np.asarray([_num(r.get(col)) for r in rows if r["method"] == m and _num(r["dose"]) == d])
                v = v[np.isfinite(v)]
                if len(v):
                    xs.append(d)
                    ys.append(v.mean())
                    es.append(v.std())
            if xs:
                style = "--" if m.startswith(("low-dose", "gaussian", "bm3d")) else "-"
                ax.errorbar(xs, ys, yerr=es, marker="o", ms=5, capsize=3, ls=style, label=m)
        ax.set_xlabel("dose (fraction of normal dose)", fontsize=11)
        ax.set_ylabel(label, fontsize=11)
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=9)
    caption = "mean \u00b1 std over slices; dashed lines: baselines"
    return Figure("metrics against dose", png_bytes(fig), caption)


def nps_figure(curves: list[dict[str, Any]]) -> Figure | None:
    """Radial NPS per method, one panel per dose (what ``ldct evaluate`` stores as ``nps_curves``): a curve
    far below the normal dose's at high frequencies is a smoother, plastic texture."""
    from matplotlib.figure import Figure as MplFigure

    good = [c for c in curves if isinstance(c, dict) and c.get("freq") and c.get("nps")]
    if not good:
        return None
    doses = sorted({_num(c.get("dose")) for c in good})
    fig = MplFigure(figsize=(5.6 * len(doses), 4.4), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(doses)))
    for ax, d in zip(axes, doses):
        for c in [c for c in good if _num(c.get("dose")) == d]:
            m = str(c.get("method"))
            style = ":" if m == "normal dose" else "--" if m.startswith(("low-dose", "gaussian", "bm3d")) else "-"
            ax.plot(c["freq"], c["nps"], ls=style, lw=2 if style == "-" else 1.4, label=m)
        ax.set_yscale("log")
        ax.set_xlabel("spatial frequency (cycles/mm)", fontsize=11)
        ax.set_ylabel("NPS (HU$^2$ mm$^2$)", fontsize=11)
        ax.set_title(f"dose {d:g}", fontsize=11)
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=9)
    return Figure("noise power spectra", png_bytes(fig),
                  "radial NPS in the normal dose's flat soft tissue (2nd-order-detrended 32 px ROIs; residual "
                  "anatomy adds low-frequency power to every row alike): dotted = normal dose, dashed = baselines")
