"""Write a :class:`Volume` as a derived DICOM CT series (one classic CT Image file per slice).

The new series keeps the source's patient, study, de-identification attributes and frame of
reference (:mod:`ldct.io.dicom_attrs` lists them), gets a new SeriesInstanceUID, its own SeriesNumber
and new SOPInstanceUIDs (pydicom's UID root), ImageType DERIVED\\SECONDARY, a SeriesDescription
(at most 64 characters, cut at word boundaries) saying what was done, and the Volume's geometry (one
ImagePositionPatient per slice, ImageOrientationPatient, PixelSpacing, SliceThickness).

Each slice carries its **own** source slice's acquisition attributes (tube current, exposure,
CTDIvol, window presets with all their values, table height, acquisition time, ...) and a
SourceImageSequence reference to it; InstanceNumber keeps the source's numbering (so instance n of
the derived series is instance n of the source, in the same direction along the patient).
Volumes without a DICOM source (NIfTI, npy, ...) get minimal valid CT headers with new
patient/study/frame-of-reference UIDs; dose tags then come from ``vol.meta``.

Pixels are int16 with RescaleSlope 1 and a RescaleIntercept chosen so the HU range fits. The
transfer syntax is explicit VR little endian, or lossless compression when the source was compressed
(or ``compress=True``): the source's own transfer syntax when pydicom can encode it (JPEG 2000
lossless, JPEG-LS lossless, RLE lossless, deflate), else JPEG 2000 lossless, else RLE lossless.
Non-finite geometry is refused (:class:`LdctError`), never written.
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom.uid as U
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

import ldct
from ldct.atomic import atomic_dir, is_inside
from ldct.errors import LdctError
from ldct.io.dicom_attrs import (
    COPY_TAGS,
    SLICE_TAGS,
    clean_text,
    copy_slice_attributes,
    derived_series_number,
    ds_text,
    frame_positions,
    is_enhanced,
    series_description,
)
from ldct.io.limits import check_orientation, check_spacing
from ldct.volume import Volume

__all__ = ["COPY_TAGS", "SLICE_TAGS", "WHOLE_SCAN_TAGS", "build_series", "check_output",
           "choose_transfer_syntax", "protected_paths", "write_dicom_series"]

#: lossless transfer syntaxes ldct can write, in order of preference for ``compress=True``
LOSSLESS_SYNTAXES = (U.JPEG2000Lossless, U.JPEGLSLossless, U.RLELossless)
#: attributes taken from the first source header when slices do not map one to one onto source slices
WHOLE_SCAN_TAGS = ("KVP", "ConvolutionKernel", "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation")
#: transfer syntaxes that are always lossy (the derived series inherits LossyImageCompression 01)
LOSSY_SYNTAXES = (U.JPEGBaseline8Bit, U.JPEGExtended12Bit, U.JPEGLSNearLossless)


def _encoder_ready(ts: U.UID) -> bool:
    from pydicom.pixels import get_encoder

    try:
        return bool(get_encoder(ts).is_available)
    except (NotImplementedError, ValueError, KeyError):
        return False


def choose_transfer_syntax(source_ts: Any, compress: bool | None = None) -> U.UID:
    """The transfer syntax of a derived series.

    ``compress`` None: compress (losslessly) only when the source was compressed; True: always;
    False: never. A compressed output keeps the source's transfer syntax when it is lossless and
    pydicom has an encoder for it, else the first available of JPEG 2000 lossless, JPEG-LS lossless,
    RLE lossless. A deflated source gives a deflated output.
    """
    ts = U.UID(str(source_ts)) if source_ts else None
    src_compressed = ts is not None and (ts.is_compressed or ts.is_deflated)
    if compress is False or (compress is None and not src_compressed):
        return ExplicitVRLittleEndian
    if ts is not None and ts.is_deflated:
        return ts
    if ts in LOSSLESS_SYNTAXES and _encoder_ready(ts):
        return ts
    for cand in LOSSLESS_SYNTAXES:
        if _encoder_ready(cand):
            return cand
    return U.DeflatedExplicitVRLittleEndian  # always available: zlib


def _transfer_syntax_of(hdr: Dataset | None) -> U.UID | None:
    fm = getattr(hdr, "file_meta", None) if hdr is not None else None
    ts = getattr(fm, "TransferSyntaxUID", None) if fm is not None else None
    return U.UID(str(ts)) if ts else None


def _pick_headers(vol: Volume, source: Volume | None) -> tuple[list[Dataset] | None, bool]:
    """(headers, one per slice?): the volume's own headers first (a simulated low dose carries its
    own dose), then the source's."""
    nz = vol.data.shape[0]
    cands = [h for h in (vol.headers, source.headers if source is not None else None) if h]
    for h in cands:
        if len(h) == nz:
            return list(h), True
    return (list(cands[0]), False) if cands else (None, False)


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


