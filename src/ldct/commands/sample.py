"""``ldct sample``: copy the bundled sample scan (20-slice abdomen CT, Apache-2.0) to a folder."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import typer

from ldct.atomic import atomic_dir
from ldct.errors import LdctError


def sample_dir() -> Path:
    """Path of the bundled sample DICOM series inside the installed package."""
    return Path(str(resources.files("ldct") / "sample_data" / "abdomen_dicom"))


def register(app: typer.Typer) -> None:
    @app.command("sample")
    def sample(
        out: Path = typer.Option(Path("sample_scan"), "-o", "--out", help="Folder to copy the sample series into."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder."),
    ) -> None:
        """Copy the bundled sample scan (abdomen CT, 20 slices, JPEG 2000 DICOM) to OUT and print its path."""
        src = sample_dir()
        if not src.is_dir():
            raise LdctError("bundled sample scan is missing from the installation", src)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            for f in sorted(src.iterdir()):
                shutil.copy2(f, tmp / f.name)
        typer.echo(str(out))
