"""Checks every reader runs before it opens, allocates or trusts anything (docs/io.md, "Hostile input").

- :func:`check_regular_file`: a named pipe, socket or device is refused before it is opened (opening a
  named pipe blocks for ever); :func:`is_regular_file` lets a folder scan skip them.
- Sizes declared by a header (DICOM Rows/Columns/NumberOfFrames, .npy/.npz headers, NIfTI dims,
  PNG/TIFF sizes) are checked against the bytes the file really holds (:func:`check_stored`), against
  how far a compressed file may expand (:func:`check_expansion`) and against caps (:func:`check_shape`)
  **before** anything of that size is allocated.
- Geometry (:func:`check_spacing`, :func:`check_orientation`) must be finite and non-degenerate.
- Values (:func:`check_hu_values`): a CT in HU has values in ``HU_RANGE``; a mask (two values 0 and 1
  or 0 and 255) is not HU.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ldct.errors import LdctError

#: rows / columns of a CT slice (DICOM, NIfTI, npy, npz, raw)
MAX_SIDE = 4096
#: slices a compressed container may claim (compressed DICOM NumberOfFrames, .nii.gz, .npz, TIFF)
MAX_SLICES = 4000
#: voxels a compressed container may claim: 8 GiB as float32
MAX_VOXELS = 2 * 1024**3
#: width / height and pixels of a photograph or any PNG/JPEG/TIFF page
MAX_PHOTO_SIDE = 16384
MAX_PHOTO_PIXELS = 8192 * 8192
#: a compressed file may decode to at most this many times its size ...
MAX_EXPANSION = 100
#: ... once it decodes to more than this (small files may compress as well as they like)
EXPANSION_FREE_BYTES = 256 * 1024**2
#: files a folder scan may find (searched recursively, links followed)
MAX_SCAN_FILES = 200_000
#: never searched for DICOM files, even when a link in a scanned folder points there
PSEUDO_FILESYSTEMS = ("/proc/", "/sys/", "/dev/")
#: values of a CT in HU: air -1000, padding down to -32768 (signed 16 bit, any intercept), metal and
#: the extended CT scale up to about 31000; anything outside is a header that misdescribes the pixels
HU_RANGE = (-35000.0, 40000.0)

_SPECIAL = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def special_kind(path: str | Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a directory ('a named pipe (FIFO)'...)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((name for test, name in _SPECIAL if test(mode)), "not a regular file")


def is_regular_file(path: str | Path) -> bool:
    """True for a regular file (symbolic links followed); False for pipes, devices, broken links, loops."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def regular_file_size(path: str | Path) -> int | None:
    """Size of a regular file (symbolic links followed); None for anything else (never opened)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return int(st.st_size) if stat.S_ISREG(st.st_mode) else None


def check_regular_file(path: str | Path) -> None:
    """Refuse a named pipe, socket or device before anything opens it (a pipe would block for ever)."""
    kind = special_kind(path)
    if kind is not None:
        raise LdctError(f"is {kind}, not a regular file: give a scan file or folder", path)


def check_not_empty(path: Path) -> int:
    """The size of a regular file; an empty file is an error."""
    size = os.stat(path).st_size
    if size == 0:
        raise LdctError("file is empty (0 bytes)", path)
    return size


def _fmt_shape(shape: Sequence[int]) -> str:
    return " x ".join(str(int(s)) for s in shape)


def _gib(n: float) -> str:
    return f"{n / 1024**3:.3g} GiB" if n >= 1024**3 else f"{n / 1024**2:.3g} MiB"


def check_shape(
    shape: Sequence[int], path: str | Path, *, what: str = "image", photo: bool = False, claimed: bool = True
) -> tuple[int, ...]:
    """Validate a (slices, rows, columns) or (rows, columns) shape before allocating it.

    Sizes must be positive; rows/columns at most ``MAX_SIDE`` (``MAX_PHOTO_SIDE`` / ``MAX_PHOTO_PIXELS``
    per page for photographs). ``claimed`` shapes (those not backed byte-for-byte by the file, e.g. in a
    compressed file) are also capped at ``MAX_SLICES`` slices and ``MAX_VOXELS`` voxels.
    """
    dims = tuple(int(s) for s in shape)
    if not dims or min(dims) <= 0:
        raise LdctError(f"{what} has shape {_fmt_shape(dims)}: every size must be positive", path)
    y, x = dims[-2], dims[-1]
    side = MAX_PHOTO_SIDE if photo else MAX_SIDE
    if y > side or x > side or (photo and y * x > MAX_PHOTO_PIXELS):
        limit = f"{side} pixels a side" + (f", {MAX_PHOTO_PIXELS // 1024**2} megapixels" if photo else "")
        raise LdctError(f"{what} of {_fmt_shape(dims)} pixels is larger than ldct reads ({limit})", path)
    voxels = math.prod(dims)
    if claimed and len(dims) > 2 and (dims[0] > MAX_SLICES or voxels > MAX_VOXELS):
        raise LdctError(
            f"{what} declares {_fmt_shape(dims)} voxels ({_gib(voxels * 4)} as float32): more than the limit "
            f"of {MAX_SLICES} slices and {_gib(MAX_VOXELS * 4)} (header corrupt, or a decompression bomb)",
            path,
        )
    return dims


def check_stored(need: int, have: int, path: str | Path, what: str) -> None:
    """Uncompressed data: the ``need`` bytes a header declares must be in the file (``have`` bytes)."""
    if need > have:
        raise LdctError(
            f"truncated or corrupt: {what} declares {need} bytes but the file holds only {have}", path
        )


def check_expansion(decoded: int, stored: int, path: str | Path, what: str) -> None:
    """Compressed data: refuse to decode far more than the file could plausibly hold (a bomb)."""
    if decoded > EXPANSION_FREE_BYTES and decoded > MAX_EXPANSION * max(stored, 1):
        raise LdctError(
            f"{what} would expand {stored} bytes to {_gib(decoded)} ({decoded / max(stored, 1):.0f}x; "
            f"the limit is {MAX_EXPANSION}x above {_gib(EXPANSION_FREE_BYTES)}): a decompression bomb or a "
            "corrupt header",
            path,
        )


def check_spacing(values: Sequence[float], n: int, what: str, path: str | Path | None) -> tuple[float, ...]:
    """``n`` finite positive numbers (voxel spacing in mm), else :class:`LdctError` naming ``what``."""
    try:
        vals = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != n or not all(math.isfinite(v) and v > 0 for v in vals):
        shown = ", ".join(f"{v:g}" for v in vals) if vals else repr(values)
        raise LdctError(f"{what} ({shown}) must be {n} positive finite numbers (mm)", path)
    return vals


def check_orientation(values: Sequence[float], what: str, path: str | Path | None) -> tuple[float, ...]:
    """Row and column direction cosines (6,): finite, unit length, perpendicular (within 1 %)."""
    try:
        o = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        o = np.zeros(0)
    problem = None
    if o.shape != (6,):
        problem = f"has {o.size} values, expected 6"
    elif not np.all(np.isfinite(o)):
        problem = "is not finite"
    else:
        r, c = o[:3], o[3:]
        nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
        if abs(nr - 1) > 0.01 or abs(nc - 1) > 0.01:
            problem = f"rows/columns are not unit vectors (lengths {nr:.3g}, {nc:.3g})"
        elif abs(float(r @ c)) > 0.01:
            problem = "row and column directions are not perpendicular"
    if problem:
        shown = ", ".join(f"{v:g}" for v in o) if o.size else repr(values)
        raise LdctError(f"{what} ({shown}) {problem}: the slice plane is undefined", path)
    return tuple(float(v) for v in o)


def looks_like_mask(data: np.ndarray) -> bool:
    """Exactly two values, 0 and 1 (or 0 and 255): a segmentation / boolean mask, not HU."""
    if data.dtype == bool:
        return True
    if data.size < 2:
        return False
    lo, hi = float(np.min(data)), float(np.max(data))
    return lo == 0.0 and hi in (1.0, 255.0) and bool(np.all((data == 0) | (data == hi)))


def check_hu_values(data: np.ndarray, path: str | Path, hint: str = "") -> None:
    """A CT in HU: values within ``HU_RANGE`` and not a mask (call on finite data)."""
    if data.size == 0:
        return
    lo, hi = float(np.min(data)), float(np.max(data))
    if lo < HU_RANGE[0] or hi > HU_RANGE[1]:
        raise LdctError(
            f"values range from {lo:.6g} to {hi:.6g}, impossible for CT in HU (expected "
            f"{HU_RANGE[0]:g} .. {HU_RANGE[1]:g}){hint}",
            path,
        )
    if looks_like_mask(data):
        raise LdctError(
            f"looks like a mask, not HU: every value is 0 or {hi:g} (give the CT scan, not a segmentation)",
            path,
        )
