"""Pick the reader or writer from the path: everything becomes (or comes from) a :class:`Volume`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ldct.errors import LdctError
from ldct.io.arrays import RAW_SUFFIXES, check_raw_options, read_npy, read_npz, read_raw, write_npy, write_npz
from ldct.io.dicom_scan import SeriesInfo, check_readable, scan_series
from ldct.io.limits import check_hu_values, check_not_empty
from ldct.io.nifti import is_nifti, read_nifti, write_nifti
from ldct.io.photo import PHOTO_SUFFIXES, read_image, write_tiff
from ldct.volume import Volume

if TYPE_CHECKING:  # ldct.hu imports torch; keep reading CT light
    from ldct.hu import Window

FILE_SUFFIXES = (".nii", ".gz", ".npy", ".npz") + PHOTO_SUFFIXES + RAW_SUFFIXES
PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg")

PathLike = str | Path


def _kind(path: Path, raw_shape: object) -> str:
    suf = path.suffix.lower()
    if is_nifti(path):
        return "nifti"
    if suf == ".npy":
        return "npy"
    if suf == ".npz":
        return "npz"
    if suf in PHOTO_SUFFIXES:
        return "image"
    if suf in RAW_SUFFIXES or raw_shape is not None:
        return "raw"
    return "dicom"


def read_volume(
    path: PathLike | Sequence[PathLike],
    *,
    series: str | None = None,
    raw_shape: tuple[int, ...] | None = None,
    raw_dtype: str = "uint16",
    raw_offset: float = 0.0,
    raw_spacing: tuple[float, float, float] | None = None,
    require_ct: bool = True,
) -> Volume:
    """Read CT from any supported input into a :class:`Volume` (float32 (z, y, x), HU for CT).

    - DICOM: a folder (searched recursively), a file, or a list of files; ``series`` = UID or 0-based
      index when the input holds several series. With ``require_ct`` (default) a non-CT DICOM
      modality (MR, PT, ...) is refused; with ``require_ct=False`` it loads with ``is_hu=False``.
    - ``.nii``/``.nii.gz`` (values in HU, affine -> LPS geometry), ``.npy``/``.npz`` (HU).
    - headerless raw (``.raw`` or any file when ``raw_shape`` is given): HU = value + ``raw_offset``.
    - ``.png``/``.jpg``/``.tif``: photographs, ``is_hu=False`` (a grayscale 16-bit image is read as
      HU = value + ``raw_offset`` when ``raw_offset`` is non-zero).

    ``raw_spacing`` (z, y, x mm) sets the spacing of inputs that do not store it (raw, npy, images).
    Raises :class:`LdctError` for anything the user can fix (missing file, corrupt data, NaN...).
    Warnings that pydicom / nibabel raise while reading go to ``vol.meta["warnings"]`` (not stderr).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            vol = _read_volume(
                path,
                series=series,
                raw_shape=raw_shape,
                raw_dtype=raw_dtype,
                raw_offset=raw_offset,
                raw_spacing=raw_spacing,
                require_ct=require_ct,
            )
        except MemoryError:
            where = path if isinstance(path, (str, Path)) else next(iter(path), None)
            raise LdctError("not enough memory to read this scan", where) from None
    notes = list(
        dict.fromkeys(
            " ".join(str(w.message).split())[:200] for w in caught if issubclass(w.category, UserWarning)
        )
    )
    vol.meta.setdefault("warnings", []).extend(f"reader: {n}" for n in notes[:5])
    return vol


def _read_volume(
    path: PathLike | Sequence[PathLike],
    *,
    series: str | None,
    raw_shape: tuple[int, ...] | None,
    raw_dtype: str,
    raw_offset: float,
    raw_spacing: tuple[float, float, float] | None,
    require_ct: bool,
) -> Volume:
    if not isinstance(path, (str, Path)):
        paths = [Path(p) for p in path]
        if len(paths) != 1:  # several files: one DICOM series; a list of one is read as that path
            from ldct.io.dicom_read import read_dicom

            return _finish(read_dicom(paths, series=series, require_ct=require_ct), paths[0], raw_spacing=None)
        path = paths[0]
    p = Path(path)
    check_readable(p)  # also refuses named pipes and devices before anything opens them
    check_raw_options(p, raw_shape, raw_dtype, raw_spacing)  # option mistakes before reading
    kind = _kind(p, raw_shape)
    if p.is_dir():
        if kind != "dicom" and p.suffix:
            raise LdctError(f"is a directory, expected a {p.suffix} file", p)
        kind = "dicom"
    else:
        check_not_empty(p)
    if kind == "dicom":
        from ldct.io.dicom_read import read_dicom

        vol = read_dicom(p, series=series, require_ct=require_ct)
    elif kind == "nifti":
        vol = read_nifti(p)
    elif kind == "npy":
        vol = read_npy(p)
    elif kind == "npz":
        vol = read_npz(p)
    elif kind == "image":
        vol = read_image(p, hu_offset=raw_offset if raw_offset else None)
    else:
        if raw_shape is None:
            raise LdctError(
                "headerless raw file: give its shape (--raw-shape Z,Y,X or Y,X) and --raw-dtype", p
            )
        vol = read_raw(p, shape=raw_shape, dtype=raw_dtype, offset=raw_offset, spacing=raw_spacing)
    return _finish(vol, p, raw_spacing=raw_spacing if kind in ("npy", "image") else None)


