"""Image-domain noise: additive Gaussian and signal-dependent Poisson + Gaussian.

For users without projection physics and for photographs (``is_hu`` False). Works element-wise, so
any shape works: (H, W), (Z, H, W) grayscale or (..., H, W, C) colour (independent noise per channel).
The noise is white (flat noise power spectrum), unlike CT's FBP noise; :mod:`ldct.simulate.pipeline`
sets its strength from the dose like the projection mode (added std = sigma_full * sqrt(1/d - 1)).
"""

from __future__ import annotations

import numpy as np

from ldct.errors import LdctError

IMAGE_MODES = ("gaussian", "poisson-gaussian")


def image_noise(
    x: np.ndarray,
    *,
    mode: str = "gaussian",
    sigma: float,
    gain: float = 0.0,
    black: float = 0.0,
    seed: int | None = None,
    clip: tuple[float, float] | None = None,
) -> np.ndarray:
    """Add image-domain noise.

    Args:
        x: image(s), any shape (HU for CT, intensities for photographs).
        mode: ``"gaussian"``: ``x + sigma * n``; ``"poisson-gaussian"``:
            ``black + gain * Poisson((x - black) / gain) + sigma * n`` (variance ``gain * (x - black) +
            sigma^2``, the Poisson-Gaussian sensor model of Foi et al. 2008), n standard normal.
        sigma: Gaussian std, in the units of ``x``.
        gain: units of ``x`` per Poisson count (poisson-gaussian only, > 0).
        black: the value of zero signal (e.g. -1024 for CT in HU, 0 for photographs).
        seed: random seed (same seed, same noise).
        clip: optional (lo, hi) range of the output (e.g. (0, 255) for 8-bit photographs).
    Returns:
        float32 array of the same shape.
    """
    if not np.all(np.isfinite(x)):
        raise LdctError("image contains NaN or infinite values")
    if sigma < 0 or not np.isfinite(sigma):
        raise LdctError(f"noise sigma must be >= 0, got {sigma}")
    rng = np.random.default_rng(seed)
    x64 = np.asarray(x, dtype=np.float64)
    if mode == "gaussian":
        out = x64 + sigma * rng.standard_normal(x64.shape)
    elif mode == "poisson-gaussian":
        if not gain > 0:
            raise LdctError(f"poisson-gaussian noise needs a gain > 0, got {gain}")
        lam = np.clip(x64 - black, 0.0, None) / gain
        out = black + gain * rng.poisson(lam) + sigma * rng.standard_normal(x64.shape)
        out = np.where(x64 < black, x64 + sigma * rng.standard_normal(x64.shape), out)
    else:
        raise LdctError(f"unknown image noise mode {mode!r}; known: {', '.join(IMAGE_MODES)}")
    if clip is not None:
        out = np.clip(out, clip[0], clip[1])
    return out.astype(np.float32)


def intensity_range(x: np.ndarray) -> float:
    """Full-scale value of a photograph: 1 (float images in [0, 1]), 255 (8-bit) or 65535 (16-bit)."""
    hi = float(np.max(x)) if x.size else 0.0
    return 1.0 if hi <= 1.0 else 255.0 if hi <= 255.0 else 65535.0
