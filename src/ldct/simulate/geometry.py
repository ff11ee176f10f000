"""Fan-beam scanner geometry (2D, flat equispaced detector, full 360-degree rotation).

Coordinates (mm, isocentre at the origin): image column ``j`` sits at ``x = (j - (W-1)/2) * ps``
and row ``i`` at ``y = (i - (H-1)/2) * ps``. At view angle ``beta`` the source sits at
``SID * (cos beta, sin beta)``; the detector is a line perpendicular to the central ray at distance
``SDD - SID`` beyond the isocentre, running along ``(-sin beta, cos beta)``. Detector channel ``k``
is centred at ``u_k = (k - (n_det-1)/2 + det_offset) * det_spacing`` (mm on the detector).

Clinical-like defaults (Siemens-like third-generation CT): 1152 views per rotation, 736 channels,
source-to-isocentre 595 mm, source-to-detector 1085 mm. :func:`default_geometry` scales the channel
pitch from the image's pixel spacing so that the fan covers the whole image (its circumscribed
circle): about 1.08 pixels per channel at the isocentre for a 512x512 slice.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

#: clinical-like defaults
DEFAULT_VIEWS = 1152
DEFAULT_CHANNELS = 736
DEFAULT_SID_MM = 595.0
DEFAULT_SDD_MM = 1085.0


@dataclass(frozen=True)
class FanBeamGeometry:
    """A 2D fan-beam geometry with a flat, equispaced detector.

    Attributes:
        n_views: projections per full 360-degree rotation (equally spaced, starting at angle 0).
        n_det: detector channels.
        det_spacing: channel pitch on the detector (mm).
        sid: source-to-isocentre distance (mm).
        sdd: source-to-detector distance (mm).
        det_offset: detector shift in channels (0.25 gives the classic quarter-detector offset).
    """

    n_views: int = DEFAULT_VIEWS
    n_det: int = DEFAULT_CHANNELS
    det_spacing: float = 1.0
    sid: float = DEFAULT_SID_MM
    sdd: float = DEFAULT_SDD_MM
    det_offset: float = 0.0

    def __post_init__(self) -> None:
        if self.n_views < 4 or self.n_det < 4:
            raise ValueError(f"geometry needs at least 4 views and 4 channels, got {self.n_views}x{self.n_det}")
        if not (0 < self.sid < self.sdd) or self.det_spacing <= 0:
            raise ValueError(f"bad geometry: need 0 < sid < sdd and det_spacing > 0 ({self})")

    # derived quantities ---------------------------------------------------------------------
    @property
    def magnification(self) -> float:
        return self.sdd / self.sid

    @property
    def iso_spacing(self) -> float:
        """Channel pitch projected to the isocentre (mm)."""
        return self.det_spacing / self.magnification

    @property
    def fov_radius(self) -> float:
        """Radius (mm) of the circle that every view covers (the scan field of view)."""
        s_max = (self.n_det / 2.0 - abs(self.det_offset)) * self.iso_spacing
        return self.sid * s_max / math.hypot(self.sid, s_max)

    def angles(self) -> np.ndarray:
        """(n_views,) view angles in radians, 0 .. 2pi (exclusive)."""
        return np.arange(self.n_views, dtype=np.float64) * (2.0 * math.pi / self.n_views)

    def iso_positions(self) -> np.ndarray:
        """(n_det,) channel centres projected to the isocentre (mm, the 'virtual detector' coordinate s)."""
        k = np.arange(self.n_det, dtype=np.float64)
        return (k - (self.n_det - 1) / 2.0 + self.det_offset) * self.iso_spacing

    def coarsened(self, view_factor: int, det_factor: int) -> FanBeamGeometry:
        """The same fan with ``view_factor`` x fewer views and ``det_factor`` x wider channels."""
        n_det = max(4, math.ceil(self.n_det / det_factor))
        return dataclasses.replace(
            self,
            n_views=max(4, self.n_views // view_factor),
            n_det=n_det,
            det_spacing=self.det_spacing * self.n_det / n_det,
            det_offset=self.det_offset * n_det / self.n_det,
        )

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        return (
            f"fan beam {self.n_views} views x {self.n_det} channels, SID {self.sid:g} mm, SDD {self.sdd:g} mm, "
            f"channel {self.iso_spacing:.3f} mm at isocentre, FOV radius {self.fov_radius:.1f} mm"
        )


def default_geometry(
    shape: tuple[int, int],
    pixel_spacing_mm: float,
    *,
    n_views: int = DEFAULT_VIEWS,
    n_det: int = DEFAULT_CHANNELS,
    sid: float = DEFAULT_SID_MM,
    sdd: float = DEFAULT_SDD_MM,
) -> FanBeamGeometry:
    """Clinical-like geometry whose fan covers an image of ``shape`` (H, W) at ``pixel_spacing_mm``.

    The channel pitch is chosen so that the scan FOV is the image's circumscribed circle (plus 1 %);
    when that circle would come near the source (very large pixels), SID and SDD are scaled up together.
    """
    h, w = shape
    radius = 0.5 * math.hypot(h, w) * pixel_spacing_mm * 1.01
    scale = max(1.0, radius / (0.8 * sid))
    sid, sdd = sid * scale, sdd * scale
    s_max = sid * radius / math.sqrt(sid * sid - radius * radius)  # virtual-detector half width
    iso_spacing = 2.0 * s_max / n_det
    return FanBeamGeometry(n_views=n_views, n_det=n_det, det_spacing=iso_spacing * sdd / sid, sid=sid, sdd=sdd)
