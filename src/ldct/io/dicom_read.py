"""DICOM series -> :class:`Volume` in HU.

Classic single-frame CT and Enhanced (multi-frame) CT are handled the same way: every frame becomes a
slice with its own position, orientation, pixel spacing and rescale; slices are sorted by their
position along the slice normal (never by file name or InstanceNumber), RescaleSlope/Intercept are
applied, padding pixels (PixelPaddingValue) become air (-1000 HU), and gantry tilt / uneven spacing
are reported in ``vol.meta["warnings"]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from ldct.errors import LdctError
from ldct.io import dicom_scan
from ldct.io.dicom_pixels import check_layout, int_tag, padding_mask, stored_values, transfer_syntax
from ldct.io.dicom_scan import functional_group
from ldct.io.geometry import analyse_stack, orientations_agree, sort_order
from ldct.io.limits import HU_RANGE, check_orientation, check_spacing
from ldct.volume import Volume

AIR_HU = -1000.0
DEFAULT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass
class _Frame:
    file: Path
    ds: Dataset
    frame: int
    position: np.ndarray | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    thickness: float | None
    slope: float
    intercept: float
    instance: int




def _floats(v: Any) -> tuple[float, ...] | None:
    if v is None or v == "":
        return None
    try:
        seq = [v] if isinstance(v, (str, bytes, int, float)) else list(v)
        return tuple(float(x) for x in seq)
    except (TypeError, ValueError):
        return None


def _float(v: Any) -> float | None:
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


def _show(v: Any) -> str:
    text = str(v) if isinstance(v, (str, bytes, int, float)) else "\\".join(str(x) for x in v)
    return "'" + (text if len(text) <= 60 else text[:57] + "...") + "'"


def _numbers(item: Dataset | None, kw: str, path: Path, n: int) -> tuple[float, ...] | None:
    """The ``n`` finite numbers of tag ``kw`` in ``item``; None when absent or empty; :class:`LdctError`
    naming the tag when present but not ``n`` finite numbers (a header ldct must not guess around)."""
    v = item.get(kw) if item is not None else None
    if v is None or v == "" or (not isinstance(v, (str, bytes, int, float)) and len(v) == 0):
        return None
    vals = _floats(v)
    if vals is None or len(vals) != n or not all(math.isfinite(x) for x in vals):
        count = f"{n} finite numbers" if n > 1 else "a finite number"
        raise LdctError(f"{kw} {_show(v)} is not {count} (corrupt header)", path)
    return vals


def _geometry(
    path: Path, pp: Dataset | None, po: Dataset | None, pm: Dataset | None, pv: Dataset | None
) -> tuple[Any, ...]:
    """Validated (position, orientation, pixel spacing, thickness, slope, intercept) of one frame."""
    pos = _numbers(pp, "ImagePositionPatient", path, 3)
    ori = _numbers(po, "ImageOrientationPatient", path, 6)
    if ori is not None:
        ori = check_orientation(ori, "ImageOrientationPatient", path)
    spc = _numbers(pm, "PixelSpacing", path, 2) if pm is not None and "PixelSpacing" in pm else None
    if spc is None and pm is not None and pm.get("ImagerPixelSpacing") not in (None, ""):
        spc = check_spacing(_numbers(pm, "ImagerPixelSpacing", path, 2) or (), 2, "ImagerPixelSpacing", path)
    elif spc is not None:
        spc = check_spacing(spc, 2, "PixelSpacing", path)
    thk = _numbers(pm, "SliceThickness", path, 1)
    if thk is not None and thk[0] < 0:
        raise LdctError(f"SliceThickness {thk[0]:g} is negative (corrupt header)", path)
    slope = _numbers(pv, "RescaleSlope", path, 1)
    if slope is not None and slope[0] <= 0:
        raise LdctError(
            f"RescaleSlope {slope[0]:g} cannot be right: it must be positive (zero maps every pixel to one "
            "value, a negative slope inverts the image)",
            path,
        )
    icpt = _numbers(pv, "RescaleIntercept", path, 1)
    return (
        pos,
        ori,
        spc,
        thk[0] if thk and thk[0] > 0 else None,
        slope[0] if slope else None,
        icpt[0] if icpt else None,
    )


def _frames_of(path: Path, ds: Dataset) -> list[_Frame]:
    n = check_layout(ds, path)  # sizes against caps and the file size, before anything is allocated
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    inst = int_tag(ds, "InstanceNumber", path, 0) or 0
    out = []
    for f in range(n):
        if enhanced:
            pp, po, pm, pv = (
                functional_group(ds, f, s)
                for s in (
                    "PlanePositionSequence",
                    "PlaneOrientationSequence",
                    "PixelMeasuresSequence",
                    "PixelValueTransformationSequence",
                )
            )
            pos, ori, spc, thk, slope, icpt = _geometry(path, pp, po, pm, pv)
        else:
            pos, ori, spc, thk, slope, icpt = _geometry(path, ds, ds, ds, ds)
        out.append(
            _Frame(
                file=path,
                ds=ds,
                frame=f,
                position=np.asarray(pos, dtype=np.float64) if pos and len(pos) == 3 else None,
                orientation=ori if ori and len(ori) == 6 else None,
                pixel_spacing=(spc[0], spc[1]) if spc and len(spc) == 2 else None,
                thickness=thk,
                slope=1.0 if slope is None else slope,
                intercept=0.0 if icpt is None else icpt,
                instance=inst * 100000 + f,
            )
        )
    return out


def read_dicom(
    inputs: str | Path | Sequence[str | Path], *, series: str | None = None, require_ct: bool = True
) -> Volume:
    """Read one DICOM series (folder searched recursively, single file, or list of files) as HU.

    Returns a :class:`Volume` with data (z, y, x) float32 sorted along the slice normal.
    With several series in the input, ``series`` (SeriesInstanceUID or 0-based index) picks one;
    otherwise :class:`LdctError` lists them. With ``require_ct`` a non-CT modality is refused.
    """
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    where = Path(items[0])
    found = dicom_scan.scan_series(items)
    chosen = dicom_scan.select_series(found, series, where)
    first = chosen.datasets[0]
    modality = str(first.get("Modality", "") or "").upper()
    if require_ct and modality not in ("CT", ""):
        raise LdctError(
            f"modality is {modality}, not CT: ldct needs CT images in Hounsfield units", chosen.files[0]
        )
    members = list(zip(chosen.files, chosen.datasets))
    for f, ds in members:  # an MR slice filed under a CT SeriesInstanceUID must not become "HU"
        other = str(ds.get("Modality", "") or "").upper()
        if other and modality and other != modality:
            raise LdctError(
                f"modality {other} inside a {modality} series ({chosen.uid or 'no SeriesInstanceUID'}): "
                "slices of different modalities cannot be stacked",
                f,
            )
    warnings: list[str] = []
    scouts = [
        (f, ds) for f, ds in members if "LOCALIZER" in [str(t).upper() for t in ds.get("ImageType", [])]
    ]
    if scouts and len(scouts) < len(members):
        scout_ids = {id(ds) for _, ds in scouts}
        members = [m for m in members if id(m[1]) not in scout_ids]
        warnings.append(f"{len(scouts)} localizer (scout) image(s) in the series left out")
    frames: list[_Frame] = []
    for f, ds in members:
        if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            raise LdctError("DICOM file has no PixelData (not an image, or the file is truncated)", f)
        frames.extend(_frames_of(f, ds))
    if modality == "":
        warnings.append("no Modality tag; assumed CT")

    # geometry checks before decoding anything
    rows = {(int(fr.ds.get("Rows", 0) or 0), int(fr.ds.get("Columns", 0) or 0)) for fr in frames}
    if len(rows) > 1:
        sizes = ", ".join(f"{r}x{c}" for r, c in sorted(rows))
        raise LdctError(f"slices of different sizes in one series ({sizes}); cannot stack them", where)
    orientation = next((fr.orientation for fr in frames if fr.orientation), None)
    if orientation is None:
        warnings.append("no ImageOrientationPatient; assumed axial")
        orientation = DEFAULT_ORIENTATION
    for fr in frames:
        if fr.orientation and not orientations_agree(fr.orientation, orientation):
            raise LdctError(
                "slices with different orientations in one series (ImageOrientationPatient differs); "
                "cannot stack them",
                fr.file,
            )
    if all(fr.position is not None for fr in frames):
        positions = np.stack([fr.position for fr in frames])  # type: ignore[misc]
        order = sort_order(positions, orientation)
    else:
        if len(frames) > 1:
            warnings.append("no ImagePositionPatient; slices ordered by InstanceNumber, spacing unknown")
        order = np.argsort([fr.instance for fr in frames], kind="stable")
        positions = None
    frames = [frames[i] for i in order]
    thickness = next((fr.thickness for fr in frames if fr.thickness), None)
    tilt_tag = _gantry_tilt(first)
    if positions is not None:
        positions = positions[order]
        geo = analyse_stack(positions, orientation, tilt_tag)
        if geo.duplicates:
            raise LdctError(
                f"{geo.duplicates + 1} slices share the same position (several acquisitions in one series?)",
                where,
            )
        warnings.extend(geo.warnings)
        spacing_z = geo.spacing_z or thickness or 1.0
    else:
        geo = None
        between = _float(first.get("SpacingBetweenSlices"))
        spacing_z = (
            thickness or (between if between and math.isfinite(between) and between > 0 else None) or 1.0
        )
    pix = next((fr.pixel_spacing for fr in frames if fr.pixel_spacing), None)
    if pix is None:
        warnings.append("no PixelSpacing; assumed 1 mm")
        pix = (1.0, 1.0)

    data, padded = _decode(frames, is_ct=modality in ("CT", ""))
    if modality in ("CT", ""):
        _check_ct_range(data, frames)
    meta = _metadata(chosen, frames, modality)
    meta.update(
        source_format="dicom",
        source_path=str(where),
        source_files=[str(fr.file) for fr in frames],
        transfer_syntax=transfer_syntax(first).name,
        gantry_tilt_deg=float(geo.tilt_deg) if geo else abs(tilt_tag or 0.0),
        uneven_spacing=bool(geo.uneven) if geo else False,
        slice_gap_min_mm=float(np.min(np.abs(geo.gaps))) if geo and len(geo.gaps) else None,
        slice_gap_max_mm=float(np.max(np.abs(geo.gaps))) if geo and len(geo.gaps) else None,
        padded_voxels=padded,
        warnings=warnings,
    )
    if len(found) > 1:
        meta["other_series"] = [s.describe() for s in found if s is not chosen]
    headers = []
    seen: set[int] = set()
    for fr in frames:
        if id(fr.ds) not in seen:
            seen.add(id(fr.ds))
            for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
                if t in fr.ds:
                    del fr.ds[t]
        headers.append(fr.ds)
    return Volume(
        data=data,
        spacing=(spacing_z, pix[0], pix[1]),
        positions=positions,
        orientation=orientation,
        slice_thickness=thickness,
        is_hu=modality in ("CT", ""),
        meta=meta,
        headers=headers,
    )


def _decode(frames: list[_Frame], *, is_ct: bool) -> tuple[np.ndarray, int]:
    """Decode every file once and place its frames at their sorted index; returns (data, padded count)."""
    r, c = int(frames[0].ds.Rows), int(frames[0].ds.Columns)
    out = np.empty((len(frames), r, c), dtype=np.float32)
    by_file: dict[int, list[tuple[int, _Frame]]] = {}
    for k, fr in enumerate(frames):
        by_file.setdefault(id(fr.ds), []).append((k, fr))
    pad_total = 0
    pad_masks: list[tuple[int, np.ndarray]] = []
    for members in by_file.values():
        fr0 = members[0][1]
        stored = stored_values(fr0.ds, fr0.file)
        mask_all = padding_mask(fr0.ds, stored)
        for k, fr in members:
            if fr.frame >= stored.shape[0]:
                raise LdctError(f"frame {fr.frame + 1} missing from pixel data", fr.file)
            out[k] = stored[fr.frame].astype(np.float64) * fr.slope + fr.intercept
            if mask_all is not None and mask_all[fr.frame].any():
                pad_masks.append((k, mask_all[fr.frame]))
    if pad_masks:
        fill = (
            AIR_HU if is_ct else float(min(np.min(out[k][~m]) if (~m).any() else 0.0 for k, m in pad_masks))
        )
        for k, m in pad_masks:
            out[k][m] = fill
            pad_total += int(m.sum())
    return out, pad_total


def _check_ct_range(data: np.ndarray, frames: list[_Frame]) -> None:
    """CT values outside ``HU_RANGE`` mean the header misdescribes the pixels (PixelRepresentation,
    RescaleSlope/Intercept): refuse, naming the first such slice's file and its rescale."""
    lo, hi = data.min(axis=(1, 2)), data.max(axis=(1, 2))
    bad = np.flatnonzero((lo < HU_RANGE[0]) | (hi > HU_RANGE[1]))
    if len(bad):
        k = int(bad[0])
        fr = frames[k]
        raise LdctError(
            f"values range from {float(lo[k]):.6g} to {float(hi[k]):.6g}, impossible for CT in HU (expected "
            f"{HU_RANGE[0]:g} .. {HU_RANGE[1]:g}) with RescaleSlope {fr.slope:g}, RescaleIntercept "
            f"{fr.intercept:g}, PixelRepresentation {fr.ds.get('PixelRepresentation', '?')}: the header does not "
            "describe the pixel data",
            fr.file,
        )


