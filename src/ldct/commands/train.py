"""``ldct train RECIPE --data DATA --out RUN_DIR``: train a denoiser from a recipe (thin wrapper)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        recipe: str = typer.Argument(..., help="Bundled recipe name (redcnn, unet, resnet, autoencoder, nafnet, "
                                               "dncnn, ...) or the path of a recipe YAML file."),
        data: Path = typer.Option(..., "--data", help="Training data: a folder of CT scans, a simulation "
                                                       "manifest folder or paired folders."),
        out: Path = typer.Option(..., "--out", "-o", help="Run folder (new or empty; with --resume an existing run)."),
        max_steps: int = typer.Option(None, "--max-steps", help="Override train.max_steps."),
        devices: str = typer.Option(None, "--devices", help="Processes/devices per node (DDP when > 1; gloo on CPU)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
        overrides: list[str] = typer.Option([], "--set", help="Override one recipe key, e.g. --set args.lr=1e-4 "
                                                               "(value parsed as YAML); repeatable."),
        accelerator: str = typer.Option(None, "--accelerator", help="auto, cpu or cuda (train.accelerator)."),
        precision: str = typer.Option(None, "--precision", help="32-true, bf16-mixed or 16-mixed (GPU)."),
        init: str = typer.Option(None, "--init", help="Start from this model's weights (bundled name such as "
                                                     "'default', a run folder or a model path): fine-tune it on "
                                                     "your data (train.init). The recipe's network must match."),
    ) -> None:
        """Train a denoiser; checkpoints, logs and figures go to the run folder."""
        from ldct.engine.config import load_recipe
        from ldct.engine.loop import TrainingInterrupted, train

        resolved = load_recipe(recipe, overrides)
        dev: int | str | None = devices
        if devices is not None and devices != "auto":
            try:
                dev = int(devices)
            except ValueError:
                from ldct.errors import LdctError

                raise LdctError(f"--devices {devices!r}: use a whole number or 'auto'") from None
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        try:
            run_dir = train(resolved, data=data, out=out, max_steps=max_steps, devices=dev, resume=resume,
                            accelerator=accelerator, precision=precision, init=init)
        except TrainingInterrupted as exc:
            if getattr(rank_zero_only, "rank", 0) == 0:
                print(f"ldct: {exc}", file=sys.stderr)
            raise typer.Exit(128 + int(exc.signum)) from None  # 130 for Ctrl-C, 143 for SIGTERM
        if getattr(rank_zero_only, "rank", 0) == 0:  # DDP: print once
            for line in run_summary(run_dir, data):
                print(line, file=sys.stderr)
            typer.echo(str(run_dir))


def run_summary(run_dir: Path, data: Path) -> list[str]:
    """What a finished run produced: its best checkpoint, that checkpoint's validation figure, what next."""
    import json
    import shlex

    from ldct.engine.validate import BEST_KEY
    from ldct.hu import METRIC_WINDOWS
    from ldct.models.files import read_pointer

    ckpts = Path(run_dir) / "checkpoints"
    best = read_pointer(ckpts, "best") or read_pointer(ckpts, "last")
    if best is None:
        return [f"done: {run_dir} (no checkpoint written)"]
    meta = json.loads((best / "meta.json").read_text())
    m = meta.get("metrics") or {}
    lines = [f"done: best checkpoint {best} (step {meta.get('step')})"]
    if BEST_KEY in m:
        lines.append(
            f"  validation on {int(m.get('val/slices', 0))} slices of held-out patients, "
            f"{METRIC_WINDOWS['soft_tissue'].describe()}: PSNR {m[BEST_KEY]:.2f} dB "
            f"(low-dose input {m.get('val/input_psnr_soft_tissue', float('nan')):.2f} dB), "
            f"SSIM {m.get('val/ssim_soft_tissue', float('nan')):.4f}")
    lines.append(f"  evaluate it: ldct evaluate {shlex.quote(str(run_dir))} --data {shlex.quote(str(data))}")
    lines.append(f"  denoise with it: ldct denoise SCAN -o OUT --model {shlex.quote(str(run_dir))}")
    return lines
