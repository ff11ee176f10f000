"""Dose estimation for dose-conditioned models: from DICOM tags relative to a reference, and from image
noise on real CT whose low dose the project's simulator made."""

from __future__ import annotations

import pytest
from helpers_distill import simulated_abdomen

from ldct.dose import estimate_dose, measure_noise_hu
from ldct.errors import LdctError
from ldct.io import read_volume


@pytest.fixture(scope="module")
def abdomen(shared_data):
    return read_volume(shared_data / "abdomen_dicom")  # CTDIvol 18.5 mGy, 253 mAs in its tags


def test_dose_from_ctdivol_and_mas_tags(abdomen):
    ctdi = abdomen.meta["ctdivol"]
    d, how = estimate_dose(abdomen, reference_ctdivol=4 * ctdi)
    assert d == pytest.approx(0.25, rel=1e-6) and "CTDIvol" in how
    d, how = estimate_dose(abdomen, reference_mas=2 * abdomen.meta["exposure_mas"])
    assert d == pytest.approx(0.5, rel=1e-6) and "mAs" in how
    # CTDIvol wins over mAs; results are clipped to [0.05, 1]
    assert estimate_dose(abdomen, reference_ctdivol=ctdi, reference_mas=1.0)[0] == 1.0
    assert estimate_dose(abdomen, reference_ctdivol=1000 * ctdi)[0] == 0.05


def test_dose_from_tags_falls_back_and_fails_clearly(shared_data):
    chest = read_volume(shared_data / "chest_dicom")  # has no CTDIvol tag
    with pytest.raises(LdctError, match="CTDIvol tag absent"):
        estimate_dose(chest, reference_ctdivol=10.0)
    d, how = estimate_dose(chest, reference_ctdivol=10.0, reference_mas=4 * chest.meta["exposure_mas"])
    assert d == pytest.approx(0.25, rel=1e-6) and "mAs" in how and "CTDIvol" not in how
    with pytest.raises(LdctError, match="pass --dose"):
        estimate_dose(chest)
    with pytest.raises(LdctError, match="positive"):
        estimate_dose(chest, reference_mas=-3.0)


def test_dose_from_image_noise_of_simulated_low_dose(shared_data):
    vol, pairs = simulated_abdomen(shared_data)  # 6 slices, low dose simulated at 10 % and 70 %
    ref = measure_noise_hu(vol.with_data(pairs.nd))
    assert 3.0 < ref < 40.0  # a plausible soft-tissue noise std for a routine abdomen scan
    estimates = {}
    for dose, ld in pairs.ld.items():
        estimates[dose], how = estimate_dose(vol.with_data(ld), reference_noise_hu=ref)
        assert "image noise" in how
    assert estimates[0.1] < estimates[0.7]
    for dose, est in estimates.items():
        assert dose / 1.6 < est < dose * 1.6, estimates