def _check_geometry(vol: Volume) -> None:
    """Raise :class:`LdctError` for geometry that would put NaN/Inf or nonsense into the headers."""
    where = vol.meta.get("source_path")
    nz = vol.data.shape[0]
    pos = np.asarray(vol.positions, dtype=np.float64)
    if pos.shape != (nz, 3):
        raise LdctError(f"{len(pos)} slice positions for {nz} slices; cannot write DICOM", where)
    if not np.all(np.isfinite(pos)):
        raise LdctError("slice positions contain NaN or Inf; cannot write DICOM", where)
    check_orientation(vol.orientation, "orientation (cannot write DICOM)", where)
    check_spacing(vol.spacing[1:], 2, "pixel spacing (cannot write DICOM)", where)
    if not math.isfinite(float(vol.spacing[0])):
        raise LdctError(f"slice spacing {vol.spacing[0]} is not finite; cannot write DICOM", where)
    t = vol.slice_thickness
    if t is not None and not (math.isfinite(float(t)) and float(t) >= 0):
        raise LdctError(f"slice thickness {t} is not a finite number of mm; cannot write DICOM", where)


def _slice_sources(
    hdrs: list[Dataset] | None, per_slice: bool, vol: Volume
) -> list[tuple[Dataset, int | None]] | None:
    """For each slice, its source header and (Enhanced CT) frame index; None when slices do not map.

    Slices map one to one when there is a header per slice and their positions along the slice
    normal agree with the volume's (within half a slice spacing).
    """
    if not hdrs or not per_slice:
        return None
    n = vol.normal
    z = np.asarray(vol.positions, dtype=np.float64) @ n
    tol = 0.5 * max(abs(vol.spacing[0]), 1e-3)
    frames: dict[int, list[np.ndarray | None]] = {}
    out: list[tuple[Dataset, int | None]] = []
    for k, h in enumerate(hdrs):
        if is_enhanced(h):
            fp = frames.get(id(h))
            if fp is None:  # one parse per Enhanced dataset, not one per frame
                fp = frames[id(h)] = frame_positions(h)
            zs = [float(p @ n) if p is not None else math.nan for p in fp]
            if not zs or all(math.isnan(v) for v in zs):
                return None
            f = int(np.nanargmin(np.abs(np.asarray(zs) - z[k])))
            if abs(zs[f] - z[k]) > tol:
                return None
            out.append((h, f))
            continue
        ipp = h.get("ImagePositionPatient")
        try:
            hz = float(np.asarray([float(v) for v in ipp]) @ n) if ipp is not None and len(ipp) == 3 else None
        except (TypeError, ValueError):
            hz = None
        if hz is not None and math.isfinite(hz) and abs(hz - z[k]) > tol:
            return None
        out.append((h, None))
    return out


def _instance_numbers(hdrs: list[Dataset] | None, mapped: list[tuple[Dataset, int | None]] | None,
                      nz: int) -> list[int]:
    """InstanceNumber of each slice: the source slice's own number when every slice maps to a source
    slice with a distinct number; else 1..n running in the source's direction along the patient."""
    def num(h: Dataset) -> int | None:
        try:
            return int(str(h.get("InstanceNumber", "")).strip())
        except (TypeError, ValueError):
            return None

    if mapped is not None:
        nums = [num(h) if f is None else None for h, f in mapped]
        if all(v is not None for v in nums) and len(set(nums)) == nz:
            return nums  # type: ignore[return-value]
    descending = False
    if hdrs:
        seq = [v for v in (num(h) for h in hdrs) if v is not None]
        if len(set(seq)) > 1:
            descending = float(np.polyfit(np.arange(len(seq)), np.asarray(seq, dtype=np.float64), 1)[0]) < 0
    return [nz - k for k in range(nz)] if descending else [k + 1 for k in range(nz)]


