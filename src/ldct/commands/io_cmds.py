"""``ldct info``, ``ldct convert``, ``ldct preview``: thin wrappers around :mod:`ldct.io`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from ldct.errors import LdctError
from ldct.volume import Volume

_SERIES = typer.Option(
    None, "--series", help="Series to read when the input holds several: SeriesInstanceUID or 0-based index."
)
_RAW_SHAPE = typer.Option(None, "--raw-shape", help="Headerless raw input: shape Z,Y,X or Y,X.")
_RAW_DTYPE = typer.Option(
    "uint16", "--raw-dtype", help="Headerless raw input: NumPy dtype (uint16, int16, float32, >u2 ...)."
)
_RAW_OFFSET = typer.Option(
    0.0, "--raw-offset", help="Value added to raw (or 16-bit image) values to get HU, e.g. -1024."
)
_RAW_SPACING = typer.Option(
    None, "--raw-spacing", help="Voxel spacing Z,Y,X in mm for inputs that do not store it."
)


def parse_numbers(text: str | None, n: tuple[int, ...], what: str, cast: type = float) -> tuple | None:
    if text is None:
        return None
    parts = text.replace("x", ",").replace(" ", ",").split(",")
    try:
        vals = tuple(cast(p) for p in parts if p != "")
    except ValueError:
        raise LdctError(
            f"bad {what} {text!r}: expected {' or '.join(str(k) for k in n)} comma-separated numbers"
        ) from None
    if len(vals) not in n:
        raise LdctError(
            f"bad {what} {text!r}: expected {' or '.join(str(k) for k in n)} comma-separated numbers"
        )
    return vals


def load(
    paths: list[Path] | Path,
    *,
    series: str | None = None,
    raw_shape: str | None = None,
    raw_dtype: str = "uint16",
    raw_offset: float = 0.0,
    raw_spacing: str | None = None,
    require_ct: bool = True,
) -> Volume:
    """Read the command's input (shared by the io commands; options as the CLI gives them)."""
    from ldct.io import read_volume

    items = [paths] if isinstance(paths, Path) else list(paths)
    return read_volume(
        items[0] if len(items) == 1 else items,
        series=series,
        raw_shape=parse_numbers(raw_shape, (2, 3), "--raw-shape", int),
        raw_dtype=raw_dtype,
        raw_offset=raw_offset,
        raw_spacing=parse_numbers(raw_spacing, (3,), "--raw-spacing"),
        require_ct=require_ct,
    )


def _fmt(v: object, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}{unit}"
    return f"{v}{unit}"


def print_info(s: dict) -> None:
    """Human-readable ``ldct info`` output."""
    z, y, x = s["shape"]
    lines = [
        ("source", f"{s.get('source_format')}: {s.get('source_path')}"),
        ("modality", f"{_fmt(s.get('modality'))}" + ("" if s["is_hu"] else " (values are not HU)")),
        ("series", f"{_fmt(s.get('series_uid'))} {s.get('series_description') or ''}".rstrip()),
        ("patient / study", f"{_fmt(s.get('patient_id'))} / {_fmt(s.get('study_uid'))}"),
        ("scanner", f"{_fmt(s.get('manufacturer'))} {s.get('model') or ''}".rstrip()),
        (
            "shape (z, y, x)",
            f"{z} x {y} x {x}" + (f" x {s['channels']} channels" if s["channels"] > 1 else ""),
        ),
        ("spacing (z, y, x)", " x ".join(f"{v:.4g}" for v in s["spacing_mm"]) + " mm"),
        ("slice thickness", _fmt(s.get("slice_thickness_mm"), " mm")),
        ("value range", f"{s['hu_min']:.1f} .. {s['hu_max']:.1f}" + (" HU" if s["is_hu"] else "")),
        ("kernel", _fmt(s.get("kernel"))),
        ("kVp", _fmt(s.get("kvp"))),
        ("tube current", _fmt(s.get("tube_current_ma"), " mA")),
        ("exposure", _fmt(s.get("exposure_mas"), " mAs")),
        ("CTDIvol", _fmt(s.get("ctdivol"), " mGy")),
        ("gantry tilt", _fmt(s.get("gantry_tilt_deg"), " deg")),
    ]
    if s.get("slice_gap_min_mm") is not None:
        lines.append(
            (
                "slice gaps",
                f"{s['slice_gap_min_mm']:.2f} .. {s['slice_gap_max_mm']:.2f} mm"
                + (" (uneven)" if s.get("uneven_spacing") else ""),
            )
        )
    if s.get("transfer_syntax"):
        lines.append(("transfer syntax", s["transfer_syntax"]))
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        typer.echo(f"{k:<{width}}  {v}")
    for w in s.get("warnings", []):
        typer.echo(f"warning: {w}")


def print_series_table(rows: list[dict], where: str) -> None:
    """Human-readable ``ldct info STUDY_DIR``: one line per series."""
    def spacing(r: dict) -> str:
        z, y, x = r["spacing_mm"]
        return " x ".join("?" if v is None else f"{v:.3g}" for v in (z, y, x))

    head = ("#", "number", "description", "modality", "image type", "kernel", "slices", "size",
            "spacing z,y,x mm", "folder")
    table = [head] + [
        (str(r["index"]), _fmt(r["series_number"]), r["description"] or "-", _fmt(r["modality"]),
         "\\".join(r["image_type"]) or "-", _fmt(r["kernel"]), str(r["slices"]),
         "x".join("?" if v is None else str(v) for v in r["size"]), spacing(r), r["folder"])
        for r in rows
    ]
    widths = [max(len(row[k]) for row in table) for k in range(len(head))]
    typer.echo(f"{len(rows)} series in {where}")
    for row in table:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    typer.echo("show one with: ldct info PATH --series INDEX (or its SeriesInstanceUID)")


