"""Task-based image quality (ldct.metrics.task) against analytic values: TTF of a Gaussian-blurred edge,
d' of a known disk in white noise, the structure score of noise vs blurred anatomy, noise texture."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.special import erf

from ldct.io import read_volume
from ldct.metrics.task import (
    cho_dprime,
    insert_disk,
    noise_texture,
    npw_dprime,
    structure_score,
    ttf_disk,
)


def _blurred_disk(n: int, radius: float, sigma: float, contrast: float) -> np.ndarray:
    """A disk whose edge is blurred by a Gaussian of ``sigma`` px (erf profile across the edge)."""
    c = (n - 1) / 2
    yy, xx = np.mgrid[0:n, 0:n]
    d = np.hypot(yy - c, xx - c)
    return contrast * 0.5 * (1 + erf((radius - d) / (math.sqrt(2) * sigma)))


@pytest.mark.parametrize("sigma_px", [1.0, 2.0])
def test_ttf_of_a_gaussian_blurred_edge_matches_the_analytic_mtf(sigma_px):
    spacing = 0.7
    img = _blurred_disk(129, 30.0, sigma_px, 80.0) + 40.0
    t = ttf_disk(img, (64.0, 64.0), 30.0, spacing)
    s_mm = sigma_px * spacing
    mtf50 = math.sqrt(math.log(2) / (2 * math.pi**2)) / s_mm  # exp(-2 pi^2 s^2 f^2) = 0.5
    mtf10 = math.sqrt(math.log(10) / (2 * math.pi**2)) / s_mm
    assert t.mtf50 == pytest.approx(mtf50, rel=0.05)
    assert t.mtf10 == pytest.approx(mtf10, rel=0.05)
    assert t.contrast_hu == pytest.approx(80.0, rel=0.02)
    analytic = np.exp(-2 * math.pi**2 * s_mm**2 * t.freq**2)
    assert np.abs(t.ttf - analytic)[t.freq < mtf10].max() < 0.05


def test_ttf_of_a_noisy_inserted_disk_averages_realisations():
    """The partial-volume disk of insert_disk, blurred by 1.5 px and noisy: 20 realisations give the MTF50
    of the blur and the pixel aperture (sinc) within 5 %, and a sharper edge has the higher MTF50."""
    rng = np.random.default_rng(0)
    base = np.zeros((97, 97), np.float32)
    disk = insert_disk(base, (48.0, 48.0), 20.0, 50.0)
    blurred = ndi.gaussian_filter(disk, 1.5)
    stack = blurred[None] + rng.normal(0, 10, (20, 97, 97))
    t = ttf_disk(stack, (48.0, 48.0), 20.0, 1.0)
    f = np.linspace(0, 0.5, 5001)
    model = np.exp(-2 * math.pi**2 * 1.5**2 * f**2) * np.abs(np.sinc(f))
    expect = f[np.argmax(model < 0.5)]
    assert t.mtf50 == pytest.approx(expect, rel=0.05)
    sharper = ttf_disk(ndi.gaussian_filter(disk, 0.8)[None] + rng.normal(0, 10, (20, 97, 97)), (48.0, 48.0), 20.0, 1.0)
    assert sharper.mtf50 > 1.3 * t.mtf50


def _rois(n: int, size: int, signal: np.ndarray, sigma: float, rng) -> tuple[np.ndarray, np.ndarray]:
    present = signal[None] + rng.normal(0, sigma, (n, size, size))
    absent = rng.normal(0, sigma, (n, size, size))
    return present, absent


def test_dprime_of_a_disk_in_white_noise_matches_the_ideal_observer():
    """In white Gaussian noise the Hotelling (ideal linear) and the non-prewhitening observers both reach
    d' = ||s|| / sigma; the CHO with Laguerre-Gauss channels comes within 10 % of it."""
    rng = np.random.default_rng(1)
    size, radius, contrast, sigma = 33, 4.0, 12.0, 25.0
    signal = insert_disk(np.zeros((size, size), np.float32), (16.0, 16.0), radius, contrast).astype(np.float64)
    ideal = float(np.sqrt((signal**2).sum()) / sigma)
    assert 2.0 < ideal < 4.0
    present, absent = _rois(400, size, signal, sigma, rng)
    assert npw_dprime(present, absent, signal) == pytest.approx(ideal, rel=0.10)
    assert cho_dprime(present, absent, radius_px=radius) == pytest.approx(ideal, rel=0.10)
    # twice the contrast, twice the d'; no signal, no detectability
    p2, a2 = _rois(400, size, 2 * signal, sigma, rng)
    assert cho_dprime(p2, a2, radius_px=radius) == pytest.approx(2 * ideal, rel=0.12)
    p0, a0 = _rois(400, size, 0 * signal, sigma, rng)
    assert cho_dprime(p0, a0, radius_px=radius) < 0.4
    with pytest.raises(ValueError, match="more ROIs"):
        cho_dprime(present[:5], absent[:5], radius_px=radius)