def build_series(
    vol: Volume,
    *,
    source: Volume | None = None,
    description: str = "",
    series_number: int | None = None,
    compress: bool | None = None,
) -> list[tuple[str, Dataset]]:
    """The datasets of the derived series: a list of (file name, dataset), one per slice.

    Args:
        vol: CT in HU to write.
        source: the volume it was derived from (its headers give patient, study and per-slice
            acquisition attributes when ``vol`` has none of its own).
        description: what was done (start of SeriesDescription).
        series_number: SeriesNumber; None = the source's + 1000 (1 without a DICOM source).
        compress: None = lossless compression when the source was compressed, True = always, False = never.
    """
    if not vol.is_hu or vol.channels != 1:
        raise LdctError("only CT volumes in HU can be written as a DICOM CT series (this one is not HU)")
    if not np.all(np.isfinite(vol.data)):
        raise LdctError("volume contains NaN or Inf values; cannot write DICOM")
    _check_geometry(vol)
    nz, ny, nx = vol.data.shape
    meta = dict(source.meta if source is not None else {})
    meta.update({k: v for k, v in vol.meta.items() if v is not None})
    hdrs, per_slice = _pick_headers(vol, source)
    mapped = _slice_sources(hdrs, per_slice, vol)
    first = hdrs[0] if hdrs else None
    derived = first is not None
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    # de-identified with shifted dates: keep the source's (shifted) dates rather than today's
    shifted = derived and str(first.get("LongitudinalTemporalInformationModified", "")).upper() == "MODIFIED"
    if shifted:
        date = str(first.get("SeriesDate", "") or first.get("StudyDate", "") or "")
        time = str(first.get("SeriesTime", "") or first.get("StudyTime", "") or "")
    series_uid = generate_uid()
    anchor = str(first.get("FrameOfReferenceUID", "") if first is not None else "") or ""
    study_uid = _uid_or_new(first.get("StudyInstanceUID") if first is not None else None, anchor, "study")
    for_uid = _uid_or_new(first.get("FrameOfReferenceUID") if first is not None else None)
    slope, intercept = _rescale(vol.data)
    what = description or ("converted by ldct" if derived else "created by ldct")
    src_desc = str(meta.get("series_description") or (
        Path(str(meta.get("source_path", ""))).name if meta.get("source_path") else ""
    ))
    series_desc = series_description(what, src_desc)
    if series_number is None:
        series_number = derived_series_number(meta.get("series_number"), "derived") if derived else 1
    src_ts = _transfer_syntax_of(first)
    out_ts = choose_transfer_syntax(src_ts, compress)
    instances = _instance_numbers(hdrs, mapped, nz)
    order = {k: r for r, k in enumerate(sorted(range(nz), key=lambda k: instances[k]))}
    sv = first.get("SoftwareVersions") if first is not None else None
    sv = [] if sv is None else [sv] if isinstance(sv, (str, bytes)) else list(sv)
    src_versions = [str(v).strip() for v in sv if str(v).strip()]
    derivation = (
        f"{clean_text(what)}; derived from series {meta.get('series_uid') or '(unknown)'}"
        f"{' (' + clean_text(src_desc) + ')' if src_desc else ''} by ldct {ldct.__version__}"
    )[:1024]
    out = []
    for k in range(nz):
        hdr, frame = mapped[k] if mapped is not None else (first, None)
        ds = Dataset()
        if hdr is not None:
            for tag in COPY_TAGS:
                if tag in hdr and hdr[tag].value is not None:
                    ds[tag] = copy.deepcopy(hdr[tag])  # never share elements with the source header
        if hdr is not None and mapped is not None:
            copy_slice_attributes(ds, hdr, frame)
        elif hdr is not None:  # slices do not map to source slices: only what holds for the whole scan
            for tag in WHOLE_SCAN_TAGS:
                if tag in hdr and hdr[tag].value is not None:
                    ds[tag] = copy.deepcopy(hdr[tag])
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
        ds.SeriesNumber = int(series_number)
        ds.SeriesDate, ds.SeriesTime = date, time
        if shifted:
            ds.ContentDate = str(hdr.get("ContentDate", "") or date) if hdr is not None else date
            ds.ContentTime = str(hdr.get("ContentTime", "") or time) if hdr is not None else time
        else:
            ds.ContentDate, ds.ContentTime = date, time
            ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
        ds.SeriesDescription = series_desc
        ds.DerivationDescription = derivation
        ds.Manufacturer = ds.get("Manufacturer", "") or ""
        ds.SoftwareVersions = [*src_versions, f"ldct {ldct.__version__}"][-16:]
        ds.InstanceNumber = int(instances[k])
        ds.setdefault("AcquisitionNumber", 1)
        ds.FrameOfReferenceUID = for_uid
        ds.setdefault("PositionReferenceIndicator", "")
        if hdr is not None and mapped is not None:
            ref_uid = str(
                hdr.get("SOPInstanceUID", "")
                or getattr(getattr(hdr, "file_meta", None), "MediaStorageSOPInstanceUID", "")
                or ""
            )
            if ref_uid:
                item = Dataset()
                item.ReferencedSOPClassUID = str(hdr.get("SOPClassUID", "") or CTImageStorage)
                item.ReferencedSOPInstanceUID = ref_uid
                if frame is not None:
                    item.ReferencedFrameNumber = frame + 1
                ds.SourceImageSequence = DicomSequence([item])
        if src_ts is not None and src_ts in LOSSY_SYNTAXES and "LossyImageCompression" not in ds:
            ds.LossyImageCompression = "01"
        _dose_from_meta(ds, meta)
        # geometry
        pos = vol.positions[k]
        ds.ImagePositionPatient = [ds_text(float(v)) for v in pos]
        ds.ImageOrientationPatient = [ds_text(float(v)) for v in vol.orientation]
        ds.PixelSpacing = [ds_text(vol.spacing[1]), ds_text(vol.spacing[2])]
        thickness = vol.slice_thickness or meta.get("slice_thickness") or vol.spacing[0]
        ds.SliceThickness = ds_text(float(thickness))
        ds.SliceLocation = ds_text(float(pos @ vol.normal))
        # pixels
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept = ds_text(intercept)
        ds.RescaleSlope = ds_text(slope)
        ds.RescaleType = "HU"
        if "WindowCenter" not in ds or "WindowWidth" not in ds:
            for tag in ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation"):
                if tag in ds:
                    del ds[tag]
            ds.WindowCenter, ds.WindowWidth = "40", "400"
        stored = np.clip(np.round((vol.data[k].astype(np.float64) - intercept) / slope), -32768, 32767)
        stored = stored.astype("<i2")
        ds.PixelData = stored.tobytes()
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = CTImageStorage
        fm.MediaStorageSOPInstanceUID = sop_uid
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        fm.ImplementationVersionName = f"LDCT_{ldct.__version__}"[:16]
        ds.file_meta = fm
        if out_ts.is_compressed:
            ds.compress(out_ts, stored)
        elif out_ts != ExplicitVRLittleEndian:
            fm.TransferSyntaxUID = out_ts
        out.append((f"IM{order[k] + 1:05d}.dcm", ds))
    return out


