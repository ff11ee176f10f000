"""Acceptance: the real scans in ../shared/data load in HU with the right geometry."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import ndimage as ndi

from ldct.io import list_series, read_volume
from ldct.io.preview import display_slice

# Soft-tissue ROIs (rows, cols on the displayed middle slice), checked by eye on previews:
# paraspinal muscle (chest, abdomen DICOM; chest NIfTI), brain (head), iliopsoas (abdomen NIfTI).
CASES = {
    "chest_dicom": dict(roi=(385, 400, 205, 230), shape=(30, 512, 512), dz=8.0, dxy=0.646484375),
    "abdomen_dicom": dict(roi=(372, 382, 205, 220), shape=(20, 512, 512), dz=2.0, dxy=0.9765625),
    "head_dicom_tilted": dict(roi=(150, 200, 200, 300), shape=(28, 512, 512), dz=None, dxy=0.4882812),
    "volumes/abdomen_3mm.nii.gz": dict(roi=(50, 58, 40, 48), shape=(112, 101, 122), dz=3.0, dxy=3.0),
    "volumes/chest_1p5mm.nii.gz": dict(roi=(140, 155, 90, 110), shape=(191, 167, 233), dz=1.5, dxy=1.5),
}

_cache: dict[str, object] = {}


def load(shared_data, name):
    if name not in _cache:
        _cache[name] = read_volume(shared_data / name)
    return _cache[name]


def outside_body_air(vol) -> float:
    """Median HU of the air around the body on the middle slice (body = largest region > -400 HU)."""
    img = display_slice(vol)
    lab, n = ndi.label(img > -400)
    sizes = ndi.sum(np.ones_like(img), lab, range(1, n + 1))
    body = ndi.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))
    outside = ~ndi.binary_dilation(body, iterations=5)
    vals = img[outside]
    if vol.meta.get("padded_voxels"):
        vals = vals[vals != -1000.0]  # leave out the padding we filled, measure real air only
    vals = vals[vals > -1024.5]  # outside the reconstruction circle (stored 0 -> -1024) is not air
    assert vals.size > 1000
    return float(np.median(vals))


@pytest.mark.parametrize("name", list(CASES))
def test_real_scans_load_in_hu(shared_data, name):
    case = CASES[name]
    vol = load(shared_data, name)
    assert vol.is_hu and vol.data.dtype == np.float32
    assert vol.shape == case["shape"]
    assert abs(outside_body_air(vol) + 1000) <= 50
    r0, r1, c0, c1 = case["roi"]
    soft = float(np.median(display_slice(vol)[r0:r1, c0:c1]))
    assert 0 <= soft <= 80, f"soft tissue ROI median {soft} HU"
    assert vol.spacing[1] == pytest.approx(case["dxy"], abs=1e-6)
    assert vol.spacing[2] == pytest.approx(case["dxy"], abs=1e-6)
    if case["dz"] is not None:
        assert vol.spacing[0] == pytest.approx(case["dz"], abs=1e-3)
        steps = np.linalg.norm(np.diff(vol.positions, axis=0), axis=1)
        np.testing.assert_allclose(steps, case["dz"], atol=1e-3)
        assert not vol.meta["warnings"], vol.meta["warnings"]


def test_slices_sorted_along_normal_not_by_name(shared_data):
    vol = load(shared_data, "chest_dicom")
    along = vol.positions @ vol.normal
    assert np.all(np.diff(along) > 0)
    # chest files are named 1-01 (z=312) .. 1-30 (z=80): sorted by position the last file comes first
    assert vol.meta["source_files"][0].endswith("1-30.dcm")
    assert vol.positions[0][2] == pytest.approx(80.0) and vol.positions[-1][2] == pytest.approx(312.0)
    # a shuffled list of the same files gives the same volume
    files = sorted((shared_data / "chest_dicom").iterdir())
    random.Random(0).shuffle(files)
    again = read_volume(files)
    np.testing.assert_array_equal(again.data, vol.data)
    np.testing.assert_allclose(again.positions, vol.positions)


def test_abdomen_j2k_metadata(shared_data):
    vol = load(shared_data, "abdomen_dicom")
    m = vol.meta
    assert m["transfer_syntax"].startswith("JPEG 2000")
    assert m["modality"] == "CT" and m["manufacturer"] == "SIEMENS"
    assert m["kernel"].startswith("Br38f") and m["kvp"] == 120
    assert m["ctdivol"] == pytest.approx(18.54, abs=0.05)
    assert 500 < m["tube_current_ma"] < 700 and m["exposure_mas"] > 0
    assert vol.slice_thickness == 3.0 and m["slice_thickness"] == 3.0
    assert vol.headers is not None and len(vol.headers) == 20
    assert all("PixelData" not in h for h in vol.headers)
    # J2K lossless decodes to the scanner's integer values: Siemens 12-bit stored, intercept -1024
    assert vol.data.min() == -1024 and np.all(vol.data == np.round(vol.data))


def test_chest_metadata(shared_data):
    m = load(shared_data, "chest_dicom").meta
    assert m["patient_id"] == "Lung_Dx-A0002"
    assert m["series_uid"].endswith("216610983") and m["study_uid"]
    assert m["kernel"] == "B40f" and m["kvp"] == 120 and m["slice_thickness"] == 8.0


def test_tilted_head_reports_tilt_and_uneven_spacing(shared_data):
    vol = load(shared_data, "head_dicom_tilted")
    w = " ".join(vol.meta["warnings"])
    assert "gantry tilt" in w and "18.5" in w
    assert "uneven slice spacing" in w
    assert vol.meta["gantry_tilt_deg"] == pytest.approx(18.5, abs=0.05)
    assert vol.meta["uneven_spacing"] is True
    # README: gaps 1.08 to 6.99 mm along the slice normal
    assert vol.meta["slice_gap_min_mm"] == pytest.approx(1.08, abs=0.01)
    assert vol.meta["slice_gap_max_mm"] == pytest.approx(6.99, abs=0.01)
    # GE padding (-1500 stored) is air now, nothing below -1024 HU remains
    assert vol.meta["padded_voxels"] > 0 and vol.data.min() >= -1024


def test_list_series_and_selection(shared_data, tmp_path):
    both = tmp_path / "two"
    both.mkdir()
    for sub in ("chest_dicom", "head_dicom_tilted"):
        (both / sub).symlink_to(shared_data / sub, target_is_directory=True)
    found = list_series(both)
    assert len(found) == 2 and {s.modality for s in found} == {"CT"}
    by_uid = read_volume(both, series=found[1].uid)
    by_index = read_volume(both, series="1")
    np.testing.assert_array_equal(by_uid.data, by_index.data)
    assert by_uid.meta["series_uid"] == found[1].uid
    assert len(by_uid.meta["other_series"]) == 1
