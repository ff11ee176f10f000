"""Is a scan like the data a model was trained on? Pixel spacing and reconstruction-kernel sharpness.

A denoiser learns the noise texture of its training scans: noise grain scales with the pixel spacing and
sharp kernels carry more high-frequency noise. :func:`domain_warnings` says (once per scan) when a scan lies
far outside the model's training range, so the user knows to expect residual noise or over-smoothing.

The training range comes from the model's metadata (``data_summary``): ``pixel_spacing_mm`` ([min, max] of
the training scans, written by ``ldct.data.build_datasets``) and the kernels of the training scans.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ldct.volume import Volume

#: How far outside the training range a scan may lie before a warning: a factor for spacing,
#: sharpness points for kernels (Siemens numbering: B30f = 30, D45f = 45, B70f = 70).
SPACING_FACTOR = 1.5
SHARPNESS_MARGIN = 15.0

_GE = {"SOFT": 25.0, "STANDARD": 35.0, "STD": 35.0, "STND": 35.0, "DETAIL": 45.0, "CHST": 45.0,
       "LUNG": 60.0, "BONE": 65.0, "BONEPLUS": 70.0, "EDGE": 75.0}
_WORDS = {"smooth": 30.0, "soft": 30.0, "standard": 35.0, "sharp": 45.0, "bone": 65.0, "lung": 60.0}
_SIEMENS = re.compile(r"^[A-Za-z]{1,2}(\d{2})")  # B30f, D45f, Br38f, I44f, Hr64, Qr40


def kernel_sharpness(kernel: str | None) -> float | None:
    """A vendor-neutral sharpness number for a kernel name (Siemens scale), None when unknown.

    >>> kernel_sharpness("B30f"), kernel_sharpness("Br38f\\\\3"), kernel_sharpness("BONE"), kernel_sharpness("x")
    (30.0, 38.0, 65.0, None)
    """
    if not kernel:
        return None
    name = str(kernel).split("\\")[0].split("/")[0].strip()
    m = _SIEMENS.match(name)
    if m:
        return float(m.group(1))
    word = re.sub(r"[^A-Z]", "", name.upper())
    if word in _GE:
        return _GE[word]
    return _WORDS.get(name.lower())


def training_domain(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Pixel-spacing range and kernel sharpness range of a model's training scans (None where unknown)."""
    summary = meta.get("data_summary") or {}
    spacing = summary.get("pixel_spacing_mm")
    train_ids = set(((summary.get("split") or {}).get("train")) or [])
    kernels = [s.get("kernel") for s in summary.get("scans") or []
               if s.get("kernel") and (not train_ids or s.get("patient_id") in train_ids)]
    sharp = [k for k in (kernel_sharpness(k) for k in kernels) if k is not None]
    ok = isinstance(spacing, list | tuple) and len(spacing) == 2 and all(
        isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in spacing)
    return {
        "pixel_spacing_mm": [float(spacing[0]), float(spacing[1])] if ok else None,
        "kernels": sorted(set(map(str, kernels))),
        "sharpness": [min(sharp), max(sharp)] if sharp else None,
    }


def domain_warnings(vol: Volume, meta: Mapping[str, Any]) -> list[str]:
    """Warnings (at most one per property) when ``vol`` lies far outside the model's training data."""
    dom = training_domain(meta)
    out = []
    px = float(min(vol.spacing[1], vol.spacing[2]))
    rng = dom["pixel_spacing_mm"]
    if rng and math.isfinite(px) and px > 0 and not (rng[0] / SPACING_FACTOR <= px <= rng[1] * SPACING_FACTOR):
        out.append(f"pixel spacing {px:.3g} mm is far from the model's training data ({rng[0]:.3g}-{rng[1]:.3g} mm): "
                   "the noise grain differs, expect residual noise or over-smoothing")
    kernel = vol.meta.get("kernel")
    k = kernel_sharpness(kernel)
    sr = dom["sharpness"]
    if k is not None and sr and not (sr[0] - SHARPNESS_MARGIN <= k <= sr[1] + SHARPNESS_MARGIN):
        how = "sharper" if k > sr[1] else "smoother"
        out.append(f"kernel {kernel} is much {how} than the model's training kernels ({', '.join(dom['kernels'])}): "
                   "expect residual noise or over-smoothing; consider fine-tuning on this scanner")
    return out
