"""Patch sampling for training: random crops biased toward the body, flips and 90-degree rotations.

All functions work on numpy arrays in HU shaped (C, H, W) (normal dose) and (C, h, w) with
``H = h * scale`` (low dose; ``scale`` > 1 for super-resolution pairs). Crops of the low-dose image start
on multiples of the scale so a pair stays aligned; augmentations apply the same flip/rotation to both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ldct.errors import LdctError


def body_mask(nd_hu: np.ndarray, threshold_hu: float = -500.0) -> np.ndarray:
    """(H, W) or (C, H, W) HU -> (H, W) bool: pixels denser than ``threshold_hu`` (tissue, not air)."""
    x = nd_hu if nd_hu.ndim == 2 else nd_hu[nd_hu.shape[0] // 2]
    return x > threshold_hu


@dataclass(frozen=True)
class Crop:
    """Top-left corner (y, x) and size ``size`` of a crop in the normal-dose (high-resolution) image."""

    y: int
    x: int
    size: int
    body_fraction: float


def check_size(shape: tuple[int, ...], patch: int, name: str) -> None:
    """Raise :class:`LdctError` naming ``name`` when an image is smaller than the patch."""
    h, w = shape[-2:]
    if h < patch or w < patch:
        raise LdctError(f"image is {h}x{w} pixels, smaller than data.patch_size={patch}; "
                        "use a smaller patch_size or exclude this file", name)


def sample_crop(mask: np.ndarray, patch: int, rng: np.random.Generator, *, min_body: float = 0.3,
                scale: int = 1, tries: int = 12) -> Crop:
    """Choose a ``patch`` x ``patch`` crop of an (H, W) image with at least ``min_body`` body pixels.

    Centres are drawn from body pixels (so crops land on the patient, not in the air around it) with a
    small jitter; the first crop reaching ``min_body`` wins, else the best of ``tries`` draws. Images with
    no body at all get a uniform random crop. Corners are multiples of ``scale``.
    """
    H, W = mask.shape
    if H < patch or W < patch:
        raise ValueError(f"image {H}x{W} smaller than patch {patch}")
    # integral image for O(1) body fractions
    ii = np.pad(mask.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    area = float(patch * patch)

    def frac(y: int, x: int) -> float:
        return float(ii[y + patch, x + patch] - ii[y, x + patch] - ii[y + patch, x] + ii[y, x]) / area

    def snap(v: int, hi: int) -> int:
        v = min(max(v, 0), hi)
        return (v // scale) * scale

    ys, xs = np.nonzero(mask)
    best = None
    for _ in range(tries):
        if len(ys):
            k = int(rng.integers(len(ys)))
            jy, jx = rng.integers(-patch // 4, patch // 4 + 1, size=2)
            y = snap(int(ys[k]) - patch // 2 + int(jy), H - patch)
            x = snap(int(xs[k]) - patch // 2 + int(jx), W - patch)
        else:
            y = snap(int(rng.integers(H - patch + 1)), H - patch)
            x = snap(int(rng.integers(W - patch + 1)), W - patch)
        f = frac(y, x)
        if best is None or f > best.body_fraction:
            best = Crop(y, x, patch, f)
        if f >= min_body:
            break
    assert best is not None
    return best


def uniform_crop(shape: tuple[int, int], patch: int, rng: np.random.Generator, scale: int = 1) -> Crop:
    """A crop drawn uniformly over the image (no body bias); for comparison and unpaired data."""
    H, W = shape
    y = (int(rng.integers(H - patch + 1)) // scale) * scale
    x = (int(rng.integers(W - patch + 1)) // scale) * scale
    return Crop(y, x, patch, float("nan"))


def apply_crop(nd: np.ndarray, ld: np.ndarray, crop: Crop, scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cut the crop from (C, H, W) ``nd`` and the matching region of (C, H/scale, W/scale) ``ld``."""
    p = crop.size
    nd_p = nd[..., crop.y : crop.y + p, crop.x : crop.x + p]
    ly, lx, lp = crop.y // scale, crop.x // scale, p // scale
    ld_p = ld[..., ly : ly + lp, lx : lx + lp]
    return nd_p, ld_p


def augment_pair(ld: np.ndarray, nd: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply one of the 8 flips/90-degree rotations (the dihedral group) to both (C, h, w) arrays."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    return dihedral(ld, k, flip), dihedral(nd, k, flip)


def dihedral(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate the last two axes by ``k`` * 90 degrees, then flip left-right when ``flip``."""
    y = np.rot90(x, k, axes=(-2, -1))
    if flip:
        y = y[..., ::-1]
    return np.ascontiguousarray(y)
