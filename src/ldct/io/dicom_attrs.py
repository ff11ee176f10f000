"""Which source attributes a derived CT series keeps, and how (used by :mod:`ldct.io.dicom_write`).

- Patient, study, equipment and **de-identification** attributes are copied as they are.
- Acquisition attributes that can change from slice to slice (tube current and exposure under tube
  current modulation, CTDIvol, table height, acquisition time, window presets, ...) are copied from
  **each slice's own** source header, never averaged over the series. An Enhanced CT source stores them
  per frame in functional groups; they are mapped back to the classic attributes.
- A simulated low-dose volume states its own dose: :func:`scale_dose_headers` scales tube current,
  exposure (mAs) and CTDIvol of every slice by the dose fraction (and adds the microampere /
  microampere-second attributes so no precision is lost to the integer VRs).
- Every derived series gets its own SeriesNumber (:func:`derived_series_number`) and a
  SeriesDescription that fits the 64 characters of the LO VR at word boundaries
  (:func:`series_description`).
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from ldct.errors import LdctError
from ldct.io.dicom_scan import first_item, functional_group

#: attributes copied from the slice's source header when present (patient, study, de-identification,
#: equipment, frame of reference, contrast, lossy-compression history)
COPY_TAGS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDsSequence",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
    "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID",
    "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID",
    "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID",
    "ClinicalTrialTimePointID",
    "ClinicalTrialCoordinatingCenterName",
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
    "InstitutionAddress",
    "StationName",
    "DeviceSerialNumber",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "PatientPosition",
    "BodyPartExamined",
    "ProtocolName",
    "ContrastBolusAgent",
    "ContrastBolusVolume",
    "ContrastBolusStartTime",
    "ContrastBolusStopTime",
    "ContrastBolusTotalDose",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
)

#: acquisition / reconstruction attributes of one slice (classic CT Image module keywords)
SLICE_TAGS = (
    "AcquisitionNumber",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "IrradiationEventUID",
    "ReferencedImageSequence",
    "KVP",
    "ScanOptions",
    "DataCollectionDiameter",
    "DataCollectionCenterPatient",
    "ReconstructionDiameter",
    "ReconstructionTargetCenterPatient",
    "DistanceSourceToDetector",
    "DistanceSourceToPatient",
    "GantryDetectorTilt",
    "TableHeight",
    "TablePosition",
    "RotationDirection",
    "ExposureTime",
    "XRayTubeCurrent",
    "XRayTubeCurrentInuA",
    "Exposure",
    "ExposureInuAs",
    "FilterType",
    "GeneratorPower",
    "FocalSpots",
    "ConvolutionKernel",
    "ReconstructionAlgorithm",
    "RevolutionTime",
    "SingleCollimationWidth",
    "TotalCollimationWidth",
    "TableSpeed",
    "TableFeedPerRotation",
    "SpiralPitchFactor",
    "ExposureModulationType",
    "CTDIvol",
    "CTDIPhantomTypeCodeSequence",
    "DateOfLastCalibration",
    "TimeOfLastCalibration",
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
)

#: Enhanced CT functional groups holding per-frame acquisition attributes (classic keywords inside,
#: except the renamed ones in _ENHANCED_RENAMED)
_ENHANCED_GROUPS = (
    "CTAcquisitionTypeSequence",
    "CTAcquisitionDetailsSequence",
    "CTTableDynamicsSequence",
    "CTPositionSequence",
    "CTGeometrySequence",
    "CTReconstructionSequence",
    "CTExposureSequence",
    "CTXRayDetailsSequence",
    "FrameVOILUTSequence",
)
_ENHANCED_RENAMED = {"ExposureTimeInms": "ExposureTime"}

#: SeriesNumber offsets added to the source's number, one per kind of derived series
SERIES_OFFSETS = {"derived": 1000, "nd": 2000, "ld": 3000, "denoised": 5000}

#: longest SeriesDescription (LO VR)
DESCRIPTION_MAX = 64


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def ds_text(v: float) -> str:
    """A DS value (at most 16 characters), exact when the float allows it."""
    v = float(v)
    if not math.isfinite(v):
        raise LdctError(f"refusing to write a non-finite value ({v}) into a DICOM header")
    if v == 0:
        return "0"
    s = repr(v)
    s = s.removesuffix(".0")
    digits = 16
    while len(s) > 16 and digits > 1:
        digits -= 1
        s = f"{v:.{digits}g}"
    return s


def is_enhanced(ds: Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def frame_positions(ds: Dataset) -> list[np.ndarray | None]:
    """ImagePositionPatient of each frame of an Enhanced CT object (None where absent)."""
    n = len(ds.get("PerFrameFunctionalGroupsSequence") or [])
    out: list[np.ndarray | None] = []
    for f in range(int(ds.get("NumberOfFrames", n) or n or 1)):
        it = functional_group(ds, f, "PlanePositionSequence")
        pos = it.get("ImagePositionPatient") if it is not None else None
        out.append(np.asarray([float(x) for x in pos]) if pos is not None and len(pos) == 3 else None)
    return out


def copy_slice_attributes(out: Dataset, hdr: Dataset, frame: int | None) -> None:
    """Copy ``hdr``'s acquisition attributes of one slice (``frame`` of an Enhanced CT) into ``out``."""
    for tag in SLICE_TAGS:
        if tag in hdr and hdr[tag].value is not None:
            out[tag] = copy.deepcopy(hdr[tag])
    if frame is None or not is_enhanced(hdr):
        return
    for seq in _ENHANCED_GROUPS:
        it = functional_group(hdr, frame, seq)
        if it is None:
            continue
        for elem in it:
            kw = _ENHANCED_RENAMED.get(elem.keyword, elem.keyword)
            if kw in SLICE_TAGS and elem.value is not None and elem.value != "":
                if kw == "ExposureTime":
                    t = _finite(elem.value)
                    if t is not None:
                        out.ExposureTime = round(t)
                else:
                    out[kw] = copy.deepcopy(elem)
        if seq == "CTExposureSequence":
            ma, mas = _finite(it.get("XRayTubeCurrentInmA")), _finite(it.get("ExposureInmAs"))
            if ma is not None:
                out.XRayTubeCurrent = round(ma)
                out.XRayTubeCurrentInuA = ds_text(ma * 1000.0)
            if mas is not None:
                out.Exposure = round(mas)
                out.ExposureInuAs = round(mas * 1000.0)