def _gantry_tilt(ds: Dataset) -> float | None:
    v = _float(ds.get("GantryDetectorTilt"))
    if v is None:
        it = functional_group(ds, 0, "CTAcquisitionDetailsSequence")
        v = _float(it.get("GantryDetectorTilt")) if it is not None else None
    return v if v is not None and math.isfinite(v) else None


def _mean_of(frames: list[_Frame], classic: str, seq: str, enhanced: str) -> float | None:
    vals = []
    for fr in frames:
        v = _float(fr.ds.get(classic))
        if v is None:
            it = functional_group(fr.ds, fr.frame, seq)
            v = _float(it.get(enhanced)) if it is not None else None
        if v is not None:
            vals.append(v)
    return float(np.mean(vals)) if vals else None


def _metadata(chosen: dicom_scan.SeriesInfo, frames: list[_Frame], modality: str) -> dict[str, Any]:
    ds = frames[0].ds

    def s(tag: str) -> str | None:
        v = ds.get(tag)
        return str(v).strip() or None if v is not None else None

    kernel_v = ds.get("ConvolutionKernel")
    if kernel_v is None:
        it = functional_group(ds, 0, "CTReconstructionSequence")
        kernel_v = it.get("ConvolutionKernel") if it is not None else None
    if kernel_v is not None and not isinstance(kernel_v, str):
        kernel = "\\".join(str(k) for k in kernel_v) or None
    else:
        kernel = str(kernel_v).strip() or None if kernel_v is not None else None
    kvp = _float(ds.get("KVP"))
    if kvp is None:
        it = functional_group(ds, 0, "CTAcquisitionDetailsSequence")
        kvp = _float(it.get("KVP")) if it is not None else None
    return {
        "patient_id": dicom_scan.patient_id_of(ds),
        "study_uid": s("StudyInstanceUID"),
        "series_uid": chosen.uid or None,
        "series_description": s("SeriesDescription"),
        "series_number": chosen.number,
        "frame_of_reference_uid": s("FrameOfReferenceUID"),
        "modality": modality or None,
        "manufacturer": s("Manufacturer"),
        "model": s("ManufacturerModelName"),
        "kernel": kernel,
        "kvp": kvp,
        "tube_current_ma": _mean_of(frames, "XRayTubeCurrent", "CTExposureSequence", "XRayTubeCurrentInmA"),
        "exposure_mas": _mean_of(frames, "Exposure", "CTExposureSequence", "ExposureInmAs"),
        "ctdivol": _mean_of(frames, "CTDIvol", "CTExposureSequence", "CTDIvol"),
        "slice_thickness": frames[0].thickness,
        "study_date": s("StudyDate"),
        "body_part": s("BodyPartExamined"),
        "patient_position": s("PatientPosition"),
        "sop_class_uid": s("SOPClassUID")
        or str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
        or None,
        "multiframe": (int_tag(ds, "NumberOfFrames", frames[0].file, 1) or 1) > 1,
    }