def _finish(vol: Volume, where: Path, *, raw_spacing: tuple[float, float, float] | None) -> Volume:
    bad = int(np.size(vol.data) - np.count_nonzero(np.isfinite(vol.data)))
    if bad:
        n_nan = int(np.count_nonzero(np.isnan(vol.data)))
        raise LdctError(f"data contains {n_nan} NaN and {bad - n_nan} Inf values", where)
    if vol.data.size == 0:
        raise LdctError("image is empty", where)
    if raw_spacing is not None:
        from ldct.io.limits import check_spacing

        spacing = check_spacing(raw_spacing, 3, "--raw-spacing", where)
        vol.spacing = spacing  # type: ignore[assignment]
        vol.positions = np.asarray([[0.0, 0.0, k * spacing[0]] for k in range(vol.data.shape[0])])
        vol.meta["warnings"] = [w for w in vol.meta.get("warnings", []) if "spacing" not in w]
    if vol.is_hu and vol.meta.get("modality") in ("CT", None):
        check_hu_values(vol.data, where)  # impossible HU (a wrong header or dtype), or a mask given as HU
        lo = float(vol.data.min())
        if lo > -500 and vol.meta.get("source_format") in ("dicom", "nifti", "raw"):
            vol.meta["warnings"].append(
                f"lowest value is {lo:g}: no air (-1000 HU) in the image; are these really HU "
                "(missing RescaleIntercept or raw offset)?"
            )
    return vol


def list_series(path: PathLike | Sequence[PathLike]) -> list[SeriesInfo]:
    """The DICOM series in a folder / file / list (index, UID, modality, description, files)."""
    return scan_series(path if isinstance(path, (str, Path)) else list(path))


def write_volume(
    vol: Volume,
    path: PathLike,
    *,
    source: Volume | None = None,
    description: str = "",
    overwrite: bool = False,
    window: Window | str | None = None,
    slice_index: int | None = None,
    series_number: int | None = None,
    compress: bool | None = None,
) -> Path:
    """Write ``vol``; the format comes from the path.

    - a folder (no suffix, or an existing directory): DICOM CT series derived from ``source`` (or from
      ``vol.headers``), new Series/SOP Instance UIDs, ``description`` in SeriesDescription,
      ``series_number`` (None: the source's + 1000), lossless compression when the source was
      compressed or ``compress`` is True (see :func:`ldct.io.dicom_write.build_series`);
    - ``.nii``/``.nii.gz`` (affine from the geometry), ``.npy`` (float32 voxels), ``.npz`` (voxels +
      geometry), ``.tif`` (float32 stack);
    - ``.png``/``.jpg``: 8-bit preview of slice ``slice_index`` (default middle) through ``window``
      (preset name, "C,W" or :class:`Window`; default soft tissue).

    Writes are atomic; inputs are never overwritten (even with ``overwrite``).
    """
    from ldct.io.dicom_write import check_output, write_dicom_series

    p = Path(path)
    check_output(p, vol, source)
    if is_nifti(p):
        return write_nifti(vol, p, overwrite=overwrite, description=description)
    suf = p.suffix.lower()
    if suf == ".npy":
        return write_npy(vol, p, overwrite=overwrite)
    if suf == ".npz":
        return write_npz(vol, p, overwrite=overwrite)
    if suf in PREVIEW_SUFFIXES:
        from ldct.io.preview import write_preview

        return write_preview(vol, p, window=window, slice_index=slice_index, overwrite=overwrite)
    if suf in (".tif", ".tiff"):
        return write_tiff(vol, p, overwrite=overwrite)
    if suf in (".dcm", ".ima"):
        raise LdctError(
            "ldct writes a DICOM series as a folder of files: give a folder path without a suffix", p
        )
    if suf and not p.is_dir():
        raise LdctError(
            f"unknown output format {suf!r}: use a folder (DICOM), .nii.gz, .npy, .npz, .png or .tif", p
        )
    return write_dicom_series(vol, p, source=source, description=description, overwrite=overwrite,
                              series_number=series_number, compress=compress)
