"""A JSON-ready summary of a :class:`Volume` (what ``ldct info`` shows)."""

from __future__ import annotations

from typing import Any

import numpy as np

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
