"""Write a :class:`Volume` as a derived DICOM CT series (one classic CT Image file per slice).

The new series keeps the source's patient and study (PatientID, StudyInstanceUID, ...) and frame of
reference, gets a new SeriesInstanceUID and new SOPInstanceUIDs (pydicom's UID root), ImageType
DERIVED\\SECONDARY, a SeriesDescription saying what was done, and the Volume's geometry (one
ImagePositionPatient per slice, ImageOrientationPatient, PixelSpacing, SliceThickness). Pixels are
int16 with RescaleSlope 1 and a RescaleIntercept chosen so the HU range fits; the transfer syntax
is uncompressed explicit VR little endian. Without a DICOM source (NIfTI, npy, ...) minimal valid CT
headers are built with new patient/study/frame-of-reference UIDs.

Dose-related tags (KVP, XRayTubeCurrent, Exposure, CTDIvol) and the kernel come from ``vol.meta``,
so a simulated low-dose volume can state its own dose.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

import ldct
from ldct.atomic import atomic_dir, is_inside
from ldct.errors import LdctError
from ldct.volume import Volume

#: attributes copied from the source header when present (patient, study, equipment, frame of reference)
COPY_TAGS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "StationName",
    "DeviceSerialNumber",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "PatientPosition",
    "BodyPartExamined",
    "ProtocolName",
    "ContrastBolusAgent",
    "DataCollectionDiameter",
    "ReconstructionDiameter",
    "GantryDetectorTilt",
    "AcquisitionDate",
    "AcquisitionTime",
    "SeriesDate",
)


def _source_headers(vol: Volume, source: Volume | None) -> list[Dataset] | None:
    return (source.headers if source is not None and source.headers else None) or vol.headers or None


def _uid_or_new(value: Any, *seed: str) -> str:
    v = str(value or "").strip()
    if v:
        return v
    seeds = [s for s in seed if s]
    return generate_uid(entropy_srcs=seeds) if seeds else generate_uid()


def _rescale(data: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) so that round((HU - intercept) / slope) fits int16."""
    lo, hi = float(np.min(data)), float(np.max(data))
    if lo >= -32768 and hi <= 32767:
        return 1.0, 0.0
    if hi - lo <= 65535:
        return 1.0, float(np.floor((lo + hi) / 2.0))
    slope = float(np.ceil((hi - lo) / 65535.0))
    return slope, float(np.floor((lo + hi) / 2.0))


def _ds_text(v: float) -> str:
    """A DS value (at most 16 characters), exact when the float allows it."""
    v = float(v)
    if v == 0:
        return "0"
    s = repr(v)
    s = s.removesuffix(".0")
    digits = 16
    while len(s) > 16 and digits > 1:
        digits -= 1
        s = f"{v:.{digits}g}"
    return s