def _study_series(paths: list[Path]) -> list | None:
    """The DICOM series of a study folder (headers only) when the input holds more than one, else None."""
    import warnings

    from ldct.io import list_series
    from ldct.io.formats import FILE_SUFFIXES

    if not (any(p.is_dir() for p in paths) or len(paths) > 1):
        return None
    if any(p.is_file() and p.name.lower().endswith(FILE_SUFFIXES) for p in paths):
        return None  # NIfTI, npy, raw or images: not a DICOM study
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = list_series(paths[0] if len(paths) == 1 else paths)
        except LdctError:
            return None  # not DICOM, or unreadable: reading it as one scan says why
    if len(found) < 2:
        return None
    for w in caught:
        if issubclass(w.category, UserWarning) and "pydicom" not in str(w.filename):  # ldct's own only
            print(f"ldct: warning: {' '.join(str(w.message).split())[:200]}", file=sys.stderr)
    return found


def _warn(vol: Volume) -> None:
    for w in vol.meta.get("warnings", []):
        print(f"ldct: warning: {w}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    @app.command("info")
    def info(
        paths: list[Path] = typer.Argument(
            ..., help="DICOM folder/file(s), .nii(.gz), .npy/.npz, raw, .png/.jpg/.tif. A folder holding "
            "several DICOM series (a study) lists them all."
        ),
        as_json: bool = typer.Option(
            False, "--json", help="Print one JSON object (a study folder: a list, one object per series)."
        ),
        series: str | None = _SERIES,
        raw_shape: str | None = _RAW_SHAPE,
        raw_dtype: str = _RAW_DTYPE,
        raw_offset: float = _RAW_OFFSET,
        raw_spacing: str | None = _RAW_SPACING,
    ) -> None:
        """Show shape, spacing, HU range, kernel, dose tags and geometry warnings of a scan.

        A folder with several DICOM series (a study, series possibly in subfolders) lists every series
        from its headers: number, description, modality, image type, kernel, slices, size, spacing."""
        from ldct.io import volume_summary

        if series is None and raw_shape is None:
            found = _study_series(paths)
            if found is not None:
                from ldct.io.summary import series_summaries

                root = paths[0] if len(paths) == 1 else Path(os.path.commonpath([str(p.resolve()) for p in paths]))
                rows = series_summaries(found, root)
                if as_json:
                    typer.echo(json.dumps(rows))
                else:
                    print_series_table(rows, str(paths[0] if len(paths) == 1 else root))
                return
        vol = load(
            paths,
            series=series,
            raw_shape=raw_shape,
            raw_dtype=raw_dtype,
            raw_offset=raw_offset,
            raw_spacing=raw_spacing,
            require_ct=False,
        )
        summary = volume_summary(vol)
        if as_json:
            typer.echo(json.dumps(summary))
        else:
            print_info(summary)

    @app.command("convert")
    def convert(
        src: Path = typer.Argument(..., help="Input scan (any format ldct reads)."),
        dst: Path = typer.Argument(
            ..., help="Output: folder (DICOM series), .nii/.nii.gz, .npy, .npz, .tif or .png."
        ),
        series: str | None = _SERIES,
        raw_shape: str | None = _RAW_SHAPE,
        raw_dtype: str = _RAW_DTYPE,
        raw_offset: float = _RAW_OFFSET,
        raw_spacing: str | None = _RAW_SPACING,
        description: str = typer.Option(
            "", "--description", help="SeriesDescription of a written DICOM series."
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing output (never an input)."
        ),
        compress: bool = typer.Option(
            None,
            "--compress/--no-compress",
            help="DICOM output: lossless compression (JPEG 2000 lossless, else RLE). "
            "Default: when the input was compressed.",
        ),
    ) -> None:
        """Convert a scan to another format (the format comes from OUT's extension, a folder = DICOM)."""
        from ldct.io import write_volume

        vol = load(
            src,
            series=series,
            raw_shape=raw_shape,
            raw_dtype=raw_dtype,
            raw_offset=raw_offset,
            raw_spacing=raw_spacing,
        )
        desc = description or f"ldct convert from {vol.meta.get('source_format', 'input')}"
        out = write_volume(vol, dst, source=vol, description=desc, overwrite=overwrite, compress=compress)
        _warn(vol)
        typer.echo(str(out))

    @app.command("preview")
    def preview(
        src: Path = typer.Argument(..., help="Input scan (any format ldct reads)."),
        out: Path = typer.Option(..., "-o", "--out", help="Output PNG (or .jpg)."),
        window: str | None = typer.Option(
            None,
            "--window",
            help="lung | soft | bone | brain | C,W (centre,width in HU). Default: soft for CT.",
        ),
        slice_index: int | None = typer.Option(
            None, "--slice", help="Slice index (0-based; default: middle)."
        ),
        series: str | None = _SERIES,
        raw_shape: str | None = _RAW_SHAPE,
        raw_dtype: str = _RAW_DTYPE,
        raw_offset: float = _RAW_OFFSET,
        raw_spacing: str | None = _RAW_SPACING,
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing output (never an input)."
        ),
    ) -> None:
        """Write one slice as an 8-bit PNG through a display window."""
        from ldct.io import write_volume

        if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise LdctError("preview output must end in .png or .jpg", out)
        vol = load(
            src,
            series=series,
            raw_shape=raw_shape,
            raw_dtype=raw_dtype,
            raw_offset=raw_offset,
            raw_spacing=raw_spacing,
        )
        written = write_volume(vol, out, window=window, slice_index=slice_index, overwrite=overwrite)
        typer.echo(str(written))
