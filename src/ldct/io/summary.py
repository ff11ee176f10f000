"""JSON-ready summaries for ``ldct info``: of one :class:`Volume` (:func:`volume_summary`), and of every
DICOM series in a study folder from their headers alone (:func:`series_summaries`)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ldct.io.dicom_scan import SeriesInfo
from ldct.volume import Volume

_META_KEYS = (
    "patient_id",
    "study_uid",
    "series_uid",
    "series_description",
    "manufacturer",
    "model",
    "kernel",
    "kvp",
    "tube_current_ma",
    "exposure_mas",
    "ctdivol",
    "transfer_syntax",
    "source_format",
    "source_path",
    "gantry_tilt_deg",
    "uneven_spacing",
    "slice_gap_min_mm",
    "slice_gap_max_mm",
    "padded_voxels",
    "multiframe",
)


def _clean(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else round(float(v), 6)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def volume_summary(vol: Volume) -> dict[str, Any]:
    """Shape [z, y, x], spacing_mm [z, y, x], modality, series_uid, hu_min, hu_max, dose tags, warnings.

    ``hu_min``/``hu_max`` are the value range (intensities, not HU, when ``is_hu`` is False).
    """
    d = vol.data
    out: dict[str, Any] = {
        "shape": [int(s) for s in d.shape[:3]],
        "channels": vol.channels,
        "spacing_mm": [float(s) for s in vol.spacing],
        "slice_thickness_mm": vol.slice_thickness
        if vol.slice_thickness is None
        else float(vol.slice_thickness),
        "modality": vol.meta.get("modality"),
        "is_hu": bool(vol.is_hu),
        "hu_min": float(d.min()),
        "hu_max": float(d.max()),
        "hu_mean": float(d.mean(dtype=np.float64)),
        "orientation": [float(v) for v in vol.orientation],
        "first_position_mm": [float(v) for v in vol.positions[0]] if len(vol.positions) else None,
        "last_position_mm": [float(v) for v in vol.positions[-1]] if len(vol.positions) else None,
    }
    for k in _META_KEYS:
        out[k] = _clean(vol.meta.get(k))
    out.setdefault("series_uid", None)
    out["warnings"] = list(vol.meta.get("warnings", []))
    if vol.meta.get("other_series"):
        out["other_series"] = list(vol.meta["other_series"])
    return out


def _nums(v: Any) -> list[float] | None:
    """Finite numbers of a header value (one or several), None when absent or not numbers."""
    if v is None or v == "":
        return None
    try:
        vals = [float(x) for x in ([v] if isinstance(v, (str, bytes, int, float)) else list(v))]
    except (TypeError, ValueError):
        return None
    return vals if vals and all(math.isfinite(x) for x in vals) else None


def _first_item(ds: Any, *seqs: str) -> Any:
    """The first item of a nested functional-group sequence path (Enhanced CT), else None."""
    for seq in seqs:
        value = ds.get(seq) if ds is not None else None
        if not value:
            return None
        ds = value[0]
    return ds


def _text(v: Any) -> str | None:
    if v is None or v == "":
        return None
    return "/".join(str(x) for x in v) if not isinstance(v, (str, bytes, int, float)) else str(v)


def _slice_spacing(s: SeriesInfo) -> float | None:
    """Median distance between neighbouring slice positions along the slice normal (headers only)."""
    from ldct.io.dicom_attrs import frame_positions, is_enhanced

    first = s.datasets[0]
    shared = _first_item(first, "SharedFunctionalGroupsSequence", "PlaneOrientationSequence")
    ori = _nums(first.get("ImageOrientationPatient")) or _nums(shared.get("ImageOrientationPatient") if shared else None)
    if ori is None or len(ori) != 6:
        return None
    normal = np.cross(ori[:3], ori[3:])
    pos: list[np.ndarray] = []
    for ds in s.datasets:
        if is_enhanced(ds):
            pos.extend(p for p in frame_positions(ds) if p is not None)
        else:
            p = _nums(ds.get("ImagePositionPatient"))
            if p is not None and len(p) == 3:
                pos.append(np.asarray(p))
    z = np.unique(np.round([float(np.dot(p, normal)) for p in pos], 4))
    return float(np.median(np.diff(z))) if len(z) > 1 else None


def series_summaries(series: list[SeriesInfo], root: str | Path | None = None) -> list[dict[str, Any]]:
    """One JSON-ready dict per series, from the headers already read (no pixel data): ``index`` (what
    ``--series`` takes), ``series_number``, ``series_uid``, ``description``, ``modality``, ``image_type``,
    ``kernel``, ``slices``, ``size`` [rows, columns], ``spacing_mm`` [z, y, x] (z from the slice positions,
    None when unknown), ``patient_id`` and ``folder`` (the series' folder, relative to ``root``)."""
    out = []
    for s in series:
        ds = s.datasets[0]
        measures = _first_item(ds, "SharedFunctionalGroupsSequence", "PixelMeasuresSequence")
        px = _nums(ds.get("PixelSpacing")) or _nums(measures.get("PixelSpacing") if measures else None)
        recon = _first_item(ds, "SharedFunctionalGroupsSequence", "CTReconstructionSequence")
        kernel = _text(ds.get("ConvolutionKernel")) or _text(recon.get("ConvolutionKernel") if recon else None)
        frames = sum(int(_nums(d.get("NumberOfFrames"))[0]) if _nums(d.get("NumberOfFrames")) else 1
                     for d in s.datasets)
        image_type = ds.get("ImageType")
        folder = os.path.commonpath([str(f.parent) for f in s.files])
        if root is not None:
            base = Path(root) if Path(root).is_dir() else Path(root).parent
            rel = os.path.relpath(folder, base)
            folder = rel if not rel.startswith("..") else folder
        out.append({
            "index": s.index,
            "series_number": s.number,
            "series_uid": s.uid or None,
            "description": s.description or None,
            "modality": s.modality or None,
            "image_type": [str(t) for t in ([image_type] if isinstance(image_type, str) else image_type or [])],
            "kernel": kernel,
            "slices": frames,
            "size": [int(v[0]) if (v := _nums(ds.get(k))) else None for k in ("Rows", "Columns")],
            "spacing_mm": [_slice_spacing(s), *(px if px and len(px) == 2 else [None, None])],
            "patient_id": _text(ds.get("PatientID")),
            "folder": Path(folder).as_posix(),
        })
    return out
