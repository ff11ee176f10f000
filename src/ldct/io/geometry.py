"""Slice geometry checks shared by the readers: ordering along the slice normal, spacing, gantry tilt.

Everything is in DICOM patient coordinates (LPS, mm). A stack of slices is described by one
ImageOrientationPatient (row cosines, column cosines) and one ImagePositionPatient per slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: relative deviation of a slice gap from the median gap above which spacing counts as uneven
UNEVEN_RTOL = 0.01
#: absolute deviation (mm) tolerated regardless of the relative tolerance (rounding in headers)
UNEVEN_ATOL = 0.01
#: angle (degrees) between the slice normal and the direction of travel above which we report tilt
TILT_TOL_DEG = 0.1


def slice_normal(orientation: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """Unit normal cross(row, column) of an ImageOrientationPatient (6,) -> (3,)."""
    o = np.asarray(orientation, dtype=np.float64).reshape(6)
    n = np.cross(o[:3], o[3:])
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        raise ValueError("ImageOrientationPatient row and column directions are parallel")
    return n / norm


def sort_order(positions: np.ndarray, orientation: tuple[float, ...]) -> np.ndarray:
    """Indices that sort slices (n, 3) by their position along the slice normal (ascending)."""
    d = np.asarray(positions, dtype=np.float64) @ slice_normal(orientation)
    return np.argsort(d, kind="stable")


@dataclass
class StackGeometry:
    """What :func:`analyse_stack` finds about a sorted stack of slices."""

    spacing_z: float
    """Median gap between consecutive slices along the slice normal (mm); 0 for a single slice."""
    gaps: np.ndarray
    """(n-1,) gaps along the normal (mm)."""
    tilt_deg: float
    """Angle between the slice normal and the direction the slice positions advance (degrees)."""
    uneven: bool
    duplicates: int
    warnings: list[str] = field(default_factory=list)


def analyse_stack(
    positions: np.ndarray, orientation: tuple[float, ...], gantry_tilt_deg: float | None = None
) -> StackGeometry:
    """Spacing, tilt and duplicate slices of a stack already sorted along its normal.

    ``positions`` is (n, 3) LPS mm. ``gantry_tilt_deg`` is the GantryDetectorTilt tag (or None).
    Tilt is reported when the tag is non-zero or when the slices advance in a direction that is not
    the slice normal (a sheared stack). Uneven spacing is reported when a gap differs from the median
    gap by more than 1 % (and 0.01 mm).
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    normal = slice_normal(orientation)
    warnings: list[str] = []
    if len(pos) < 2:
        tilt = abs(float(gantry_tilt_deg or 0.0))
        if tilt > TILT_TOL_DEG:
            warnings.append(f"gantry tilt {tilt:g} deg (GantryDetectorTilt); slices are not corrected for it")
        return StackGeometry(0.0, np.zeros(0), tilt, False, 0, warnings)

    gaps = np.diff(pos @ normal)
    duplicates = int(np.sum(np.abs(gaps) < 1e-3))
    nonzero = gaps[np.abs(gaps) >= 1e-3]
    spacing = float(np.median(nonzero)) if len(nonzero) else 0.0
    uneven = bool(
        len(nonzero) > 1
        and np.any(np.abs(nonzero - spacing) > np.maximum(UNEVEN_ATOL, UNEVEN_RTOL * abs(spacing)))
    )
    if uneven:
        warnings.append(
            f"uneven slice spacing: gaps along the slice normal range from {nonzero.min():.2f} to "
            f"{nonzero.max():.2f} mm (median {spacing:.2f} mm); not resampled"
        )

    travel = pos[-1] - pos[0]
    travel_len = np.linalg.norm(travel)
    geom_tilt = 0.0
    if travel_len > 1e-6:
        cosang = abs(float(travel @ normal)) / travel_len
        geom_tilt = float(np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0))))
    tag_tilt = abs(float(gantry_tilt_deg or 0.0))
    tilt = max(geom_tilt, tag_tilt)
    if tilt > TILT_TOL_DEG:
        parts = []
        if tag_tilt > TILT_TOL_DEG:
            parts.append(f"GantryDetectorTilt {gantry_tilt_deg:g} deg")
        if geom_tilt > TILT_TOL_DEG:
            parts.append(f"slices advance {geom_tilt:.3g} deg off their normal (sheared stack)")
        warnings.append("gantry tilt: " + ", ".join(parts) + "; slices are not corrected for it")
    return StackGeometry(spacing, gaps, tilt, uneven, duplicates, warnings)


def orientations_agree(a: tuple[float, ...], b: tuple[float, ...], tol: float = 1e-3) -> bool:
    """True when two ImageOrientationPatient vectors (6,) describe the same plane directions."""
    return bool(np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), atol=tol))
