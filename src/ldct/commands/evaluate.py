"""``ldct evaluate RUN_DIR_OR_CHECKPOINT --data DATA``: score a model and baselines (thin wrapper)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        model: Path = typer.Argument(..., help="Run folder (its best checkpoint), checkpoint folder, exported "
                                               "model folder, weights .safetensors or a bundled model name "
                                               "(default)."),
        data: Path = typer.Option(..., "--data", help="Data to score on: CT scans (low dose simulated), a "
                                                       "simulation manifest folder or real full/low-dose folders "
                                                       "(scored on the real low dose); for a photo model a "
                                                       "folder of PNG/JPG photographs."),
        out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: RUN_DIR/eval_<split>)."),
        doses: list[float] = typer.Option(None, "--doses", help="Dose levels (fractions of normal dose); "
                                                                "repeatable. Default: the recipe's."),
        baselines: bool = typer.Option(True, "--baselines/--no-baselines",
                                       help="Add low-dose input, Gaussian filter and BM3D rows."),
        split: str = typer.Option("test", "--split", help="test | val | train (patients of the run's "
                                                          "split.json) or all (every patient in DATA)."),
        device: str = typer.Option("cpu", "--device", help="auto, cpu or cuda."),
        max_slices: int = typer.Option(None, "--max-slices", help="At most N slices per dose (evenly spaced); "
                                                                  "photographs: at most N images."),
        bm3d_slices: int = typer.Option(8, "--bm3d-slices", help="BM3D on at most N slices per dose "
                                                                 "(~30 s each on one CPU core); 0 = all."),
        tile: int = typer.Option(None, "--tile", help="Tiled inference with tiles of N pixels (saves memory)."),
    ) -> None:
        """Per-slice CSV, summary table (PSNR/SSIM/RMSE/MSE per HU window, noise std), figures.

        A model trained on photographs is scored on the run's held-out photos with the recipe's noise: per-image
        CSV and summary (PSNR/SSIM on the 0..255 range, RMSE) for the noisy input, a Gaussian filter and the model."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from ldct.evaluation.report import summary_table
        from ldct.evaluation.run import evaluate_run

        console = Console(stderr=True)
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task("evaluating", total=None)

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            def stage(text: str) -> None:
                bar.update(task, description=text)
                if not console.is_terminal:  # logs: one line per stage
                    console.print(f"evaluate: {text}")

            results, out_dir = evaluate_run(
                model, data, out=out, doses=doses or None, baselines=baselines, split=split, device=device,
                max_slices=max_slices, bm3d_max_slices=bm3d_slices or None, tile=tile, progress=tick,
                stage=stage)
        out_console = Console() if sys.stdout.isatty() else Console(width=170)  # pipes/logs: no wrapping
        if results.meta.get("data_kind") == "photos":
            from ldct.evaluation.photos import photo_summary_table

            ranges = "/".join(f"{r:g}" for r in results.meta.get("data_range", []))
            title = f"{results.meta.get('model')} on {results.meta.get('n_items')} photographs ({split} split)"
            caption = (f"noise: {results.meta.get('noise_description')}; PSNR/SSIM data_range {ranges}; "
                       "RMSE in intensity units")
            out_console.print(photo_summary_table(results, title=title, caption=caption))
        else:
            title = (f"{results.meta.get('model')} on {', '.join(results.meta.get('patients', []))} "
                     f"({split} split)")
            out_console.print(summary_table(results, title=title))
        for w in results.meta.get("warnings", []):
            console.print(f"warning: {w}")
        typer.echo(str(out_dir))
