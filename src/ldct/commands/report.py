"""``ldct report RUN_OR_EVAL_DIR -o report.html``: one self-contained static HTML report."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        source: Path = typer.Argument(..., metavar="RUN_OR_EVAL_DIR",
                                      help="A training run folder or an `ldct evaluate` output folder."),
        out: Path = typer.Option(Path("report.html"), "-o", "--out", help="HTML file to write."),
        max_slices: int = typer.Option(None, "--max-slices", help="At most N slices per case in the viewer."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report."),
    ) -> None:
        """Metric table per dose, image viewer (low dose | output | normal dose | difference) with window
        presets and a slice slider, loss curves and metric plots, all in one HTML file (no network access)."""
        from ldct.errors import LdctError
        from ldct.report import build_report

        if out.suffix.lower() not in (".html", ".htm"):
            raise LdctError("the report is an HTML file: give a path ending in .html", out)
        if out.exists() and not overwrite:
            raise LdctError("output already exists (pass --overwrite to replace it)", out)
        if max_slices is not None and max_slices < 1:
            raise LdctError(f"--max-slices {max_slices}: must be at least 1")
        path = build_report(source, out, overwrite=overwrite, max_slices=max_slices)
        typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
