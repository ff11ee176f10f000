"""Finding CT in a data folder: series, volumes, per-slice raw groups, patient ids, kernels, errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ldct.data.config import DEFAULT_RAW
from ldct.data.discover import discover
from ldct.errors import LdctError


def test_shared_data_patients_and_kernels(shared_data):
    scans = discover(shared_data, raw=DEFAULT_RAW)
    by_name = {s.name: s for s in scans}
    assert {s.patient_id for s in scans} == {
        "L067", "Lung_Dx-A0002", "QMNx85rKkkg", "abdomen_dicom", "abdomen_3mm", "chest_1p5mm"}
    sharp = by_name["mayo_L067_fd_raw/L067_FD_3mm_sharp"]
    smooth = by_name["mayo_L067_fd_raw/L067_FD_3mm_smooth"]
    assert (sharp.kernel, smooth.kernel) == ("sharp", "smooth")
    assert sharp.slice_numbers == (39, 69, 149, 189, 217) and not sharp.contiguous
    assert sharp.role == "nd"  # 'FD' = full dose
    chest = by_name["chest_dicom"]
    assert chest.fmt == "dicom" and chest.n_slices == 30 and chest.kernel == "B40f"
    # the abdomen DICOM carries no PatientID, StudyInstanceUID or SeriesInstanceUID: the folder names it
    assert by_name["abdomen_dicom"].series_uid is None and by_name["abdomen_dicom"].n_slices == 20


def test_mayo_raw_loads_in_hu(shared_data):
    scans = discover(shared_data / "mayo_L067_fd_raw", raw=DEFAULT_RAW)
    assert len(scans) == 2
    vol = scans[0].load()
    assert vol.data.shape == (5, 512, 512)
    # air outside the patient near -1000 HU, soft tissue near 0..100 HU (HU = value - 1024)
    assert -1100 < np.percentile(vol.data, 5) < -900
    assert 0 < np.median(vol.data[vol.data > -200]) < 150


def test_folder_without_ct_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(LdctError, match="no CT found") as e:
        discover(tmp_path)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(LdctError, match="does not exist"):
        discover(tmp_path / "missing")


def test_raw_with_wrong_size_names_the_file(shared_data, tmp_path):
    src = shared_data / "mayo_L067_fd_raw" / "L067_FD_3mm_sharp_000039.raw"
    shutil.copy(src, tmp_path / src.name)
    with pytest.raises(LdctError, match="524288 bytes") as e:
        discover(tmp_path, raw={"shape": [256, 256], "dtype": "uint16"})
    assert src.name in str(e.value)


def test_patient_ids_from_folders_and_map(tmp_path):
    vol = np.zeros((2, 16, 16), np.float32)
    for p in ("P1", "P2"):
        for role in ("full_dose", "quarter_dose"):
            (tmp_path / p / role).mkdir(parents=True)
            np.save(tmp_path / p / role / "ct.npy", vol)
    scans = discover(tmp_path)
    assert sorted((s.patient_id, s.role) for s in scans) == [
        ("P1", "ld"), ("P1", "nd"), ("P2", "ld"), ("P2", "nd")]
    assert {s.role_dose for s in scans if s.role == "ld"} == {0.25}
    merged = discover(tmp_path, patient_map={"P2": "P1"})
    assert {s.patient_id for s in merged} == {"P1"}
    only = discover(tmp_path, include=["P2/*"])
    assert {s.patient_id for s in only} == {"P2"}
    # one patient's folder as the root: the dose folders do not become patients, the root names it
    one = discover(tmp_path / "P1")
    assert sorted((s.patient_id, s.role) for s in one) == [("P1", "ld"), ("P1", "nd")]


def test_placeholder_patient_ids_do_not_merge_patients(shared_data, tmp_path):
    """The AAPM-Mayo real pairs say PatientID "Anonymous" for every patient: the folder's id is used."""
    from ldct.data.discover import discover

    real = shared_data.parent / "real_pairs" / "mayo"
    for pid in ("L096", "L286"):
        for kind in ("full", "quarter"):
            dst = tmp_path / pid / f"{kind}_3mm_sharp"
            dst.mkdir(parents=True)
            for f in sorted((real / pid / f"{kind}_3mm_sharp").iterdir())[:2]:
                (dst / f.name).write_bytes(f.read_bytes())
    scans = discover(tmp_path)
    assert {s.patient_id for s in scans} == {"L096", "L286"}
    assert sorted((s.patient_id, s.role) for s in scans) == [("L096", "ld"), ("L096", "nd"), ("L286", "ld"),
                                                              ("L286", "nd")]