def _scale_classic(ds: Dataset, f: float) -> None:
    # (integer tag, its micro-unit tag, how the micro-unit VR is written: DS text for uA, IS for uAs)
    for milli_tag, micro_tag, micro_vr in (("XRayTubeCurrent", "XRayTubeCurrentInuA", ds_text),
                                           ("Exposure", "ExposureInuAs", round)):
        milli, micro = _finite(ds.get(milli_tag)), _finite(ds.get(micro_tag))
        if micro is None and milli is not None:
            micro = milli * 1000.0
        if milli is not None:
            setattr(ds, milli_tag, round(milli * f))
        if micro is not None:
            setattr(ds, micro_tag, micro_vr(micro * f))
    ctdi = _finite(ds.get("CTDIvol"))
    if ctdi is not None:
        ds.CTDIvol = ctdi * f


def _scale_exposure_item(it: Dataset, f: float) -> None:
    for kw in ("XRayTubeCurrentInmA", "ExposureInmAs", "CTDIvol"):
        v = _finite(it.get(kw))
        if v is not None:
            setattr(it, kw, v * f)


def scale_dose_headers(headers: list[Dataset] | None, dose: float) -> list[Dataset] | None:
    """Copies of per-slice headers whose tube current, exposure (mAs) and CTDIvol are scaled by ``dose``.

    The source headers are left untouched; a header shared by several slices (Enhanced CT frames)
    stays shared in the copy. Exposure time is unchanged (a lower dose is a lower tube current).
    """
    if not headers:
        return headers
    copies: dict[int, Dataset] = {}
    for h in headers:
        if id(h) in copies:
            continue
        c = copy.deepcopy(h)
        _scale_classic(c, dose)
        groups = [it for it in (c.get("PerFrameFunctionalGroupsSequence") or [])]
        shared = first_item(c, "SharedFunctionalGroupsSequence")
        for g in groups + ([shared] if shared is not None else []):
            for it in g.get("CTExposureSequence") or []:
                _scale_exposure_item(it, dose)
        copies[id(h)] = c
    return [copies[id(h)] for h in headers]


def scale_dose_meta(meta: dict[str, Any], dose: float) -> dict[str, Any]:
    """The volume metadata's tube current, exposure and CTDIvol scaled by ``dose`` (absent ones left out)."""
    out = {}
    for key in ("tube_current_ma", "exposure_mas", "ctdivol"):
        v = _finite(meta.get(key))
        if v is not None:
            out[key] = v * dose
    return out


def derived_series_number(source_number: Any, kind: str = "derived", dose: float | None = None) -> int:
    """SeriesNumber of a derived series: the source's number plus an offset per kind of output.

    ``derived`` (convert) +1000, ``nd`` (simulation reference) +2000, ``ld`` +3000 + 1000 x dose
    (+3250 for 25 % dose), ``denoised`` +5000: the outputs of one run never share a number.
    """
    try:
        base = int(float(source_number)) if source_number not in (None, "") else 0
    except (TypeError, ValueError):
        base = 0
    if kind not in SERIES_OFFSETS:
        raise ValueError(f"unknown series kind {kind!r}; known: {', '.join(SERIES_OFFSETS)}")
    offset = SERIES_OFFSETS[kind]
    if kind == "ld":
        offset += round(1000.0 * float(dose if dose is not None else 1.0))
    n = base + offset
    return n if -(2**31) <= n < 2**31 else offset  # IS is a 32-bit signed integer


def clean_text(text: str) -> str:
    """One line of LO-safe text: no backslash (the VM separator), no control characters, single spaces."""
    text = re.sub(r"[\x00-\x1f\x7f]", " ", str(text)).replace("\\", "/")
    return " ".join(text.split())


def _shorten(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, parentheses kept balanced."""
    if len(text) <= limit:
        return text
    for n in range(limit, 0, -1):
        head = text[: n + 1]
        cut = head.rsplit(" ", 1)[0] if " " in head else text[:n]
        cut = cut.rstrip(" ,;:-/(")
        opened = max(cut.count("(") - cut.count(")"), 0)
        out = cut + ")" * opened
        if cut and len(out) <= limit:
            return out
    return text[:limit]


def series_description(what: str, source_description: str = "", limit: int = DESCRIPTION_MAX) -> str:
    """``what`` followed by the source's description in parentheses, within ``limit`` characters.

    What was done comes first and is kept whole when it fits; the source's description is shortened
    at word boundaries (or left out) to make room. Nothing is cut mid-word unless a single word is
    longer than the limit.
    """
    what, src = clean_text(what), clean_text(source_description)
    if not src or src == what:
        return _shorten(what, limit)
    full = f"{what} ({src})"
    if len(full) <= limit:
        return full
    room = limit - len(what) - 3
    if room >= 4:
        short = _shorten(src, room)
        if len(short) >= 4 and len(short) <= room:
            return f"{what} ({short})"
    return _shorten(what, limit)
