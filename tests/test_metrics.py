"""Image metrics equal scikit-image on real slices; noise std, ROIs and NPS measure what they claim."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage as ndi
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ldct.hu import METRIC_WINDOWS, Window
from ldct.metrics import (
    body_mask,
    compute_metrics,
    compute_metrics_batch,
    describe_metrics,
    metric_keys,
    noise_power_spectrum,
    noise_std_hu,
    soft_tissue_roi,
)
from ldct.metrics.noise import nps_from_rois


def mayo_hu(shared_data: Path, name: str) -> np.ndarray:
    raw = np.fromfile(shared_data / "mayo_L067_fd_raw" / name, dtype="<u2").reshape(512, 512)
    return raw.astype(np.float32) - 1024.0


def dicom_hu(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).astype(np.float32)


SMOOTH = "L067_FD_3mm_smooth_0070.raw"
SHARP = "L067_FD_3mm_sharp_000069.raw"


def skimage_metrics(pred: np.ndarray, ref: np.ndarray, w: Window) -> dict[str, float]:
    p, r = np.clip(pred, w.lo, w.hi).astype(np.float64), np.clip(ref, w.lo, w.hi).astype(np.float64)
    return {
        "psnr": peak_signal_noise_ratio(r, p, data_range=w.width),
        "ssim": structural_similarity(
            r, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=w.width
        ),
        "mse": float(np.mean((p - r) ** 2)),
    }


@pytest.fixture(scope="module")
def real_slices(shared_data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(prediction, reference) pairs on real slices: noisy, smoothed and noisy+smoothed predictions."""
    rng = np.random.default_rng(0)
    chest = dicom_hu(shared_data / "chest_dicom" / "1-15.dcm")[96:352, 96:352]
    head = dicom_hu(sorted((shared_data / "head_dicom_tilted").glob("*.dcm"))[14])[128:384, 128:384]
    mayo = mayo_hu(shared_data, SHARP)
    return [
        (mayo + rng.normal(0, 30, mayo.shape).astype(np.float32), mayo),
        (ndi.gaussian_filter(chest, 1.2), chest),
        (ndi.gaussian_filter(head, 0.8) + rng.normal(0, 5, head.shape).astype(np.float32), head),
    ]


def test_metrics_equal_skimage_on_real_slices(real_slices):
    for pred, ref in real_slices:
        ours = compute_metrics(pred, ref)
        assert set(ours) == set(metric_keys())
        for name, w in METRIC_WINDOWS.items():
            sk = skimage_metrics(pred, ref, w)
            assert ours[f"psnr_{name}"] == pytest.approx(sk["psnr"], abs=1e-4)
            assert ours[f"ssim_{name}"] == pytest.approx(sk["ssim"], abs=1e-4)
            assert ours[f"mse_{name}"] == pytest.approx(sk["mse"], rel=1e-6)
            assert ours[f"rmse_{name}"] == pytest.approx(math.sqrt(sk["mse"]), rel=1e-6)


def test_batched_torch_backend_equals_skimage(real_slices):
    pred = np.stack([p[:200, :200] for p, _ in real_slices])
    ref = np.stack([r[:200, :200] for _, r in real_slices])
    rows = compute_metrics_batch(pred, ref, ["soft_tissue", "head"], device="cpu")
    for i, row in enumerate(rows):
        for name in ("soft_tissue", "head"):
            sk = skimage_metrics(pred[i], ref[i], METRIC_WINDOWS[name])
            assert row[f"psnr_{name}"] == pytest.approx(sk["psnr"], abs=1e-4)
            assert row[f"ssim_{name}"] == pytest.approx(sk["ssim"], abs=1e-4)


