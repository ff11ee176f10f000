"""``ldct simulate IN --dose D [D ...] -o OUT``: low-dose versions of a normal-dose scan.

With one dose and ``.npy`` IN and OUT, OUT is the low-dose array (same shape as IN; smaller with
``--downsample``). Otherwise OUT is a folder with the normal-dose reference, one low-dose series per
dose in the input's format, and ``manifest.json`` (see :mod:`ldct.data.manifest`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import typer

from ldct.errors import LdctError


def parse_dose(text: str) -> float:
    """'0.25' or '25%' -> 0.25; anything outside (0, 1] is an :class:`LdctError`."""
    t = str(text).strip()
    try:
        d = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise LdctError(f"bad dose {text!r}: give a fraction (0.25) or a percentage (25%)") from None
    if not (math.isfinite(d) and 0.0 < d <= 1.0):
        raise LdctError(f"dose {text} is outside (0, 1]: give a fraction of the normal dose (0.25) or 25%")
    return d


def _split_positionals(items: list[str], doses: list[str]) -> tuple[str, list[float]]:
    """IN and the doses: ``--dose 0.25 0.5`` leaves 0.5 among the positionals."""
    paths, extra = [], []
    for it in items:
        if Path(it).exists():
            paths.append(it)
            continue
        try:
            extra.append(parse_dose(it))
        except LdctError:
            paths.append(it)
    if len(paths) != 1:
        raise LdctError(f"give exactly one input (got {len(paths)}: {' '.join(paths) or 'none'})")
    if not doses:
        raise LdctError("give at least one --dose (fraction of the normal dose, e.g. --dose 0.25 0.1)")
    return paths[0], [parse_dose(d) for d in doses] + extra


def _spacing(text: str | None) -> tuple[float, float, float] | None:
    if not text:
        return None
    try:
        vals = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise LdctError(f"bad --spacing {text!r}: give PIXEL or Y,X or Z,Y,X in mm") from None
    if len(vals) == 1:
        vals = [1.0, vals[0], vals[0]]
    elif len(vals) == 2:
        vals = [1.0, *vals]
    if len(vals) != 3 or min(vals) <= 0:
        raise LdctError(f"bad --spacing {text!r}: give PIXEL or Y,X or Z,Y,X in mm (positive)")
    return (vals[0], vals[1], vals[2])


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate(
        inputs: list[str] = typer.Argument(..., metavar="IN", help="Normal-dose scan: DICOM folder, .nii.gz, .npy, .raw, .png."),
        dose: list[str] = typer.Option([], "--dose", "-d", help="Dose fraction(s) of the normal dose: 0.25 (or 25%); "
                                       "several: --dose 0.5 0.25 0.1."),
        out: Path = typer.Option(..., "-o", "--out", help="Output .npy (one dose, .npy input) or folder."),
        mode: str = typer.Option("projection", "--mode", help="projection | gaussian | poisson-gaussian."),
        seed: int | None = typer.Option(None, "--seed", help="Noise seed (same seed, same output)."),
        downsample: int = typer.Option(1, "--downsample", help="Shrink the low-dose output by 1, 2 or 4 (SR pairs)."),
        downsample_method: str = typer.Option("area", "--downsample-method", help="area | bicubic."),
        i0: float | None = typer.Option(None, "--i0", help="Full-dose photons per detector reading "
                                        "(default: calibrated to the scan's own noise)."),
        sigma_e: float = typer.Option(math.sqrt(10.0), "--sigma-e", help="Electronic noise std (counts)."),
        filter: str = typer.Option("auto", "--filter", help="FBP filter of the added noise: auto (matches the "
                                   "scan's own noise texture), ram-lak, shepp-logan, cosine, hamming, hann."),
        sigma: float | None = typer.Option(None, "--sigma", help="Image modes: full-dose noise std (HU or "
                                           "intensity; default: measured, or 1% of the range for photographs)."),
        tcm: float = typer.Option(1.0, "--tcm", help="Tube-current modulation strength (0 = constant mA)."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        series: str | None = typer.Option(None, "--series", help="DICOM series UID or index when IN holds several."),
        spacing: str | None = typer.Option(None, "--spacing", help="Pixel spacing for inputs without it (.npy, "
                                           ".raw): PIXEL, Y,X or Z,Y,X mm."),
        raw_shape: str | None = typer.Option(None, "--raw-shape", help="Raw input shape Y,X or Z,Y,X."),
        raw_dtype: str = typer.Option("uint16", "--raw-dtype", help="Raw input dtype."),
        raw_offset: float = typer.Option(0.0, "--raw-offset", help="HU = raw value + offset (Mayo raw: -1024)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    ) -> None:
        """Simulate low-dose CT from a normal-dose scan (projection-domain physics by default)."""
        from ldct.io import read_volume
        from ldct.simulate.scan import simulate_volume, write_simulation
        from ldct.simulate.speed import tune_allocator

        tune_allocator()
        src, doses = _split_positionals(inputs, dose)
        if downsample not in (1, 2, 4):
            raise LdctError(f"--downsample must be 1, 2 or 4, got {downsample}")
        shape = tuple(int(v) for v in raw_shape.replace(",", " ").split()) if raw_shape else None
        vol = read_volume(src, series=series, raw_shape=shape, raw_dtype=raw_dtype, raw_offset=raw_offset,
                          raw_spacing=_spacing(spacing))
        doses = list(dict.fromkeys(doses))
        scan = simulate_volume(vol, doses, downsample_factor=downsample, downsample_method=downsample_method,
                               mode=mode, i0=i0, sigma_e=sigma_e, filter=filter, seed=seed, device=device,
                               noise_sigma=sigma, tcm=tcm)
        for w in scan.warnings:
            typer.echo(f"ldct: warning: {w}", err=True)
        p = scan.parameters
        if p.get("i0") is not None:
            how = "calibrated to the scan's noise" if p.get("i0_source") == "calibrated" else "given"
            cal = p.get("calibration") or {}
            extra = f" (scan noise {cal['sigma_scan_hu']:.1f} HU)" if cal else ""
            typer.echo(f"i0 = {p['i0']:.4g} photons per reading, {how}{extra}", err=True)
        single = len(doses) == 1 and out.suffix.lower() == ".npy"
        if single:
            if vol.meta.get("source_format") not in ("npy", "raw"):
                raise LdctError("a .npy output holds one array: use it with a .npy/.raw input, or give a folder", out)
            from ldct.atomic import atomic_file

            ld = scan.low_dose[doses[0]].data
            in_ndim = np.load(src, mmap_mode="r").ndim if Path(src).suffix.lower() == ".npy" else len(shape or (0, 0, 0))
            arr = ld[0] if in_ndim == 2 else ld
            with atomic_file(out, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
                np.save(fh, arr.astype(np.float32), allow_pickle=False)
            typer.echo(str(out))
            return
        if out.suffix.lower() == ".npy":
            raise LdctError("several doses (or a non-.npy input) need an output folder, not a .npy file", out)
        typer.echo(str(write_simulation(scan, out, source=src, overwrite=overwrite)))
