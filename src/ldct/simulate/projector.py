"""Torch-native batched fan-beam projector: ray-driven forward projection and exact fan-beam FBP.

Runs unchanged on CPU and GPU; slices are batched through ``grid_sample`` as channels, so the ray
geometry is computed once per view for the whole batch.

- :func:`forward_project`: line integrals by bilinear sampling along each ray (midpoint rule inside the
  image's circumscribed circle), (B, H, W) attenuation per mm -> (B, V, D) dimensionless.
- :func:`filter_sinogram` + :func:`backproject` = :func:`fbp`: the exact FBP for equispaced collinear
  detectors (Kak & Slaney, *Principles of Computerized Tomographic Imaging*, section 3.4.2): cosine
  pre-weighting, the band-limited ramp kernel (built in the spatial domain so the DC term is exact, then
  windowed), and distance-weighted (1/U^2) backprojection over 360 degrees.

Geometry conventions are documented in :mod:`ldct.simulate.geometry`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ldct.simulate.geometry import FanBeamGeometry

#: reconstruction filters: window applied to the ramp, as a function of |f| / Nyquist in [0, 1]
FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")

#: elements per temporary tensor in the chunked loops (bounds memory: ~16 MB in float32)
_CHUNK_ELEMENTS = 1 << 22


def _window(name: str, w: torch.Tensor) -> torch.Tensor:
    if name == "ram-lak":
        return torch.ones_like(w)
    if name == "shepp-logan":
        return torch.sinc(w / 2.0)
    if name == "cosine":
        return torch.cos(w * (math.pi / 2.0))
    if name == "hamming":
        return 0.54 + 0.46 * torch.cos(w * math.pi)
    if name == "hann":
        return 0.5 + 0.5 * torch.cos(w * math.pi)
    raise ValueError(f"unknown filter {name!r}; known: {', '.join(FILTERS)}")


def ramp_filter_response(n_det: int, spacing: float, name: str = "hann", *, device=None) -> torch.Tensor:
    """Frequency response (n_pad // 2 + 1,) of the windowed band-limited ramp for ``torch.fft.rfft``.

    The ramp is the spatial kernel h[0] = 1/(4 t^2), h[odd n] = -1/(n pi t)^2, h[even n] = 0 (t = sample
    spacing), times ``spacing`` for the convolution integral and 1/2 for the 360-degree scan.
    """
    n_pad = 1 << math.ceil(math.log2(2 * n_det))
    n = torch.arange(n_pad, dtype=torch.float64, device=device)
    n = torch.where(n < n_pad // 2, n, n - n_pad)  # circular indices -n_pad/2 .. n_pad/2-1
    h = torch.zeros(n_pad, dtype=torch.float64, device=device)
    h[n == 0] = 1.0 / (4.0 * spacing * spacing)
    odd = (n.abs() % 2) == 1
    h[odd] = -1.0 / (n[odd] * math.pi * spacing) ** 2
    resp = torch.fft.rfft(h).real * spacing * 0.5
    w = torch.linspace(0.0, 1.0, resp.shape[0], dtype=torch.float64, device=device)  # |f| / Nyquist
    return (resp * _window(name, w)).to(torch.float32)


def filter_sinogram(sino: torch.Tensor, geom: FanBeamGeometry, name: str = "hann") -> torch.Tensor:
    """Cosine-weight and ramp-filter fan-beam projections along the detector.

    Args:
        sino: (B, V, D) line integrals (any number of views; D = ``geom.n_det``).
        geom: the geometry (channel positions).
        name: one of :data:`FILTERS`.
    Returns:
        (B, V, D) filtered projections Q, ready for :func:`backproject`.
    """
    if sino.shape[-1] != geom.n_det:
        raise ValueError(f"sinogram has {sino.shape[-1]} channels, geometry {geom.n_det}")
    s = torch.as_tensor(geom.iso_positions(), dtype=torch.float32, device=sino.device)
    weighted = sino * (geom.sid / torch.sqrt(geom.sid**2 + s * s))
    resp = ramp_filter_response(geom.n_det, geom.iso_spacing, name, device=sino.device)
    n_pad = 2 * (resp.shape[0] - 1)
    spec = torch.fft.rfft(weighted, n=n_pad, dim=-1)
    return torch.fft.irfft(spec * resp, n=n_pad, dim=-1)[..., : geom.n_det].contiguous()


def backproject(
    q: torch.Tensor,
    geom: FanBeamGeometry,
    shape: tuple[int, int],
    pixel_spacing_mm: float,
    *,
    angles: torch.Tensor | None = None,
    angle_step: float | None = None,
) -> torch.Tensor:
    """Distance-weighted fan-beam backprojection: f(x) = dbeta * sum_v Q_v(s(x)) / U(x, beta_v)^2.

    Args:
        q: (B, V, D) filtered projections.
        geom: the geometry; ``angles`` (V,) overrides its view angles (e.g. merged views).
        shape: (H, W) of the output image; ``pixel_spacing_mm`` its pixel size.
        angle_step: dbeta in radians (default 2 pi / V).
    Returns:
        (B, H, W) image.
    """
    b, v, d = q.shape
    dev = q.device
    h, w = shape
    if angles is None:
        angles = torch.arange(v, dtype=torch.float64, device=dev) * (2 * math.pi / v)
    dbeta = 2 * math.pi / v if angle_step is None else angle_step
    cos, sin = torch.cos(angles).float(), torch.sin(angles).float()
    x = ((torch.arange(w, device=dev, dtype=torch.float32) - (w - 1) / 2.0) * pixel_spacing_mm)[None, None, :]
    y = ((torch.arange(h, device=dev, dtype=torch.float32) - (h - 1) / 2.0) * pixel_spacing_mm)[None, :, None]
    tau = geom.iso_spacing
    gscale = geom.sid * 2.0 / (tau * d)
    goff = geom.det_offset * 2.0 / d
    # 4-fold symmetry: view beta + k*90deg at pixel p equals view beta at the pixel rotated back, so one
    # grid serves four views (as channels) and the partial images are rotated back by k * 90 degrees.
    sym = 4 if (h == w and _quarter_symmetric(angles)) else 1
    nv = v // sym
    inp = q.reshape(b, sym, nv, d).permute(2, 0, 1, 3).reshape(nv, b * sym, 1, d)  # (V/sym, B*sym, 1, D)
    acc = torch.zeros(b * sym, h, w, device=dev, dtype=torch.float32)
    chunk = max(1, min(nv, _CHUNK_ELEMENTS // (h * w * max(b * sym, 2))))
    grid_buf = torch.zeros(chunk, h, w, 2, device=dev, dtype=torch.float32)  # [..., 1] stays 0 (1-D input)
    for s0 in range(0, nv, chunk):
        c = cos[s0 : min(s0 + chunk, nv), None, None]
        sn = sin[s0 : min(s0 + chunk, nv), None, None]
        n = c.shape[0]
        grid = grid_buf[:n]
        # 1 / (distance from the source along the central ray)
        inv = torch.reciprocal_((geom.sid - x * c) - y * sn)
        # normalised detector coordinate (align_corners=False), written into the grid buffer
        torch.mul((y * (c * gscale)) - (x * (sn * gscale)), inv, out=grid[..., 0])
        if goff:
            grid[..., 0] -= goff
        vals = F.grid_sample(inp[s0 : s0 + n], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        acc += torch.einsum("nchw,nhw->chw", vals, inv.square_())
    acc = acc.view(b, sym, h, w)
    out = acc[:, 0].clone()
    for k in range(1, sym):
        out += torch.rot90(acc[:, k], -k, dims=(-2, -1))
    return out * (dbeta * geom.sid * geom.sid)


def fbp(
    sino: torch.Tensor,
    geom: FanBeamGeometry,
    shape: tuple[int, int],
    pixel_spacing_mm: float,
    *,
    filter: str = "hann",
    view_merge: int = 1,
) -> torch.Tensor:
    """Fan-beam filtered backprojection, (B, V, D) line integrals -> (B, H, W) attenuation per mm.

    ``view_merge`` = k > 1 sums groups of k consecutive views and backprojects each sum once at the
    group's mean angle: k times cheaper. For a smooth sinogram this blurs azimuthally; for *independent
    noise* it keeps every pixel's variance and the local texture (see docs/simulation.md), which is
    what the low-dose noise path uses it for.
    """
    angles = torch.as_tensor(geom.angles(), device=sino.device)
    if view_merge > 1:
        sino, angles = merge_views(sino, angles, view_merge)
    q = filter_sinogram(sino, geom, filter)
    return backproject(q, geom, shape, pixel_spacing_mm, angles=angles, angle_step=2 * math.pi / geom.n_views)


def merge_views(sino: torch.Tensor, angles: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum groups of ``k`` consecutive views: (B, V, D) -> (B, V // k, D) and their mean angles."""
    b, v, d = sino.shape
    if v % k:
        raise ValueError(f"view_merge {k} must divide the number of views {v}")
    return sino.reshape(b, v // k, k, d).sum(2), angles.reshape(v // k, k).mean(1)


def forward_project(
    mu: torch.Tensor,
    geom: FanBeamGeometry,
    pixel_spacing_mm: float,
    *,
    step: float = 1.0,
) -> torch.Tensor:
    """Ray-driven fan-beam forward projection.

    Args:
        mu: (B, H, W) linear attenuation (per mm); zero outside the image.
        geom: the geometry (its fan should cover the image; see ``geom.fov_radius``).
        pixel_spacing_mm: pixel size.
        step: sampling step along each ray in pixels (bilinear interpolation, midpoint rule).
    Returns:
        (B, V, D) line integrals (dimensionless).
    """
    b, h, w = mu.shape
    dev = mu.device
    radius = 0.5 * math.hypot(h, w) * pixel_spacing_mm
    n_samp = max(2, math.ceil(2.0 * radius / (step * pixel_spacing_mm)))
    beta = torch.as_tensor(geom.angles(), device=dev)
    cos, sin = torch.cos(beta).float(), torch.sin(beta).float()
    s = torch.as_tensor(geom.iso_positions(), dtype=torch.float32, device=dev)
    l0 = torch.sqrt(s * s + geom.sid**2)
    t_c = geom.sid**2 / l0  # distance from source to the ray's point nearest the isocentre
    r = geom.sid * s / l0  # ray's distance from the isocentre
    half = torch.sqrt(torch.clamp(radius**2 - r * r, min=0.0))  # half chord inside the circle
    frac = (torch.arange(n_samp, device=dev, dtype=torch.float32) + 0.5) * (2.0 / n_samp) - 1.0
    t = t_c[:, None] + half[:, None] * frac[None, :]  # (D, S) distances from the source
    a = s[:, None] / l0[:, None]  # ray direction in the (e_u, e_s) frame: a * e_u - bcoef * e_s
    bcoef = geom.sid / l0[:, None]
    # position = sid*e_s + t*(a*e_u - bcoef*e_s) = (sid - t*bcoef) * e_s + t*a * e_u
    along_s = geom.sid - t * bcoef  # (D, S)
    along_u = t * a
    dt = (2.0 * half / n_samp)[None, :]  # (1, D)
    sym = 4 if (h == w and geom.n_views % 4 == 0) else 1  # view beta + k*90deg = view beta of rot90(mu, k)
    img = torch.cat([torch.rot90(mu, k, dims=(-2, -1)) for k in range(sym)], dim=0).unsqueeze(0)  # (1, sym*B, H, W)
    nv = geom.n_views // sym
    sx, sy = 2.0 / (w * pixel_spacing_mm), 2.0 / (h * pixel_spacing_mm)
    base = torch.stack((along_s, along_u), dim=-1).reshape(1, -1, 2)  # (1, D*S, 2)
    out = torch.empty(b, sym, nv, geom.n_det, device=dev, dtype=torch.float32)
    chunk = max(1, _CHUNK_ELEMENTS // (geom.n_det * n_samp * max(b * sym, 2)))
    for v0 in range(0, nv, chunk):
        c = cos[v0 : min(v0 + chunk, nv), None, None]
        sn = sin[v0 : min(v0 + chunk, nv), None, None]
        n = c.shape[0]
        # position = along_s * e_s + along_u * e_u, e_s = (cos, sin), e_u = (-sin, cos); normalised coords
        rot = torch.cat((torch.cat((c * sx, sn * sy), -1), torch.cat((-sn * sx, c * sy), -1)), 1)  # (n, 2, 2)
        grid = torch.matmul(base, rot).view(1, n * geom.n_det, n_samp, 2)
        vals = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[:, :, v0 : v0 + n] = (vals.sum(-1).view(sym, b, n, geom.n_det) * dt).transpose(0, 1)
    return out.view(b, geom.n_views, geom.n_det)


def _quarter_symmetric(angles: torch.Tensor) -> bool:
    """True when the views come in groups shifted by exactly 90, 180 and 270 degrees (v, v + V/4, ...)."""
    v = angles.shape[0]
    if v % 4:
        return False
    a = angles.reshape(4, v // 4).double()
    shift = a - a[:1] - torch.arange(4, device=a.device, dtype=torch.float64)[:, None] * (math.pi / 2)
    return bool(torch.all(shift.abs() < 1e-6))