def test_windows_clip_and_name_the_metrics(real_slices):
    pred, ref = real_slices[0]
    base = compute_metrics(pred, ref, ["soft_tissue"])
    assert set(base) == {"psnr_soft_tissue", "ssim_soft_tissue", "rmse_soft_tissue", "mse_soft_tissue"}
    # a change outside the window (bone above 240 HU made brighter) changes nothing in that window
    changed = pred.copy()
    changed[pred > 400] += 500.0
    assert compute_metrics(changed, ref, ["soft_tissue"]) == base
    assert (
        compute_metrics(changed, ref, ["full"])["psnr_full"]
        < compute_metrics(pred, ref, ["full"])["psnr_full"]
    )
    assert compute_metrics(ref, ref, ["full"])["psnr_full"] == math.inf
    desc = describe_metrics(["soft_tissue"])["psnr_soft_tissue"]
    assert "[-160, 240] HU" in desc and "data_range 400" in desc
    with pytest.raises(ValueError, match="unknown metric window"):
        compute_metrics(pred, ref, ["lungs"])


def test_body_mask_and_soft_tissue_roi(shared_data):
    chest = dicom_hu(shared_data / "chest_dicom" / "1-15.dcm")
    body = body_mask(chest)
    assert not body[:20, :20].any() and not body[-20:, -20:].any()  # air outside
    assert body[256, 256]
    assert body[chest < -800].any()  # the lungs are filled in
    assert 0.2 < body.mean() < 0.8
    roi = soft_tissue_roi(chest)
    assert roi.any() and not (roi & ~body).any()
    smooth = ndi.uniform_filter(chest.astype(np.float64), 9)
    assert np.all((smooth[roi] >= -100) & (smooth[roi] <= 150))
    vol = np.stack([chest, chest])
    assert np.array_equal(body_mask(vol)[1], body)
    with pytest.raises(ValueError, match="no soft-tissue ROI"):
        noise_std_hu(np.full((64, 64), -1000.0))


@pytest.mark.parametrize("name", [SMOOTH, SHARP])
def test_noise_std_recovers_added_sigma(shared_data, name):
    clean = mayo_hu(shared_data, name)
    sigma = 20.0
    noisy = clean + np.random.default_rng(3).normal(0, sigma, clean.shape).astype(np.float32)
    # with the clean reference: the std of the difference in soft tissue
    assert noise_std_hu(noisy, clean) == pytest.approx(sigma, rel=0.03)
    # blind (high-pass) on a fixed ROI: the added variance on top of the scan's own noise
    roi = soft_tissue_roi(clean)
    own, total = noise_std_hu(clean, roi=roi), noise_std_hu(noisy, roi=roi)
    assert own > 5.0  # real scans have noise of their own
    assert math.sqrt(total**2 - own**2) == pytest.approx(sigma, rel=0.08)


def test_nps_of_white_and_filtered_noise(shared_data):
    clean = mayo_hu(shared_data, SMOOTH)
    rng = np.random.default_rng(5)
    white = rng.normal(0, 20, clean.shape)
    nps = noise_power_spectrum(clean + white, clean, pixel_spacing_mm=0.7, roi_size=32)
    assert nps.n_rois >= 10
    assert nps.variance == pytest.approx(400.0, rel=0.1)  # the NPS integrates to the variance
    inner = nps.radial[2:-2]
    assert inner.std() / inner.mean() < 0.15  # white noise: flat spectrum
    assert nps.radial_freq[-1] == pytest.approx(0.5 / 0.7, rel=0.05)  # up to Nyquist in cycles/mm
    blurred = noise_power_spectrum(clean + ndi.gaussian_filter(white, 1.0), clean, pixel_spacing_mm=0.7)
    assert blurred.mean_frequency < 0.6 * nps.mean_frequency
    direct = nps_from_rois(white[None, :64, :64], pixel_spacing_mm=1.0)
    assert direct.variance == pytest.approx(white[:64, :64].var(), rel=1e-9)


def test_nps_texture_sharp_kernel_finer_than_smooth(shared_data):
    """Real L067 full-dose slices: the sharp kernel's noise has its power at higher frequencies."""
    sharp = noise_power_spectrum(mayo_hu(shared_data, SHARP), pixel_spacing_mm=0.7)
    smooth = noise_power_spectrum(mayo_hu(shared_data, SMOOTH), pixel_spacing_mm=0.7)
    assert sharp.mean_frequency > 1.3 * smooth.mean_frequency
