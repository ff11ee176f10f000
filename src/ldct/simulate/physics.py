"""HU <-> attenuation and the two projector calls the noise path needs.

The low-dose image is ``normal-dose image + FBP(dp)`` (see :mod:`ldct.simulate.noise`), so the
simulator never reconstructs the anatomy itself; it needs

1. the normal-dose line integrals ``p``, only to set the noise *variance* of each ray, which depends
   smoothly on ``p``. :func:`line_integrals` therefore projects an area-downsampled image with a
   coarsened geometry and interpolates back to the full sinogram grid (``variance_downsample`` = 4
   cuts the projection work by ~256x); ``variance_downsample=1`` projects at full resolution.
2. the FBP of the noise increment, at the full detector sampling (texture) but with groups of
   ``view_merge`` consecutive views summed (independent noise: each pixel's variance is unchanged).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ldct.simulate.geometry import FanBeamGeometry
from ldct.simulate.projector import fbp, forward_project

#: linear attenuation of water at an effective energy of ~70 keV (NIST XCOM: 0.193 cm^2/g), per mm
MU_WATER_PER_MM = 0.0193
#: pixels below this HU are padding outside the scanner's reconstruction circle: kept as they are
PADDING_HU = -1500.0


def hu_to_mu(hu: torch.Tensor, mu_water: float = MU_WATER_PER_MM) -> torch.Tensor:
    """(B, H, W) HU -> linear attenuation per mm (air and padding -> 0)."""
    return torch.clamp(mu_water * (1.0 + hu / 1000.0), min=0.0)


def resample_sinogram(p: torch.Tensor, src: FanBeamGeometry, dst: FanBeamGeometry) -> torch.Tensor:
    """Bilinear resampling of (B, Vs, Ds) line integrals from geometry ``src`` to ``dst`` -> (B, Vd, Dd).

    Both geometries share the fan (SID, SDD, detector extent); views wrap around 360 degrees.
    """
    _b, _vs, ds = p.shape
    dev = p.device
    wrapped = torch.cat([p, p[:, :1]], dim=1).unsqueeze(0)  # (1, B, Vs + 1, Ds)
    s = torch.as_tensor(dst.iso_positions(), dtype=torch.float32, device=dev)
    idx_d = s / src.iso_spacing - src.det_offset + (ds - 1) / 2.0
    gx = idx_d / (ds - 1) * 2.0 - 1.0
    gy = torch.arange(dst.n_views, device=dev, dtype=torch.float32) / dst.n_views * 2.0 - 1.0
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1).unsqueeze(0)
    return F.grid_sample(wrapped, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def line_integrals(
    mu: torch.Tensor,
    geom: FanBeamGeometry,
    pixel_spacing_mm: float,
    *,
    variance_downsample: int = 4,
) -> torch.Tensor:
    """Normal-dose line integrals on the full sinogram grid of ``geom``.

    Args:
        mu: (B, H, W) attenuation per mm.
        geom: full geometry.
        pixel_spacing_mm: pixel size of ``mu``.
        variance_downsample: f > 1 projects the f x f area-averaged image with f x fewer views and
            f x wider channels, then interpolates; 1 = full-resolution projection.
    Returns:
        (B, V, D) line integrals.
    """
    f = int(variance_downsample)
    if f <= 1:
        return forward_project(mu, geom, pixel_spacing_mm)
    _b, h, w = mu.shape
    ph, pw = (-h) % f, (-w) % f
    if ph or pw:
        mu = F.pad(mu, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    coarse = F.avg_pool2d(mu.unsqueeze(1), f).squeeze(1)
    cgeom = geom.coarsened(f, f)
    p = forward_project(coarse, cgeom, pixel_spacing_mm * f)
    return resample_sinogram(p, cgeom, geom)


def noise_image_hu(
    dp: torch.Tensor,
    geom: FanBeamGeometry,
    shape: tuple[int, int],
    pixel_spacing_mm: float,
    *,
    filter: str = "hann",
    view_merge: int = 4,
    mu_water: float = MU_WATER_PER_MM,
) -> torch.Tensor:
    """(B, V, D) line-integral noise -> (B, H, W) image noise in HU (fan-beam FBP, merged views)."""
    k = effective_view_merge(geom, view_merge)
    return fbp(dp, geom, shape, pixel_spacing_mm, filter=filter, view_merge=k) * (1000.0 / mu_water)


def effective_view_merge(geom: FanBeamGeometry, view_merge: int) -> int:
    """The largest k <= view_merge that divides the number of views."""
    k = max(1, int(view_merge))
    while geom.n_views % k:
        k -= 1
    return k


def fov_mask(shape: tuple[int, int], pixel_spacing_mm: float, geom: FanBeamGeometry) -> torch.Tensor:
    """(H, W) bool: pixels inside the scan field of view."""
    h, w = shape
    y = (torch.arange(h, dtype=torch.float32) - (h - 1) / 2.0) * pixel_spacing_mm
    x = (torch.arange(w, dtype=torch.float32) - (w - 1) / 2.0) * pixel_spacing_mm
    return (x[None, :] ** 2 + y[:, None] ** 2) <= geom.fov_radius**2 * (1 - 1e-6)


__all__ = [
    "MU_WATER_PER_MM",
    "PADDING_HU",
    "effective_view_merge",
    "fov_mask",
    "hu_to_mu",
    "line_integrals",
    "noise_image_hu",
    "resample_sinogram",
]
