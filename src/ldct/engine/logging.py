"""What a run reports: TensorBoard and CSV scalars, the rich progress bar, and PNG figures.

Files in the run folder (rank 0 writes them)::

    RUN/logs/tensorboard/        TensorBoard events (scalars, sample grids, figures)
    RUN/logs/csv/metrics.csv     every logged scalar, one row per step
    RUN/figures/loss.png         training loss curve(s)
    RUN/figures/val_metrics.png  validation PSNR / SSIM per window
    RUN/figures/samples/step_XXXXXXX.png   low dose | output | normal dose | difference
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ldct.atomic import atomic_file

TB_DIR = ("logs", "tensorboard")
CSV_DIR = ("logs", "csv")


def make_loggers(run_dir: Path, resume_step: int | None) -> list[Any]:
    """Fabric TensorBoard + CSV loggers writing into the run folder.

    On resume, TensorBoard purges events after ``resume_step`` and the CSV keeps only rows up to it
    (Lightning's CSV logger starts a new file; the kept rows are written into it again), so curves show
    each step once even when the steps after the last checkpoint run again.
    """
    import warnings

    from lightning.fabric.loggers import CSVLogger, TensorBoardLogger

    csv_path = run_dir.joinpath(*CSV_DIR) / "metrics.csv"
    kept = [r for r in read_history(csv_path) if r.get("step", math.inf) <= resume_step] if resume_step else []
    tb_kwargs: dict[str, Any] = {"purge_step": resume_step + 1} if resume_step is not None else {}
    tb = TensorBoardLogger(str(run_dir / TB_DIR[0]), name=TB_DIR[1], version="", default_hp_metric=False,
                           **tb_kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        csv_logger = CSVLogger(str(run_dir / CSV_DIR[0]), name=CSV_DIR[1], version="", flush_logs_every_n_steps=1)
        csv_logger.experiment  # noqa: B018  (creates the writer, which starts a fresh file)
    for row in kept:
        step = int(row.pop("step"))
        csv_logger.log_metrics(row, step=step)
    csv_logger.save()
    return [tb, csv_logger]


def read_history(path: Path) -> list[dict[str, float]]:
    """Rows of ``metrics.csv`` as floats (empty cells dropped)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: _float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# ------------------------------------------------------------------------------------------------
class TrainProgress:
    """A rich progress bar (ETA, loss, patches/s) on rank 0; plain lines when stderr is not a terminal."""

    def __init__(self, total: int, start: int, enabled: bool, patches_per_step: int):
        self.enabled = enabled
        self.patches_per_step = patches_per_step
        self.console = Console(stderr=True, soft_wrap=True)
        self.live = enabled and self.console.is_terminal
        self._t0 = time.perf_counter()
        self._s0 = start
        self._last_line = 0.0
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=self.console,
            disable=not self.live,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, info="")

    def __enter__(self) -> TrainProgress:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def rate(self, step: int) -> float:
        dt = time.perf_counter() - self._t0
        return (step - self._s0) * self.patches_per_step / dt if dt > 0 else 0.0

    def update(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        info = f"loss {scalars.get('loss', math.nan):.4g}  {self.rate(step):.1f} patches/s"
        self.progress.update(self.task, completed=step, info=info)
        now = time.perf_counter()
        if not self.live and now - self._last_line > 30.0:  # batch jobs: a line every 30 s at most
            self._last_line = now
            total = self.progress.tasks[0].total or step
            print(f"step {step}/{total:.0f}  {info}", file=sys.stderr, flush=True)

    def stage(self, text: str) -> None:
        """Say what the run is doing between steps (validation, samples) in the live bar."""
        if self.live:
            self.progress.update(self.task, info=text)

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text)


# ------------------------------------------------------------------------------------------------
# figures (matplotlib Figure objects directly: no pyplot global state, no display backend)
def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100)


def render(fig: Any) -> np.ndarray:
    """Draw a figure once: (H, W, 3) uint8 RGB (for the PNG file and TensorBoard alike)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(rgb: np.ndarray, path: Path) -> None:
    """Write an (H, W, 3) uint8 image as PNG, atomically."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def loss_figure(history: list[dict[str, float]]) -> Any | None:
    """Training loss(es) against step (log scale), with a running mean."""
    rows = [r for r in history if "loss" in r and "step" in r]
    if not rows:
        return None
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    keys = [k for k in rows[-1] if k == "loss" or k.startswith("loss_")]
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if k in r and np.isfinite(r[k])]
        if not pts:
            continue
        s, v = np.array(pts).T
        ax.plot(s, v, lw=0.8, alpha=0.5 if k == "loss" else 0.8, label=k)
        if k == "loss" and len(v) >= 5:
            n = max(2, len(v) // 20)
            ax.plot(s[n - 1:], np.convolve(v, np.ones(n) / n, mode="valid"), lw=1.5, label=f"loss (mean of {n})")
    if all(np.all(np.array([r[k] for r in rows if k in r]) > 0) for k in keys):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.15, top=0.95)
    return fig


def val_figure(history: list[dict[str, float]]) -> Any | None:
    """Validation PSNR and SSIM per HU window against step."""
    rows = [r for r in history if any(k.startswith("val/") for k in r)]
    if not rows:
        return None
    fig = _figure(9, 3.5)
    axes = fig.subplots(1, 2)
    for ax, metric, unit in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for k in sorted({k for r in rows for k in r if k.startswith(f"val/{metric}_")}):
            pts = np.array([(r["step"], r[k]) for r in rows if k in r])
            ax.plot(pts[:, 0], pts[:, 1], marker="o", ms=3, label=k.split("/", 1)[1])
        for k in sorted({k for r in rows for k in r if k.startswith(f"val/input_{metric}_")}):
            pts = np.array([(r["step"], r[k]) for r in rows if k in r])
            ax.plot(pts[:, 0], pts[:, 1], ls="--", lw=1, label=k.split("/", 1)[1] + " (low dose)")
        ax.set_xlabel("step")
        ax.set_ylabel(f"validation {unit}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.95, wspace=0.3)
    return fig


def sample_figure(ld: np.ndarray, out: np.ndarray, nd: np.ndarray, *, step: int, window: Any,
                  diff_hu: float = 100.0) -> Any:
    """Grid of (n, H, W) HU slices: low dose | output | normal dose | output - normal dose.

    Images use the display ``window`` (a :class:`ldct.hu.Window`); the difference is shown in
    [-diff_hu, diff_hu] HU.
    """
    n = ld.shape[0]
    fig = _figure(12, 3.1 * n)
    axes = np.atleast_2d(fig.subplots(n, 4))
    titles = ("low dose", f"output (step {step})", "normal dose", "output - normal dose")
    for i in range(n):
        for j, img in enumerate((ld[i], out[i], nd[i])):
            axes[i, j].imshow(img, cmap="gray", vmin=window.lo, vmax=window.hi)
        axes[i, 3].imshow(out[i] - nd[i], cmap="coolwarm", vmin=-diff_hu, vmax=diff_hu)
        for j in range(4):
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(titles[j], fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.12 / n, wspace=0.02, hspace=0.02)
    fig.suptitle(f"{window.describe()} display; difference in [-{diff_hu:g}, {diff_hu:g}] HU (blue: output darker)",
                 fontsize=9)
    return fig