def _dose_from_meta(ds: Dataset, meta: dict[str, Any]) -> None:
    """Acquisition tags not taken from a source slice: from the volume's metadata (finite values only)."""
    def val(key: str) -> float | None:
        try:
            v = float(meta[key]) if meta.get(key) is not None else None
        except (TypeError, ValueError):
            return None
        return v if v is not None and math.isfinite(v) else None

    if "KVP" not in ds:
        kvp = val("kvp")
        ds.KVP = ds_text(kvp) if kvp is not None else ""
    ma, mas, ctdi = val("tube_current_ma"), val("exposure_mas"), val("ctdivol")
    if "XRayTubeCurrent" not in ds and ma is not None:
        ds.XRayTubeCurrent = round(ma)
    if "Exposure" not in ds and mas is not None:
        ds.Exposure = round(mas)
        ds.ExposureInuAs = round(mas * 1000.0)
    if "CTDIvol" not in ds and ctdi is not None:
        ds.CTDIvol = ctdi
    if "ConvolutionKernel" not in ds and meta.get("kernel"):
        ds.ConvolutionKernel = str(meta["kernel"]).split("\\")[:16]


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
    series_number: int | None = None,
    compress: bool | None = None,
) -> Path:
    """Write ``vol`` as a derived CT series into the folder ``out_dir`` (created atomically).

    ``series_number`` and ``compress`` as in :func:`build_series`. Refuses to write into (or over) a
    folder the source series was read from.
    """
    out_dir = Path(out_dir)
    check_output(out_dir, vol, source)
    datasets = build_series(vol, source=source, description=description, series_number=series_number,
                            compress=compress)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for name, ds in datasets:
            ds.save_as(tmp / name, enforce_file_format=True)
    return out_dir
