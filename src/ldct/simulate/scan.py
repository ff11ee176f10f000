"""Volume-level simulation and the ``ldct simulate`` output folder (series + manifest).

Output folder layout (input format kept)::

    OUT/nd[...]          the normal-dose reference (DICOM folder, .nii.gz, .npy, .png/.tif)
    OUT/ld_0.25[...]     one low-dose series per dose (downsampled by --downsample for SR pairs)
    OUT/manifest.json    see :mod:`ldct.simulate.manifest` (written) and :mod:`ldct.data.manifest` (read)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import ldct
from ldct.atomic import atomic_dir
from ldct.errors import LdctError
from ldct.io.dicom_attrs import derived_series_number, scale_dose_headers, scale_dose_meta
from ldct.simulate.manifest import dose_key, write_manifest
from ldct.simulate.pipeline import simulate_doses
from ldct.simulate.resample import downsample
from ldct.volume import Volume


@dataclass
class SimulatedScan:
    """Normal-dose reference, low-dose volumes by dose, and the parameters used."""

    normal_dose: Volume
    low_dose: dict[float, Volume]
    parameters: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def simulate_volume(
    vol: Volume,
    doses: Sequence[float],
    *,
    downsample_factor: int = 1,
    downsample_method: str = "area",
    **sim_kwargs: Any,
) -> SimulatedScan:
    """Simulate ``doses`` for a whole :class:`Volume` (HU CT or photograph).

    ``sim_kwargs`` are those of :func:`ldct.simulate.pipeline.simulate_doses` (mode, i0, sigma_e, filter,
    seed, geometry, device, ...). The pixel spacing comes from the volume. With ``downsample_factor``
    > 1 the low-dose volumes are shrunk (super-resolution pairs); the normal dose keeps full resolution.
    """
    src = vol.meta.get("source_path")
    sy, sx = vol.spacing[1], vol.spacing[2]
    warns = list(vol.meta.get("warnings", []))
    if abs(sy - sx) > 1e-3 * max(sx, sy):
        warns.append(f"non-square pixels ({sy:g} x {sx:g} mm): simulated with their mean")
    ps = 0.5 * (sy + sx)
    try:
        res = simulate_doses(vol.data, list(doses), pixel_spacing_mm=ps, is_hu=vol.is_hu, **sim_kwargs)
    except LdctError as exc:
        if exc.path is None and src:
            raise LdctError(str(exc), src) from None
        raise
    params = dict(res.parameters)
    params.update(downsample=int(downsample_factor), downsample_method=downsample_method)
    lows: dict[float, Volume] = {}
    for d, data in res.low_dose.items():
        if downsample_factor > 1:
            data = downsample(data, downsample_factor, downsample_method, channels_last=data.ndim == 4)
        # the low dose states its own dose: tube current, mAs and CTDIvol x d (metadata and headers)
        ld = vol.with_data(data, simulated_dose=d, **scale_dose_meta(vol.meta, d))
        ld.headers = scale_dose_headers(vol.headers, d)
        if downsample_factor > 1:
            ld.spacing = (vol.spacing[0], sy * downsample_factor, sx * downsample_factor)
            ld.positions = _shifted_positions(vol, downsample_factor)
        lows[d] = ld
    return SimulatedScan(normal_dose=vol, low_dose=lows, parameters=params, warnings=warns + res.warnings)


def _shifted_positions(vol: Volume, f: int) -> np.ndarray:
    """Slice positions of the downsampled grid: the first (merged) pixel's centre moves by (f-1)/2 pixels."""
    o = np.asarray(vol.orientation, dtype=np.float64)
    shift = (f - 1) / 2.0 * (o[:3] * vol.spacing[2] + o[3:] * vol.spacing[1])
    return np.asarray(vol.positions) + shift[None, :]


def output_format(vol: Volume) -> str:
    """'dicom', 'nifti', 'npy', 'png' or 'tif' from the source format."""
    fmt = str(vol.meta.get("source_format", "npy")).lower()
    if fmt == "dicom":
        return "dicom"
    if fmt in ("nifti", "nii", "nii.gz"):
        return "nifti"
    if fmt in ("png", "jpg", "jpeg") and not vol.is_hu:
        return "png"
    if fmt in ("tif", "tiff"):
        return "tif"
    return "npy"