def build_series(
    vol: Volume, *, source: Volume | None = None, description: str = ""
) -> list[tuple[str, Dataset]]:
    """The datasets of the derived series: a list of (file name, dataset), one per slice."""
    if not vol.is_hu or vol.channels != 1:
        raise LdctError("only CT volumes in HU can be written as a DICOM CT series (this one is not HU)")
    if not np.all(np.isfinite(vol.data)):
        raise LdctError("volume contains NaN or Inf values; cannot write DICOM")
    nz, ny, nx = vol.data.shape
    meta = dict(source.meta if source is not None else {})
    meta.update({k: v for k, v in vol.meta.items() if v is not None})
    hdrs = _source_headers(vol, source)
    per_slice = hdrs is not None and len(hdrs) == nz
    first = hdrs[0] if hdrs else None
    derived = first is not None
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    series_uid = generate_uid()
    anchor = str(first.get("FrameOfReferenceUID", "") if first is not None else "") or ""
    study_uid = _uid_or_new(first.get("StudyInstanceUID") if first is not None else None, anchor, "study")
    for_uid = _uid_or_new(first.get("FrameOfReferenceUID") if first is not None else None)
    slope, intercept = _rescale(vol.data)
    what = description or ("converted by ldct" if derived else "created by ldct")
    src_desc = meta.get("series_description") or (
        Path(str(meta.get("source_path", ""))).name if meta.get("source_path") else ""
    )
    series_desc = f"{what} ({src_desc})" if src_desc else what
    number = int(meta.get("series_number") or 0) + 1000 if derived else 1
    out = []
    for k in range(nz):
        hdr = (hdrs[k] if per_slice else hdrs[0]) if hdrs else None
        ds = Dataset()
        if hdr is not None:
            for tag in COPY_TAGS:
                if tag in hdr and hdr.data_element(tag) is not None:
                    ds[tag] = hdr.data_element(tag)
        ds.SpecificCharacterSet = ds.get("SpecificCharacterSet", "ISO_IR 100") or "ISO_IR 100"
        sop_uid = generate_uid()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.Modality = "CT"
        ds.PatientName = ds.get("PatientName", "") if derived else ""
        ds.PatientID = ds.get("PatientID", "") if derived else str(meta.get("patient_id") or "")[:64]
        for tag in ("PatientBirthDate", "PatientSex", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
            ds.setdefault(tag, "")
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = ds.get("StudyDate", "") or date
        ds.StudyTime = ds.get("StudyTime", "") or time
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = number
        ds.SeriesDate, ds.SeriesTime = date, time
        ds.ContentDate, ds.ContentTime = date, time
        ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
        ds.SeriesDescription = series_desc[:64]
        ds.DerivationDescription = (
            f"{what}; derived from series {meta.get('series_uid') or '(unknown)'} by ldct {ldct.__version__}"
        )[:1024]
        ds.Manufacturer = ds.get("Manufacturer", "") or ""
        ds.SoftwareVersions = f"ldct {ldct.__version__}"
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.FrameOfReferenceUID = for_uid
        ds.setdefault("PositionReferenceIndicator", "")
        if hdr is not None and per_slice:
            ref_uid = str(
                hdr.get("SOPInstanceUID", "")
                or getattr(getattr(hdr, "file_meta", None), "MediaStorageSOPInstanceUID", "")
                or ""
            )
            if ref_uid:
                item = Dataset()
                item.ReferencedSOPClassUID = str(hdr.get("SOPClassUID", "") or CTImageStorage)
                item.ReferencedSOPInstanceUID = ref_uid
                ds.SourceImageSequence = DicomSequence([item])
        # acquisition / dose from the volume's metadata
        ds.KVP = _ds_text(float(meta["kvp"])) if meta.get("kvp") is not None else ""
        if meta.get("tube_current_ma") is not None:
            ds.XRayTubeCurrent = int(round(float(meta["tube_current_ma"])))
        if meta.get("exposure_mas") is not None:
            ds.Exposure = int(round(float(meta["exposure_mas"])))
        if meta.get("ctdivol") is not None:
            ds.CTDIvol = float(meta["ctdivol"])
        if meta.get("kernel"):
            ds.ConvolutionKernel = str(meta["kernel"]).split("\\")[:16]
        # geometry
        pos = vol.positions[k]
        ds.ImagePositionPatient = [_ds_text(float(v)) for v in pos]
        ds.ImageOrientationPatient = [_ds_text(float(v)) for v in vol.orientation]
        ds.PixelSpacing = [_ds_text(vol.spacing[1]), _ds_text(vol.spacing[2])]
        thickness = vol.slice_thickness or meta.get("slice_thickness") or vol.spacing[0]
        ds.SliceThickness = _ds_text(float(thickness))
        ds.SliceLocation = _ds_text(float(pos @ vol.normal))
        # pixels
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept = _ds_text(intercept)
        ds.RescaleSlope = _ds_text(slope)
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        stored = np.clip(np.round((vol.data[k].astype(np.float64) - intercept) / slope), -32768, 32767)
        ds.PixelData = stored.astype("<i2").tobytes()
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = CTImageStorage
        fm.MediaStorageSOPInstanceUID = sop_uid
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        fm.ImplementationVersionName = f"LDCT_{ldct.__version__}"[:16]
        ds.file_meta = fm
        out.append((f"IM{k + 1:05d}.dcm", ds))
    return out


def protected_paths(*vols: Volume | None) -> tuple[list[Path], list[Path]]:
    """(source folders, source files) of the volumes: outputs must stay out of both.

    A folder given as input is protected as a whole (nothing is written inside it); inputs given as
    files protect those files (an output folder may not replace or contain them).
    """
    folders: list[Path] = []
    files: list[Path] = []
    for v in vols:
        if v is None:
            continue
        files.extend(Path(f) for f in v.meta.get("source_files", []) or [])
        sp = v.meta.get("source_path")
        if sp:
            p = Path(sp)
            (folders if p.is_dir() else files).append(p)
    return list(dict.fromkeys(folders)), list(dict.fromkeys(files))


def check_output(out: Path, *vols: Volume | None) -> None:
    """Raise :class:`LdctError` when ``out`` is an input, lies in an input folder, or holds an input."""
    folders, files = protected_paths(*vols)
    for d in folders:
        if is_inside(out, d):
            raise LdctError(f"refusing to write into the source series' folder {d}", out)
    for f in files + folders:
        if is_inside(f, out):
            raise LdctError(f"refusing to overwrite an input ({f})", out)


def write_dicom_series(
    vol: Volume,
    out_dir: str | Path,
    *,
    source: Volume | None = None,
    description: str = "",
    overwrite: bool = False,
) -> Path:
    """Write ``vol`` as a derived CT series into the folder ``out_dir`` (created atomically).

    Refuses to write into (or over) a folder the source series was read from.
    """
    out_dir = Path(out_dir)
    check_output(out_dir, vol, source)
    datasets = build_series(vol, source=source, description=description)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for name, ds in datasets:
            ds.save_as(tmp / name, enforce_file_format=True)
    return out_dir