def test_structure_score_is_near_zero_for_noise_and_high_for_blur(sample_dicom):
    ref = read_volume(sample_dicom).data[10].astype(np.float64)
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 20, ref.shape)
    assert abs(structure_score(noise, ref)) < 0.1
    blurred = ndi.gaussian_filter(ref, 2.0)
    blur_residual = ref - blurred
    assert structure_score(blur_residual, ref) > 0.4
    # a denoiser that removes noise and some anatomy sits in between
    mixed = noise + 0.5 * blur_residual
    assert 0.1 < structure_score(mixed, ref) < structure_score(blur_residual, ref)


def test_noise_texture_finer_for_white_than_for_smoothed_noise(sample_dicom):
    ref = read_volume(sample_dicom).data[8:12]
    rng = np.random.default_rng(3)
    white = ref + rng.normal(0, 30, ref.shape).astype(np.float32)
    coarse = ref + ndi.gaussian_filter(rng.normal(0, 60, ref.shape), (0, 1.5, 1.5)).astype(np.float32)
    tw, tc = noise_texture(white, 0.8, guide=ref), noise_texture(coarse, 0.8, guide=ref)
    assert tw.nps_mean_f > 1.3 * tc.nps_mean_f
    assert tw.std_hu > 20 and np.isfinite(tw.nps_peak)


def test_denoise_qa_writes_reference_free_figures(sample_dicom, tmp_path, capsys):
    """``ldct denoise --qa``: noise and NPS before/after in the same places, the structure score, a PNG; the
    denoised noise is lower and its NPS sits below the input's at high frequencies."""
    import json

    from helpers_pairs import copy_slices

    from ldct.cli import main

    scan = copy_slices(sample_dicom, tmp_path / "scan", 8, 12)
    qa = tmp_path / "qa.json"
    assert main(["denoise", str(scan), "-o", str(tmp_path / "out.npy"), "--qa", str(qa)]) == 0
    assert "qa: NPS mean frequency" in capsys.readouterr().out
    q = json.loads(qa.read_text())
    nb, na = q["noise"]["before"], q["noise"]["after"]
    assert na["noise_hu"] < nb["noise_hu"] and q["noise"]["std_ratio"] < 1
    hi = [i for i, f in enumerate(q["nps"]["freq"]) if f > 0.3]
    assert all(q["nps"]["after"][i] < q["nps"]["before"][i] for i in hi)
    assert -1 <= q["structure_score"] <= 1 and 0.3 < q["noise_correlation_before"] < 0.8  # smooth kernel
    png = tmp_path / "qa.png"
    assert png.stat().st_size > 10_000 and q["png"] == str(png)
    # bad --qa paths: one line, exit 2, nothing written
    assert main(["denoise", str(scan), "-o", str(tmp_path / "o2.npy"), "--qa", str(tmp_path / "qa.txt")]) == 2
    assert main(["denoise", str(scan), "-o", str(tmp_path / "o3.npy"), "--qa", str(qa)]) == 2  # exists
    err = capsys.readouterr().err
    assert "--qa" in err and "already exists" in err
    assert not (tmp_path / "o2.npy").exists() and not (tmp_path / "o3.npy").exists()


def test_hu_accuracy_finds_a_shift_in_the_tissue_it_was_added_to(sample_dicom):
    from ldct.metrics.task import hu_accuracy, hu_rois

    ref = read_volume(sample_dicom).data[10].astype(np.float64)
    rois = hu_rois(ref)
    assert all(m.sum() > 200 for m in rois.values())  # fat, soft tissue and enhanced vessels in this abdomen
    g = ndi.gaussian_filter(ref, 2)
    shifted = ref + np.where((g > -150) & (g < -60), 8.0, 0.0)  # +8 HU in fat only
    acc = hu_accuracy(shifted, ref, rois)
    assert acc["hu_shift_fat"] == pytest.approx(8.0, abs=0.5)
    assert abs(acc["hu_shift_soft"]) < 0.5 and abs(acc["hu_shift_enhanced"]) < 0.5
    noisy = ref + np.random.default_rng(4).normal(0, 20, ref.shape)  # zero-mean noise moves nothing
    assert all(abs(v) < 1.5 for v in hu_accuracy(noisy, ref, rois).values())
