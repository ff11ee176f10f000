"""``ldct simulate IN [IN ...] --dose D [D ...] -o OUT``: low-dose versions of normal-dose scans.

With one input, one dose and ``.npy`` IN and OUT, OUT is the low-dose array (same shape as IN; smaller
with ``--downsample``). Otherwise OUT is a folder with the normal-dose reference, one low-dose series per
dose in the input's format, and ``manifest.json`` (see :mod:`ldct.data.manifest`). With several inputs
each one gets its own such folder, ``OUT/<input name>/``; every input is read and checked before anything
is simulated, and the outputs appear together at the end (a failure while simulating leaves OUT as it was;
each OUT/<name> is then replaced in one step, one after the other). A folder of
such outputs trains as one patient per input (``ldct train --data OUT``).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

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


def _split_positionals(items: list[str], doses: list[str]) -> tuple[list[str], list[float]]:
    """The inputs and the doses: ``--dose 0.25 0.5`` leaves 0.5 among the positionals."""
    paths, extra = [], []
    for it in items:
        if Path(it).exists():
            paths.append(it)
            continue
        try:
            extra.append(parse_dose(it))
        except LdctError:
            paths.append(it)
    if not paths:
        raise LdctError("give at least one input scan")
    if not doses:
        raise LdctError("give at least one --dose (fraction of the normal dose, e.g. --dose 0.25 0.1)")
    return paths, [parse_dose(d) for d in doses] + extra


#: inputs read for the up-front check are kept in memory up to this many bytes in all (then read again)
_KEEP_BYTES = 2 << 30
_SUFFIXES = (".nii.gz", ".nii", ".npy", ".npz", ".raw", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".ima")


def output_names(inputs: list[str]) -> list[str]:
    """Folder name under OUT of each input: its name without the file suffix (``ct.nii.gz`` -> ``ct``);
    inputs of the same name take their parent folders' names as well (``P1/ct.npy`` -> ``P1_ct``)."""
    paths = [Path(os.path.abspath(p)) for p in inputs]
    seen: dict[str, Path] = {}
    for p in paths:
        real = Path(os.path.realpath(p))
        if str(real) in seen:
            raise LdctError("input given twice", p)
        seen[str(real)] = p

    def name(p: Path, depth: int) -> str:
        stem = p.name
        for suf in _SUFFIXES:
            if stem.lower().endswith(suf) and len(stem) > len(suf):
                stem = stem[: -len(suf)]
                break
        parts = [q.name for q in list(p.parents)[: depth]][::-1] + [stem]
        return "_".join(x for x in parts if x).lstrip(".") or "input"

    depth = [0] * len(paths)
    for _ in range(64):
        names = [name(p, d) for p, d in zip(paths, depth)]
        clash = {n for n in names if names.count(n) > 1}
        if not clash:
            return names
        depth = [d + 1 if n in clash else d for n, d in zip(names, depth)]
    raise LdctError(f"cannot give the inputs distinct output names: {', '.join(inputs)}")  # pragma: no cover


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


