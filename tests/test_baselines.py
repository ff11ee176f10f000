"""Classical baselines on real CT: blind noise estimate, Gaussian filter, BM3D."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ldct.baselines import bm3d_hu, estimate_noise_sigma_hu, gaussian_filter_hu
from ldct.metrics import compute_metrics, noise_std_hu


def mayo_hu(shared_data: Path, name: str = "L067_FD_3mm_smooth_0070.raw") -> np.ndarray:
    raw = np.fromfile(shared_data / "mayo_L067_fd_raw" / name, dtype="<u2").reshape(512, 512)
    return raw.astype(np.float32) - 1024.0


def test_blind_sigma_estimate_tracks_added_noise(shared_data):
    clean = mayo_hu(shared_data)
    own = estimate_noise_sigma_hu(clean)
    assert 5.0 < own < 40.0  # the full-dose scan's own noise
    for sigma in (20.0, 60.0):
        noisy = clean + np.random.default_rng(0).normal(0, sigma, clean.shape).astype(np.float32)
        est = estimate_noise_sigma_hu(noisy)
        assert math.sqrt(max(est**2 - own**2, 0.0)) == pytest.approx(sigma, rel=0.12)
    with pytest.raises(ValueError, match="one \\(y, x\\) slice"):
        estimate_noise_sigma_hu(np.stack([clean, clean]))


def test_gaussian_filter_per_slice(shared_data):
    clean = mayo_hu(shared_data)
    noise = np.random.default_rng(1).normal(0, 40, clean.shape).astype(np.float32)
    noisy = clean + noise
    before = noisy.copy()
    out = gaussian_filter_hu(noisy, 1.0)
    assert out.dtype == np.float32 and out.shape == noisy.shape
    assert np.array_equal(noisy, before)  # input untouched
    # linear filter: white noise of std s leaves std s / (2 sqrt(pi) sigma) (= 0.282 s for sigma 1 px)
    residual = out - gaussian_filter_hu(clean, 1.0)
    assert residual[50:-50, 50:-50].std() == pytest.approx(40 / (2 * math.sqrt(math.pi)), rel=0.05)
    # a volume is filtered slice by slice: no mixing along z
    vol = np.stack([noisy, clean])
    fv = gaussian_filter_hu(vol, 1.0)
    assert np.allclose(fv[0], out) and np.allclose(fv[1], gaussian_filter_hu(clean, 1.0))


def test_bm3d_reduces_noise_of_a_real_crop(shared_data):
    clean = mayo_hu(shared_data)[200:328, 150:278]
    sigma = 40.0
    noisy = clean + np.random.default_rng(2).normal(0, sigma, clean.shape).astype(np.float32)
    before = noisy.copy()
    den = bm3d_hu(noisy)
    assert den.dtype == np.float32 and den.shape == noisy.shape
    assert np.array_equal(noisy, before)
    roi = np.zeros(clean.shape, dtype=bool)
    roi[8:-8, 8:-8] = True
    assert noise_std_hu(noisy, clean, roi=roi) == pytest.approx(sigma, rel=0.05)
    assert noise_std_hu(den, clean, roi=roi) < 0.6 * sigma
    m_in = compute_metrics(noisy, clean, ["soft_tissue"])["psnr_soft_tissue"]
    m_out = compute_metrics(den, clean, ["soft_tissue"])["psnr_soft_tissue"]
    assert m_out > m_in + 5.0
    # BM3D beats the Gaussian filter on the same crop
    m_g = compute_metrics(gaussian_filter_hu(noisy, 1.0), clean, ["soft_tissue"])["psnr_soft_tissue"]
    assert m_out > m_g
    # an explicit sigma is honoured: a tiny sigma barely changes the image
    light = bm3d_hu(noisy, sigma_hu=1.0)
    assert np.abs(light - noisy).mean() < 0.1 * np.abs(den - noisy).mean()
