"""``--strength S``: out = in + S * (denoised - in), so part of the input's noise (and its grain) stays."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_pairs import copy_slices

from ldct.cli import main
from ldct.denoiser import Denoiser
from ldct.errors import LdctError
from ldct.io import read_volume


def test_strength_keeps_a_share_of_the_input(sample_dicom):
    x = read_volume(sample_dicom).data[9:10, 128:384, 128:384]
    d = Denoiser.load("default")
    full = d.denoise_array(x)
    half = d.with_strength(0.5).denoise_array(x)
    assert np.allclose(half, x + 0.5 * (full - x), atol=1e-3)
    assert d.strength == 1.0  # a copy: the loaded denoiser is unchanged
    # what is left of the noise: between the input's and the network's (high-pass std in the patch)
    hp = [float(np.std(a - np.roll(a, 1, axis=-1))) for a in (x, half, full)]
    assert hp[0] > hp[1] > hp[2]
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(LdctError, match="strength"):
            d.with_strength(bad)


def test_strength_on_the_command_line(sample_dicom, tmp_path, capsys):
    scan = copy_slices(sample_dicom, tmp_path / "scan", 9, 11)
    assert main(["denoise", str(scan), "-o", str(tmp_path / "a.npy"), "--strength", "0"]) == 2
    assert "--strength" in capsys.readouterr().err and not (tmp_path / "a.npy").exists()
    assert main(["denoise", str(scan), "-o", str(tmp_path / "full"), "--backend", "torch"]) == 0
    assert main(["denoise", str(scan), "-o", str(tmp_path / "s07"), "--strength", "0.7", "--backend", "torch"]) == 0
    import pydicom

    ds = pydicom.dcmread(sorted((tmp_path / "s07").iterdir())[0])
    assert "strength 0.7" in ds.SeriesDescription
    full = read_volume(tmp_path / "full").data
    s07 = read_volume(tmp_path / "s07").data
    x = read_volume(scan).data
    assert np.abs(s07 - (x + 0.7 * (full - x))).max() < 1.5  # HU (both written as integers)


def _lowpass(a: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(a, sigma=(0, sigma, sigma))


def test_grain_puts_back_fine_noise_only(sample_dicom):
    """``with_grain(g)``: out = denoised + g * (removed - blur(removed)): the scan's fine grain comes back,
    the coarse (low-frequency) part of the output stays the network's, unlike a flat blend."""
    from scipy.ndimage import gaussian_filter

    from ldct.denoiser import GRAIN_SIGMA_PX

    x = read_volume(sample_dicom).data[9:10, 128:384, 128:384]
    d = Denoiser.load("default")
    full = d.denoise_array(x)
    g = d.with_grain(0.4)
    assert d.grain == 0.0 and g.grain == 0.4  # a copy
    out = g.denoise_array(x)
    removed = x - full
    expect = full + 0.4 * (removed - gaussian_filter(removed, sigma=(0, GRAIN_SIGMA_PX, GRAIN_SIGMA_PX)))
    inner = (slice(None), slice(8, -8), slice(8, -8))  # borders: torch and scipy reflect differently
    assert np.abs(out - expect)[inner].max() < 0.05  # HU
    # fine grain: between the network's and the input's
    hp = [float(np.std((a - gaussian_filter(a, (0, 1, 1)))[inner])) for a in (x, out, full)]
    assert hp[0] > hp[1] > hp[2]
    # a flat blend with the same fine grain brings back far more coarse noise
    flat = d.with_strength(0.6).denoise_array(x)
    assert float(np.std((flat - gaussian_filter(flat, (0, 1, 1)))[inner])) > hp[2]
    coarse_grain = float(np.std(_lowpass(out - full)[inner]))
    coarse_flat = float(np.std(_lowpass(flat - full)[inner]))
    assert coarse_grain < 0.25 * coarse_flat
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(LdctError, match="grain"):
            d.with_grain(bad)


def test_grain_is_saved_with_the_model_and_checked(tmp_path, sample_dicom):
    import json

    d = Denoiser.load("default").with_grain(0.2)
    d.save(tmp_path / "m")
    back = Denoiser.load(tmp_path / "m")
    assert back.grain == 0.2
    x = read_volume(sample_dicom).data[9:10, 200:296, 200:296]
    assert np.allclose(back.denoise_array(x), d.denoise_array(x), atol=1e-4)
    assert back.with_grain(0.0).grain == 0.0
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    meta["grain"] = 1.5
    (tmp_path / "m" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(LdctError, match="grain"):
        Denoiser.load(tmp_path / "m")


def test_grain_on_the_command_line(sample_dicom, tmp_path, capsys):
    import pydicom

    scan = copy_slices(sample_dicom, tmp_path / "scan", 9, 10)
    assert main(["denoise", str(scan), "-o", str(tmp_path / "a.npy"), "--grain", "1"]) == 2
    assert "--grain" in capsys.readouterr().err and not (tmp_path / "a.npy").exists()
    assert main(["denoise", str(scan), "-o", str(tmp_path / "g"), "--grain", "0.25", "--backend", "torch"]) == 0
    ds = pydicom.dcmread(sorted((tmp_path / "g").iterdir())[0])
    assert "grain 0.25" in ds.SeriesDescription
