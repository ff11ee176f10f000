"""``--strength S``: out = in + S * (denoised - in), so part of the input's noise (and its grain) stays."""

from __future__ import annotations

import numpy as np
import pytest

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
    scan = tmp_path / "scan"
    scan.mkdir()
    for f in sorted(sample_dicom.iterdir())[9:11]:
        (scan / f.name).write_bytes(f.read_bytes())
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
