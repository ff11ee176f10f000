"""Writing: derived DICOM series (round trip, dcmtk, dcm2niix), NIfTI with the right affine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from ldct.errors import LdctError
from ldct.io import read_volume, write_volume

_cache: dict[str, object] = {}


def load(shared_data: Path, name: str):
    if name not in _cache:
        _cache[name] = read_volume(shared_data / name)
    return _cache[name]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # CI installs dcmtk and dcm2niix (scripts/test.sh); missing means a broken setup
        pytest.fail(f"{name} not found: install Debian packages dcmtk and dcm2niix")
    return path


def dcm2niix(src: Path, out: Path) -> list[Path]:
    """Convert a DICOM folder with dcm2niix; the main NIfTI file(s), without tilt-corrected copies."""
    out.mkdir(parents=True)
    res = subprocess.run(
        [tool("dcm2niix"), "-z", "n", "-f", "%s", "-o", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return sorted(p for p in out.glob("*.nii") if "_Tilt" not in p.name and "_Eq" not in p.name)


def dcmdump_all(folder: Path) -> list[str]:
    files = sorted(folder.iterdir())
    res = subprocess.run(
        [tool("dcmdump"), "-q", *map(str, files)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr[:2000]
    return files


@pytest.mark.parametrize("name", ["chest_dicom", "abdomen_dicom", "head_dicom_tilted"])
def test_derived_series_dcmdump_and_dcm2niix_agree(shared_data, tmp_path, name):
    src = load(shared_data, name)
    out = write_volume(src, tmp_path / "derived", source=src, description="ldct test copy")
    files = dcmdump_all(out)
    assert len(files) == src.shape[0]
    # compressed input (abdomen: JPEG 2000 lossless) gives losslessly compressed output
    expected = pydicom.uid.JPEG2000Lossless if name == "abdomen_dicom" else pydicom.uid.ExplicitVRLittleEndian
    assert pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == expected
    a = dcm2niix(shared_data / name, tmp_path / "nii_src")
    b = dcm2niix(out, tmp_path / "nii_out")
    assert len(a) == len(b) == 1
    ia, ib = nib.load(a[0]), nib.load(b[0])
    assert ia.shape == ib.shape
    np.testing.assert_allclose(ib.affine, ia.affine, atol=1e-3)
    da, db = np.asarray(ia.dataobj, dtype=np.float32), np.asarray(ib.dataobj, dtype=np.float32)
    if name == "head_dicom_tilted":
        da[da == -1500] = -1000  # source padding value; ldct writes padding as air
    np.testing.assert_allclose(db, da, atol=1.0)


def test_round_trip_hu_and_geometry(shared_data, tmp_path):
    src = load(shared_data, "chest_dicom")
    rng = np.random.default_rng(0)
    # a "processed" volume: non-integer HU, as a denoiser would output
    processed = src.with_data(src.data + rng.uniform(-0.5, 0.5, src.data.shape).astype(np.float32))
    out = write_volume(processed, tmp_path / "denoised", source=src, description="denoised by test")
    back = read_volume(out)
    assert np.max(np.abs(back.data - processed.data)) <= 0.5 + 1e-3
    np.testing.assert_allclose(back.positions, src.positions, atol=1e-6)
    np.testing.assert_allclose(back.orientation, src.orientation, atol=1e-9)
    np.testing.assert_allclose(back.spacing, src.spacing, atol=1e-9)
    assert back.slice_thickness == src.slice_thickness
    # same patient and study, new series and instances
    m, s = back.meta, src.meta
    assert m["patient_id"] == s["patient_id"] and m["study_uid"] == s["study_uid"]
    assert m["series_uid"] != s["series_uid"]
    assert m["frame_of_reference_uid"] == s["frame_of_reference_uid"]
    assert m["kernel"] == s["kernel"] and m["kvp"] == s["kvp"]
    ds = pydicom.dcmread(sorted(out.iterdir())[0])
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.SeriesDescription == "denoised by test (ThoraxRoutine 8.0.0 B40f)"
    assert ds.SeriesNumber == 1003  # the source's 3 + 1000: never the source's own number
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 1 and float(ds.RescaleSlope) == 1.0
    assert pydicom.uid.UID(ds.SOPInstanceUID).is_valid and pydicom.uid.UID(ds.SeriesInstanceUID).is_valid
    src_sops = {str(h.SOPInstanceUID) for h in src.headers}
    new_sops = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in out.iterdir()}
    assert len(new_sops) == src.shape[0] and not new_sops & src_sops
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in src_sops


def test_extreme_values_get_a_fitting_intercept(shared_data, tmp_path):
    src = load(shared_data, "chest_dicom")
    small = src.with_data(src.data[:2] + 32000.0)  # up to ~33500: beyond int16 with intercept 0
    small.positions = src.positions[:2]
    out = write_volume(small, tmp_path / "hot")
    back = read_volume(out)
    assert np.max(np.abs(back.data - small.data)) <= 0.5
    assert float(pydicom.dcmread(sorted(out.iterdir())[0]).RescaleIntercept) != 0


def test_refuses_to_write_into_source_folder(shared_data, tmp_path):
    folder = tmp_path / "chest"
    folder.mkdir()
    for f in sorted((shared_data / "chest_dicom").iterdir())[:3]:
        shutil.copy(f, folder / f.name)
    before = sorted(p.name for p in folder.iterdir())
    vol = read_volume(folder)
    with pytest.raises(LdctError, match="source series' folder"):
        write_volume(vol, folder / "derived", source=vol)
    with pytest.raises(LdctError, match="refusing"):
        write_volume(vol, folder, source=vol, overwrite=True)
    with pytest.raises(LdctError, match="refusing"):
        write_volume(vol, tmp_path, source=vol, overwrite=True)  # would replace the folder holding it
    assert sorted(p.name for p in folder.iterdir()) == before


def world_value_check(a, b, n: int = 200) -> None:
    """Voxels of ``a`` at random indices hold the same HU as ``b`` at the same LPS point."""
    rng = np.random.default_rng(1)
    idx = np.stack([rng.integers(0, s, n) for s in a.shape[:3]], axis=1)  # (n, 3) z, y, x
    ijk = np.column_stack([idx[:, 2], idx[:, 1], idx[:, 0], np.ones(n)])
    world = ijk @ a.affine_lps().T
    ijk_b = world @ np.linalg.inv(b.affine_lps()).T
    assert np.allclose(ijk_b[:, :3], np.round(ijk_b[:, :3]), atol=1e-3)
    jb = np.round(ijk_b[:, :3]).astype(int)
    np.testing.assert_allclose(
        b.data[jb[:, 2], jb[:, 1], jb[:, 0]], a.data[idx[:, 0], idx[:, 1], idx[:, 2]], atol=1.0
    )


def test_nifti_matches_dcm2niix_geometry(shared_data, tmp_path):
    src = load(shared_data, "chest_dicom")
    ours = read_volume(write_volume(src, tmp_path / "chest.nii.gz"))
    theirs = read_volume(dcm2niix(shared_data / "chest_dicom", tmp_path / "d2n")[0])
    world_value_check(src, ours)
    world_value_check(src, theirs)  # our NIfTI reader maps dcm2niix's affine to the DICOM geometry


def test_nifti_round_trip_keeps_affine(shared_data, tmp_path):
    path = shared_data / "volumes" / "abdomen_3mm.nii.gz"
    vol = load(shared_data, "volumes/abdomen_3mm.nii.gz")
    out = write_volume(vol, tmp_path / "copy.nii.gz")
    a, b = nib.load(path), nib.load(out)
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(b.dataobj), np.asarray(a.dataobj))
    assert b.get_data_dtype() == np.int16  # integer HU stored losslessly as int16


def test_dicom_from_nifti_without_source(shared_data, tmp_path):
    vol = load(shared_data, "volumes/abdomen_3mm.nii.gz")
    part = vol.with_data(vol.data[40:46])
    part.positions = vol.positions[40:46]
    out = write_volume(part, tmp_path / "from_nifti", description="from NIfTI")
    dcmdump_all(out)
    back = read_volume(out)
    np.testing.assert_allclose(back.data, part.data, atol=0.5)
    np.testing.assert_allclose(back.positions, part.positions, atol=1e-5)
    np.testing.assert_allclose(back.orientation, part.orientation, atol=1e-9)
    ds = pydicom.dcmread(sorted(out.iterdir())[0])
    for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.SOPInstanceUID):
        assert pydicom.uid.UID(uid).is_valid
    assert ds.Modality == "CT" and ds.PatientID == "abdomen_3mm"
    theirs = read_volume(dcm2niix(out, tmp_path / "d2n")[0])
    world_value_check(part, theirs)