def _progress():
    """A rich progress bar on stderr (drawn only on a terminal), over the slices of all inputs."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(TextColumn("[bold]simulating"), TextColumn("{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("slices"), TimeElapsedColumn(),
                    console=console, transient=False, disable=not console.is_terminal)


def _check_input(vol: Any, src: str, doses: list[float], mode: str, filter: str) -> None:
    """What the simulator would refuse (no body, NaN, photograph in projection mode...), before any work."""
    from ldct.simulate.pipeline import check_inputs

    try:
        check_inputs(vol.data, doses, mode, filter, 0.5 * (vol.spacing[1] + vol.spacing[2]), vol.is_hu)
    except LdctError as exc:
        raise (LdctError(str(exc), src) if exc.path is None else exc) from None


def _check_targets(inputs: list[str], out: Path, names: list[str], overwrite: bool) -> None:
    """OUT/<name> of several inputs: a folder, free (or --overwrite), never replacing an input."""
    from ldct.atomic import check_writable, is_inside

    if out.suffix.lower() == ".npy" or (out.exists() and not out.is_dir()):
        raise LdctError("several inputs need an output folder (each goes to OUT/<input name>/)", out)
    for src in inputs:
        if is_inside(out, src):
            raise LdctError("output folder lies inside an input", out)
    for name in names:
        target = out / name
        if target.exists() and not overwrite:
            raise LdctError("output already exists (pass --overwrite to replace it)", target)
        for src in inputs:
            if is_inside(src, target):
                raise LdctError(f"output would replace the input {src}", target)
    check_writable(out)


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate(
        inputs: list[str] = typer.Argument(..., metavar="IN", help="Normal-dose scan(s): DICOM folder, .nii.gz, "
                                           ".npy, .raw, .png. Several: each goes to OUT/<input name>/."),
        dose: list[str] = typer.Option([], "--dose", "-d", help="Dose fraction(s) of the normal dose: 0.25 (or 25%); "
                                       "several: --dose 0.5 0.25 0.1."),
        out: Path = typer.Option(..., "-o", "--out", help="Output folder (reference, one series per dose, "
                                 "manifest.json; several inputs: one such folder per input inside it), or .npy "
                                 "(one .npy input, one dose)."),
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
        """Simulate low-dose CT from normal-dose scans (projection-domain physics by default).

        Several inputs (IN1 IN2 ...) are all read and checked first; each gets its own output folder
        OUT/<input name>/ with its manifest, and a folder of such outputs trains as one patient per input
        (ldct train --data OUT)."""
        from ldct.io import read_volume
        from ldct.simulate.scan import simulate_volume, write_simulation
        from ldct.simulate.speed import tune_allocator

        tune_allocator()
        srcs, doses = _split_positionals(inputs, dose)
        if downsample not in (1, 2, 4):
            raise LdctError(f"--downsample must be 1, 2 or 4, got {downsample}")
        doses = list(dict.fromkeys(doses))
        several = len(srcs) > 1
        single = not several and len(doses) == 1 and out.suffix.lower() == ".npy"
        if not several and not single and out.suffix.lower() == ".npy":
            raise LdctError("several doses (or a non-.npy input) need an output folder, not a .npy file", out)
        names = output_names(srcs) if several else [Path(srcs[0]).name]
        if several:
            _check_targets(srcs, out, names, overwrite)
        elif out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
            raise LdctError("output already exists (pass --overwrite to replace it)", out)
        from ldct.commands.io_cmds import parse_numbers

        shape = parse_numbers(raw_shape, (2, 3), "--raw-shape", int)

        def read(src: str):
            return read_volume(src, series=series, raw_shape=shape, raw_dtype=raw_dtype, raw_offset=raw_offset,
                               raw_spacing=_spacing(spacing))

        # every input is read and checked before anything is simulated or written
        vols: dict[str, Any] = {}
        slices: dict[str, int] = {}
        kept = 0
        for src in srcs:
            vol = read(src)
            _check_input(vol, src, doses, mode, filter)
            if single and vol.meta.get("source_format") not in ("npy", "raw"):
                raise LdctError("a .npy output holds one array: use it with a .npy/.raw input, or give a folder", out)
            slices[src] = int(vol.shape[0])
            if kept + vol.data.nbytes <= _KEEP_BYTES or not several:
                vols[src] = vol  # small enough to keep; larger inputs are read again when their turn comes
                kept += vol.data.nbytes
            del vol
        sim_kw = {"downsample_factor": downsample, "downsample_method": downsample_method, "mode": mode, "i0": i0,
                  "sigma_e": sigma_e, "filter": filter, "seed": seed, "device": device, "noise_sigma": sigma,
                  "tcm": tcm}
        bar = _progress()
        task = bar.add_task("", total=sum(slices.values()))

        def say(text: str) -> None:
            if bar.live.is_started and bar.console.is_terminal:
                bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                typer.echo(text, err=True)

        def run(k: int, src: str):
            prefix = f"{names[k]}: " if several else ""
            bar.update(task, description=f"{names[k]} ({k + 1}/{len(srcs)})" if several else names[k])
            if several and not bar.console.is_terminal:
                say(f"[{k + 1}/{len(srcs)}] {names[k]}: simulating {slices[src]} slices")
            vol = vols.pop(src, None)
            vol = read(src) if vol is None else vol
            scan = simulate_volume(vol, doses, **sim_kw)
            for w in scan.warnings:
                say(f"ldct: warning: {prefix}{w}")
            p = scan.parameters
            if p.get("i0") is not None:
                how = "calibrated to the scan's noise" if p.get("i0_source") == "calibrated" else "given"
                cal = p.get("calibration") or {}
                extra = f" (scan noise {cal['sigma_scan_hu']:.1f} HU)" if cal else ""
                say(f"{prefix}i0 = {p['i0']:.4g} photons per reading, {how}{extra}")
            return vol, scan

        with bar:
            if single:
                from ldct.atomic import atomic_file

                src = srcs[0]
                _, scan = run(0, src)
                ld = scan.low_dose[doses[0]].data
                in_ndim = np.load(src, mmap_mode="r").ndim if Path(src).suffix.lower() == ".npy" else len(shape or (0, 0, 0))
                arr = ld[0] if in_ndim == 2 else ld
                with atomic_file(out, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, arr.astype(np.float32), allow_pickle=False)
                bar.advance(task, slices[src])
                written = [out]
            elif not several:
                _, scan = run(0, srcs[0])
                written = [write_simulation(scan, out, source=srcs[0], overwrite=overwrite)]
                bar.advance(task, slices[srcs[0]])
            else:
                written = _write_several(srcs, names, out, overwrite, run, lambda n: bar.advance(task, n))
        for w in written:
            typer.echo(str(w))


def _write_several(srcs: list[str], names: list[str], out: Path, overwrite: bool, run, advance) -> list[Path]:
    """Simulate each input into a staging folder, then move every output to OUT/<name> at the end."""
    from ldct.atomic import atomic_dir, tmp_prefix
    from ldct.simulate.scan import write_simulation

    def write_all(stage: Path) -> None:
        for k, src in enumerate(srcs):
            vol, scan = run(k, src)
            write_simulation(scan, stage / names[k], source=src)
            advance(int(vol.shape[0]))
            del vol, scan

    if not out.exists():
        with atomic_dir(out) as stage:  # OUT appears with every output, or not at all
            write_all(stage)
    else:
        # staged inside OUT under a hidden name that a later write of OUT/<first name> cleans up if killed
        stage = Path(tempfile.mkdtemp(prefix=tmp_prefix(out / names[0]), suffix=".tmp", dir=out))
        try:
            write_all(stage)
            for name in names:
                with atomic_dir(out / name, overwrite=overwrite) as tmp:
                    os.replace(stage / name, tmp)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return [out / name / "manifest.json" for name in names]
