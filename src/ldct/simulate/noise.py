"""Projection-domain noise insertion (Yu et al. 2012; Zeng et al. 2015).

A normal-dose scan's transmitted counts are ``N = I0 * exp(-p)`` (plus its own quantum and electronic
noise, already in the image). A scan at dose fraction ``d`` would measure counts with mean ``d * N``
and variance ``d * N + sigma_e^2``. Writing ``N_ld = d * N + sqrt(d (1 - d) N + (1 - d^2) sigma_e^2) * xi``
(xi standard normal) gives exactly that mean and variance *including* the noise the normal-dose
counts already had, so only the extra noise is added (Zeng et al. 2015, IEEE TNS 62(5):2226, eq. 10).
Counts are floored at ``count_floor`` before the log (photon starvation), and the line-integral
increment is ``dp = log(d * N) - log(N_ld)``; the low-dose image is the normal-dose image plus the
FBP of ``dp``.

``N`` is computed from the forward projection of the normal-dose image (which stands in for the
measured sinogram; Yu et al. used the scanner's raw data).
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: electronic noise variance in counts^2 per detector reading (Yu 2012 / Zeng 2015 use ~10)
DEFAULT_SIGMA_E = math.sqrt(10.0)
#: counts are floored here before the log
DEFAULT_COUNT_FLOOR = 1.0


def slice_generator(seed: int | None, index: int, device: torch.device | str = "cpu", *keys: int) -> torch.Generator:
    """A torch generator for slice ``index`` (and further integer ``keys``) of a call with ``seed``.

    Seeding per slice makes each slice's noise independent of how slices are batched; None = fresh
    OS entropy.
    """
    ss = np.random.SeedSequence(None if seed is None else [int(seed) & 0xFFFFFFFF, index, *keys])
    g = torch.Generator(device=device)
    g.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] & 0x7FFFFFFFFFFFFFFF))
    return g


def standard_normal(shape: tuple[int, ...], seeds: list[torch.Generator], device) -> torch.Tensor:
    """(B, *shape) standard normal numbers, slice b drawn from generator ``seeds[b]``."""
    return torch.stack([torch.randn(shape, generator=g, device=device) for g in seeds])


def low_dose_increment(
    p: torch.Tensor,
    dose: float,
    i0: float | torch.Tensor,
    xi: torch.Tensor,
    *,
    sigma_e: float = DEFAULT_SIGMA_E,
    count_floor: float = DEFAULT_COUNT_FLOOR,
) -> torch.Tensor:
    """Line-integral increment p_ld - p for dose fraction ``dose``.

    Args:
        p: (B, V, D) normal-dose line integrals.
        dose: fraction of the normal dose, 0 < dose <= 1.
        i0: normal-dose incident counts per detector reading (scalar or (B, 1, 1) per slice).
        xi: (B, V, D) standard normal numbers.
        sigma_e: electronic noise std in counts.
        count_floor: low-dose counts are floored here before the log.
    Returns:
        (B, V, D) increment dp (zero for dose 1).
    """
    if dose >= 1.0:
        return torch.zeros_like(p)
    n = i0 * torch.exp(-p)
    mean = dose * n
    std = torch.sqrt(dose * (1.0 - dose) * n + (1.0 - dose * dose) * sigma_e * sigma_e)
    n_ld = torch.clamp(mean + std * xi, min=count_floor)
    return torch.log(torch.clamp(mean, min=1e-30)) - torch.log(n_ld)


def full_dose_std(p: torch.Tensor, i0: float | torch.Tensor, *, sigma_e: float = 0.0) -> torch.Tensor:
    """(B, V, D) std of the line integrals of a full-dose scan at flux ``i0`` (first-order, Gaussian)."""
    n = i0 * torch.exp(-p)
    return torch.sqrt(n + sigma_e * sigma_e) / n


def tube_current_modulation(p: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Angular tube-current modulation: relative flux per view, (B, V, D) -> (B, V, 1), mean 1 per slice.

    Scanners raise the tube current for views through more tissue (e.g. Siemens CARE Dose4D, used for
    the Mayo data). With ``strength`` 1 the flux follows ``exp(p_max / 2)`` (p_max: the view's largest
    line integral), the square-root-of-attenuation rule that minimises noise for a given dose; 0 = a
    constant tube current.
    """
    if strength <= 0:
        return torch.ones(p.shape[0], p.shape[1], 1, device=p.device, dtype=p.dtype)
    pm = p.amax(-1, keepdim=True)
    m = torch.exp((0.5 * strength) * (pm - pm.mean(1, keepdim=True)))
    return m / m.mean(1, keepdim=True)
