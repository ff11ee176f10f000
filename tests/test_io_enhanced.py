"""Enhanced (multi-frame) CT: build one from real chest slices and read it like the classic series."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ldct.io import read_volume

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def _item(**kw) -> Dataset:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def build_enhanced_ct(files: list[Path], out: Path, *, seed: int = 0) -> Path:
    """One Enhanced CT Image object holding the given classic slices as frames (in shuffled order)."""
    slices = [pydicom.dcmread(f) for f in files]
    random.Random(seed).shuffle(slices)  # frame order must not matter
    first = slices[0]
    ds = Dataset()
    for tag in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
        "Manufacturer",
        "FrameOfReferenceUID",
        "PositionReferenceIndicator",
    ):
        if tag in first:
            ds[tag] = first[tag]
    ds.SOPClassUID = ENHANCED_CT
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.SeriesNumber = 77
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = len(slices)
    ds.Rows, ds.Columns = first.Rows, first.Columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, first.BitsStored, first.HighBit
    ds.PixelRepresentation = first.PixelRepresentation
    shared = _item(
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=first.ImageOrientationPatient)]),
        PixelMeasuresSequence=Sequence(
            [_item(PixelSpacing=first.PixelSpacing, SliceThickness=first.SliceThickness)]
        ),
        PixelValueTransformationSequence=Sequence(
            [
                _item(
                    RescaleIntercept=first.RescaleIntercept, RescaleSlope=first.RescaleSlope, RescaleType="HU"
                )
            ]
        ),
        CTReconstructionSequence=Sequence([_item(ConvolutionKernel=first.ConvolutionKernel)]),
        CTAcquisitionDetailsSequence=Sequence([_item(KVP=first.KVP, GantryDetectorTilt=0)]),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        [
            _item(
                PlanePositionSequence=Sequence([_item(ImagePositionPatient=s.ImagePositionPatient)]),
                CTExposureSequence=Sequence(
                    [_item(XRayTubeCurrentInmA=float(s.XRayTubeCurrent), ExposureInmAs=float(s.Exposure))]
                ),
            )
            for s in slices
        ]
    )
    ds.PixelData = b"".join(s.PixelData for s in slices)
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = ENHANCED_CT
    fm.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = fm
    ds.save_as(out, enforce_file_format=True)
    return out


def test_enhanced_ct_reads_like_classic(shared_data, tmp_path):
    files = sorted((shared_data / "chest_dicom").iterdir())[10:16]
    classic = read_volume(files)
    enhanced = read_volume(build_enhanced_ct(files, tmp_path / "enhanced.dcm"))
    assert enhanced.meta["multiframe"] is True
    np.testing.assert_array_equal(enhanced.data, classic.data)
    np.testing.assert_allclose(enhanced.positions, classic.positions)
    assert enhanced.spacing == pytest.approx(classic.spacing)
    assert enhanced.orientation == pytest.approx(classic.orientation)
    assert enhanced.slice_thickness == classic.slice_thickness == 8.0
    for key in ("kernel", "kvp", "patient_id", "study_uid"):
        assert enhanced.meta[key] == classic.meta[key], key
    assert enhanced.meta["tube_current_ma"] == pytest.approx(classic.meta["tube_current_ma"])
    assert enhanced.meta["exposure_mas"] == pytest.approx(classic.meta["exposure_mas"])
    assert not enhanced.meta["warnings"]


def test_enhanced_ct_to_classic_series(shared_data, tmp_path):
    files = sorted((shared_data / "chest_dicom").iterdir())[:4]
    enhanced = read_volume(build_enhanced_ct(files, tmp_path / "enhanced.dcm", seed=3))
    from ldct.io import write_volume

    back = read_volume(write_volume(enhanced, tmp_path / "classic", source=enhanced))
    np.testing.assert_array_equal(back.data, enhanced.data)
    np.testing.assert_allclose(back.positions, enhanced.positions, atol=1e-6)
    assert back.meta["multiframe"] is False and back.meta["study_uid"] == enhanced.meta["study_uid"]
