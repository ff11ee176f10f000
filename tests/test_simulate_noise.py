"""Acceptance of the projection-domain low-dose simulation on real Mayo L067 slices."""

from __future__ import annotations

import numpy as np
import pytest

from ldct.errors import LdctError
from ldct.simulate import calibrate_i0, default_geometry, simulate_doses, simulate_low_dose
from ldct.simulate.calibrate import soft_tissue_mask

PS = 0.68
DOSES = (0.1, 0.25, 0.5, 0.7)


def mayo(shared_data, name: str) -> np.ndarray:
    raw = np.fromfile(shared_data / "mayo_L067_fd_raw" / name, "<u2").reshape(512, 512)
    return raw.astype(np.float32) - 1024.0


@pytest.fixture(scope="module")
def smooth_runs(shared_data):
    """Two smooth-kernel slices at the default geometry and calibrated flux, four doses each."""
    out = {}
    for name in ("L067_FD_3mm_smooth_0070.raw", "L067_FD_3mm_smooth_0190.raw"):
        hu = mayo(shared_data, name)
        out[name] = (hu, simulate_doses(hu, DOSES, pixel_spacing_mm=PS, seed=1))
    return out


def test_noise_scales_with_dose_and_means_are_kept(smooth_runs):
    for hu, res in smooth_runs.values():
        assert res.parameters["i0_source"] == "calibrated"
        mask = soft_tissue_mask(hu)
        assert mask.sum() > 20000
        norm = []
        for d in DOSES:
            added = res.low_dose[d] - hu
            norm.append(added[mask].std() / np.sqrt(1 / d - 1))
            assert abs(float(added[mask].mean())) < 2.0, (d, float(added[mask].mean()))  # means kept (HU)
        norm = np.array(norm)
        assert np.all(np.abs(norm / norm.mean() - 1) < 0.10), norm  # std ~ sqrt(1/d - 1) within 10 %


def test_quarter_dose_noise_in_the_range_of_real_mayo_quarter_dose(smooth_runs):
    for hu, res in smooth_runs.values():
        mask = soft_tissue_mask(hu)
        added = float((res.low_dose[0.25] - hu)[mask].std())
        assert 20.0 <= added <= 37.0, added  # real L067 quarter-dose scans: ~20-37 HU from full dose


def test_calibration_reproduces_the_scan_noise(smooth_runs):
    """Calibrating on the simulated 25 % scan gives a quarter of the full-dose flux."""
    for hu, res in smooth_runs.values():
        i0 = res.parameters["i0"]
        assert 5e4 < i0 < 2e6
        g = default_geometry(hu.shape, PS)
        cal = calibrate_i0(res.low_dose[0.25][None], PS, g, seed=3)
        assert abs(cal.i0 / (0.25 * i0) - 1) < 0.15, (cal.i0, i0)


def _radial_nps(noise: np.ndarray) -> np.ndarray:
    """Radially averaged NPS of 64x64 ROIs from the centre of (H, W) noise; bins of 1/32 cycles/pixel."""
    rois = [noise[i : i + 64, j : j + 64] for i in range(160, 320, 32) for j in range(160, 320, 32)]
    nps = np.mean([np.abs(np.fft.fft2(r - r.mean())) ** 2 for r in rois], axis=0)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij"))
    return np.array([nps[(f >= lo) & (f < lo + 1 / 32)].mean() for lo in np.arange(0, 0.5, 1 / 32)])


def test_projection_noise_is_correlated_gaussian_mode_is_white(smooth_runs):
    hu, res = next(iter(smooth_runs.values()))
    nps = _radial_nps(res.low_dose[0.25] - hu)
    assert nps[0] < 0.3 * nps.max()  # FBP noise: little power at the lowest frequencies
    assert nps[-1] < 0.3 * nps.max()  # the Hann window removes the highest ones
    white = simulate_low_dose(hu, 0.25, pixel_spacing_mm=PS, mode="gaussian", seed=1) - hu
    wn = _radial_nps(white)
    assert np.all(np.abs(wn[1:] / wn[1:].mean() - 1) < 0.3)  # flat
    assert 0.7 < white[soft_tissue_mask(hu)].std() / (res.low_dose[0.25] - hu)[soft_tissue_mask(hu)].std() < 1.4


def test_seeds_and_full_dose(shared_data):
    hu = mayo(shared_data, "L067_FD_3mm_smooth_0150.raw")[128:384, 128:384]
    kw = {"pixel_spacing_mm": PS, "i0": 2e5}
    a = simulate_low_dose(hu, 0.25, seed=5, **kw)
    b = simulate_low_dose(hu, 0.25, seed=5, **kw)
    c = simulate_low_dose(hu, 0.25, seed=6, **kw)
    assert a.dtype == np.float32 and a.shape == hu.shape
    np.testing.assert_array_equal(a, b)
    assert np.corrcoef((a - hu).ravel(), (c - hu).ravel())[0, 1] < 0.1
    assert np.std(a - c) > 10
    np.testing.assert_array_equal(simulate_low_dose(hu, 1.0, seed=5, **kw), hu)
    vol = np.stack([hu, hu[::-1]])  # batching does not change a slice's noise
    np.testing.assert_array_equal(simulate_doses(vol, [0.25], seed=5, batch_size=1, **kw).low_dose[0.25][0], a)


@pytest.mark.parametrize(
    "x, dose, kw, msg",
    [
        (np.zeros((64, 64), np.float32), 0.0, {}, "dose"),
        (np.zeros((64, 64), np.float32), 1.5, {}, "dose"),
        (np.full((64, 64), -1000, np.float32), 0.5, {}, "no body"),
        (np.full((64, 64), np.nan, np.float32), 0.5, {}, "NaN"),
    ],
)
def test_bad_input_raises_user_error(x, dose, kw, msg):
    with pytest.raises(LdctError, match=msg):
        simulate_low_dose(x, dose, pixel_spacing_mm=1.0, **kw)


def test_photographs_refuse_projection_mode():
    from ldct.simulate import simulate_doses as sd

    img = np.full((32, 32, 3), 128, np.float32)
    with pytest.raises(LdctError, match="photograph"):
        sd(img, [0.5], pixel_spacing_mm=1.0, is_hu=False)
    out = sd(img, [0.25], pixel_spacing_mm=1.0, is_hu=False, mode="poisson-gaussian", seed=0).low_dose[0.25]
    assert out.shape == img.shape and 0 <= out.min() and out.max() <= 255
    assert abs(float(out.mean()) - 128) < 1.0 and 2.0 < float(out.std()) < 8.0  # 1 % of 255 * sqrt(3) = 4.4
