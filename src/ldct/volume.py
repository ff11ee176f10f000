"""The one in-memory type for images: :class:`Volume`.

Voxels are float32 (z, y, x). For CT they are Hounsfield units (``is_hu=True``); for photographs
(PNG/JPG/TIFF that are not CT) they are plain intensities and ``is_hu`` is False, and channels (RGB)
live in ``channels`` with data shaped (z, y, x, c).

Geometry follows DICOM's patient coordinate system (LPS, mm):
``positions[k]`` is ImagePositionPatient of slice k (centre of its first voxel), ``orientation`` is
ImageOrientationPatient (row direction cosines, then column direction cosines), and
``spacing`` is (z, y, x) in mm, z being the (median) distance between slice positions along the
slice normal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Volume:
    data: np.ndarray
    """float32 voxels, (z, y, x) or (z, y, x, c) for colour photographs."""
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """(z, y, x) voxel spacing in mm."""
    positions: np.ndarray | None = None
    """(z, 3) ImagePositionPatient per slice (mm, LPS); None when unknown."""
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    """ImageOrientationPatient: row cosines (3) then column cosines (3)."""
    slice_thickness: float | None = None
    is_hu: bool = True
    """True for CT in Hounsfield units; False for photographs (intensities)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Source metadata: patient_id, study_uid, series_uid, modality, manufacturer, kernel, kvp,
    tube_current_ma, exposure_mas, ctdivol, source_format, source_path, warnings (list of str), ..."""
    headers: list[Any] | None = field(default=None, repr=False)
    """Per-slice source DICOM datasets (pixel data removed), kept to derive new series."""

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        if self.data.ndim == 2:
            self.data = self.data[None]
        if self.data.ndim not in (3, 4):
            raise ValueError(f"Volume data must be (z, y, x) or (z, y, x, c), got shape {self.data.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.orientation = tuple(float(v) for v in self.orientation)
        if self.positions is None:
            self.positions = self.default_positions()
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.meta.setdefault("warnings", [])

    # geometry -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def channels(self) -> int:
        return 1 if self.data.ndim == 3 else int(self.data.shape[3])

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal: cross(row cosines, column cosines)."""
        o = np.asarray(self.orientation, dtype=np.float64)
        n = np.cross(o[:3], o[3:])
        return n / np.linalg.norm(n)

    def default_positions(self) -> np.ndarray:
        z = self.data.shape[0]
        return np.asarray([[0.0, 0.0, k * self.spacing[0]] for k in range(z)]) @ np.eye(3) if z else np.zeros((0, 3))

    def affine_lps(self) -> np.ndarray:
        """4x4 voxel (i=x col, j=y row, k=z slice) -> LPS mm affine."""
        o = np.asarray(self.orientation, dtype=np.float64)
        a = np.eye(4)
        a[:3, 0] = o[:3] * self.spacing[2]
        a[:3, 1] = o[3:] * self.spacing[1]
        if len(self.positions) > 1:
            a[:3, 2] = (self.positions[-1] - self.positions[0]) / (len(self.positions) - 1)
        else:
            a[:3, 2] = self.normal * self.spacing[0]
        a[:3, 3] = self.positions[0]
        return a

    def affine_ras(self) -> np.ndarray:
        """4x4 voxel (x, y, z index) -> RAS mm affine, as NIfTI stores it."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()

    # convenience ------------------------------------------------------------------------------
    def with_data(self, data: np.ndarray, **meta_updates: Any) -> Volume:
        """A copy with new voxels (same geometry) and updated metadata."""
        meta = dict(self.meta)
        meta["warnings"] = list(self.meta.get("warnings", []))
        meta.update(meta_updates)
        return dataclasses.replace(self, data=np.asarray(data, dtype=np.float32), meta=meta)

    def slice(self, k: int) -> np.ndarray:
        return self.data[k]