def _name(stem: str, fmt: str) -> str:
    return {"dicom": stem, "nifti": f"{stem}.nii.gz", "npy": f"{stem}.npy", "png": f"{stem}.png",
            "tif": f"{stem}.tif"}[fmt]


def _write(v: Volume, path: Path, fmt: str, *, source: Volume, description: str,
           series_number: int | None = None) -> None:
    if fmt == "png":
        from PIL import Image

        data = v.data[0]
        full = 255.0 if float(source.data.max()) <= 255 else 65535.0
        arr = np.clip(np.round(data), 0, full).astype(np.uint8 if full == 255 else np.uint16)
        Image.fromarray(arr).save(path)
        return
    from ldct.io import write_volume

    if fmt == "dicom":
        path.mkdir()  # an existing (empty) folder is a DICOM target even with a dot in its name
        # same slices (a super-resolution low dose only has fewer pixels): derived from the reference
        same_slices = v.shape[0] == source.shape[0]
        write_volume(v, path, source=source if same_slices else None, description=description,
                     series_number=series_number)
        return
    write_volume(v, path, description=description)


def series_numbers(nd: Volume, doses: list[float]) -> tuple[int, dict[float, int]]:
    """SeriesNumbers of the reference and of each dose: distinct, derived from the source's number."""
    base = nd.meta.get("series_number")
    nd_number = derived_series_number(base, "nd")
    used, out = {nd_number}, {}
    for d in sorted(doses):
        n = derived_series_number(base, "ld", d)
        while n in used:  # two doses within 0.001 of each other
            n += 1
        used.add(n)
        out[d] = n
    return nd_number, out


def write_simulation(scan: SimulatedScan, out: str | Path, *, source: str, overwrite: bool = False) -> Path:
    """Write the reference, one series per dose and ``manifest.json`` into the folder ``out``.

    Returns the manifest path. The folder appears complete or not at all.
    """
    nd = scan.normal_dose
    fmt = output_format(nd)
    if fmt == "png" and nd.shape[0] != 1:
        fmt = "tif"
    out = Path(out)
    meta = nd.meta
    # a DICOM PatientID identifies the patient; a file name (npy/NIfTI/raw) or nothing is only a guess
    from_header = bool(meta.get("patient_id")) and meta.get("source_format") == "dicom"
    patient = str(meta.get("patient_id") or Path(source).stem.split(".")[0])
    normal = nd.normal
    z_mm = [float(np.dot(p, normal)) for p in np.asarray(nd.positions)]
    mode = scan.parameters["mode"]
    nd_number, ld_numbers = series_numbers(nd, list(scan.low_dose))
    with atomic_dir(out, overwrite=overwrite) as tmp:
        nd_name = _name("nd", fmt)
        _write(nd, tmp / nd_name, fmt, source=nd, description="ldct normal-dose reference",
               series_number=nd_number)
        low, records = {}, []
        for d, ld in sorted(scan.low_dose.items()):
            key = dose_key(d)
            name = _name(f"ld_{key}", fmt)
            _write(ld, tmp / name, fmt, source=nd, description=f"ldct simulated {100 * d:g}% dose ({mode})",
                   series_number=ld_numbers[d])
            low[key] = name
            for k in range(nd.shape[0]):
                records.append({"patient_id": patient, "series_uid": meta.get("series_uid"), "slice_index": k,
                                "z_mm": z_mm[k], "dose": float(d), "ld": name, "nd": nd_name,
                                "kernel": meta.get("kernel")})
        manifest = {"kind": "ldct-simulation", "ldct_version": ldct.__version__, "source": str(source),
                    "patient_id_guessed": not from_header,
                    "mode": mode, "parameters": scan.parameters, "normal_dose": nd_name, "low_dose": low,
                    "records": records, "warnings": scan.warnings}
        write_manifest(tmp, manifest)
    return out / "manifest.json"
