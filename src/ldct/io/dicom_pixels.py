"""Decode DICOM pixel data (any transfer syntax pydicom's plugins handle) to stored values.

Compressed syntaxes decode through pydicom's pixel-data plugins (pylibjpeg + pylibjpeg-openjpeg for
JPEG 2000, pylibjpeg-libjpeg for JPEG / JPEG lossless / JPEG-LS, pydicom itself for RLE). When no
decoder is installed the error names the pip packages to install.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import uid as U
from pydicom.dataset import Dataset

from ldct.errors import LdctError
from ldct.io.limits import MAX_SIDE, MAX_SLICES, MAX_VOXELS, check_expansion

_J2K = "pylibjpeg pylibjpeg-openjpeg"
_LIBJPEG = "pylibjpeg pylibjpeg-libjpeg"
#: transfer syntax -> pip packages that provide a decoder
DECODER_PACKAGES: dict[str, str] = {
    U.JPEG2000Lossless: _J2K,
    U.JPEG2000: _J2K,
    U.HTJ2KLossless: _J2K,
    U.HTJ2KLosslessRPCL: _J2K,
    U.HTJ2K: _J2K,
    U.JPEGBaseline8Bit: _LIBJPEG,
    U.JPEGExtended12Bit: _LIBJPEG,
    U.JPEGLossless: _LIBJPEG,
    U.JPEGLosslessSV1: _LIBJPEG,
    U.JPEGLSLossless: _LIBJPEG,
    U.JPEGLSNearLossless: _LIBJPEG,
    U.RLELossless: "pylibjpeg pylibjpeg-rle",
}


def transfer_syntax(ds: Dataset) -> U.UID:
    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return U.UID(str(ts)) if ts else U.ImplicitVRLittleEndian


PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def check_transfer_syntax(ds: Dataset, path: Path) -> U.UID:
    """The file's transfer syntax; :class:`LdctError` when it is not one DICOM defines."""
    ts = transfer_syntax(ds)
    if not ts.is_transfer_syntax:
        raise LdctError(
            f"unknown transfer syntax {ts} (private or corrupt): cannot tell how the pixel data is encoded",
            path,
        )
    return ts


def int_tag(ds: Dataset, keyword: str, path: Path, default: int | None = None) -> int | None:
    """An integer tag (US, IS ...): ``default`` when absent or empty, :class:`LdctError` when not an integer."""
    v = ds.get(keyword)
    if v is None or v == "":
        return default
    try:
        f = float(v)
        if not f.is_integer():
            raise ValueError
        return int(f)
    except (TypeError, ValueError, OverflowError):
        raise LdctError(f"{keyword} {str(v)!r} is not an integer (corrupt header)", path) from None


def _stored_length(ds: Dataset, keyword: str) -> int | None:
    """Byte length of the (possibly deferred) pixel data element without reading it; None if undefined."""
    elem = ds.get_item(keyword, keep_deferred=True)
    length = getattr(elem, "length", None)
    if length is None:
        value = getattr(elem, "value", None)
        length = len(value) if isinstance(value, (bytes, bytearray)) else None
    if length is None or length == 0xFFFFFFFF or getattr(elem, "is_undefined_length", False):
        return None
    return int(length)


def check_layout(ds: Dataset, path: Path) -> int:
    """Check one file's pixel description against caps and its size **before** decoding; returns the
    number of frames.

    Rows, Columns, NumberOfFrames, BitsAllocated, BitsStored, PixelRepresentation must be integers in
    range; uncompressed pixel data must hold Rows x Columns x NumberOfFrames x BitsAllocated bits;
    compressed pixel data may not claim more than ``MAX_SLICES`` frames or expand beyond
    :func:`ldct.io.limits.check_expansion`.
    """
    ts = check_transfer_syntax(ds, path)
    rows, cols = int_tag(ds, "Rows", path), int_tag(ds, "Columns", path)
    if rows is None or cols is None:
        raise LdctError("no Rows / Columns in the header: the image size is unknown", path)
    if rows < 1 or cols < 1:
        raise LdctError(f"Rows x Columns {rows} x {cols}: the image is empty (corrupt header)", path)
    if rows > MAX_SIDE or cols > MAX_SIDE:
        raise LdctError(
            f"Rows x Columns {rows} x {cols} is larger than ldct reads ({MAX_SIDE} pixels a side)", path
        )
    frames = int_tag(ds, "NumberOfFrames", path, 1)
    assert frames is not None
    if frames < 1:
        raise LdctError(f"NumberOfFrames {frames} must be at least 1 (corrupt header)", path)
    bits = int_tag(ds, "BitsAllocated", path)
    if bits not in (1, 8, 16, 32, 64):
        raise LdctError(f"BitsAllocated {bits} is not 1, 8, 16, 32 or 64 (corrupt header)", path)
    stored = int_tag(ds, "BitsStored", path, bits)
    if stored is None or not 1 <= stored <= bits:
        raise LdctError(
            f"BitsStored {stored} must be between 1 and BitsAllocated {bits} (corrupt header)", path
        )
    pixrep = int_tag(ds, "PixelRepresentation", path, 0)
    if pixrep not in (0, 1):
        raise LdctError(f"PixelRepresentation {pixrep} must be 0 (unsigned) or 1 (signed)", path)
    spp = int_tag(ds, "SamplesPerPixel", path, 1)
    if spp is None or not 1 <= spp <= 4:
        raise LdctError(f"SamplesPerPixel {spp} must be 1 (grey) .. 4", path)
    layout = f"Rows {rows} x Columns {cols} x NumberOfFrames {frames} x BitsAllocated {bits}"
    need = (frames * rows * cols * spp * bits + 7) // 8
    keyword = next((t for t in PIXEL_TAGS if t in ds), None)
    if keyword is None:
        return frames
    if ts.is_compressed and keyword == "PixelData":
        if frames > MAX_SLICES or frames * rows * cols > MAX_VOXELS:
            raise LdctError(
                f"NumberOfFrames {frames} of {rows} x {cols} is more than ldct reads from one compressed file "
                f"({MAX_SLICES} frames)",
                path,
            )
        check_expansion(need, path.stat().st_size, path, f"compressed pixel data ({layout})")
        return frames
    have = _stored_length(ds, keyword)
    if have is None:
        have = path.stat().st_size
    if need > have:
        raise LdctError(
            f"pixel data is truncated or the header is wrong: {layout} need {need} bytes, the file holds {have}",
            path,
        )
    return frames


def check_decoder(ds: Dataset, path: Path) -> None:
    """Raise :class:`LdctError` naming the pip package when ``ds``'s pixel data cannot be decoded here."""
    ts = check_transfer_syntax(ds, path)
    if not ts.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise LdctError(f"pixel data in an unsupported transfer syntax: {ts.name} ({ts})", path) from None
    if not decoder.is_available:
        pkgs = DECODER_PACKAGES.get(ts, "pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg")
        raise LdctError(
            f"cannot decode {ts.name} pixel data: no decoder installed (pip install {pkgs})", path
        )


def stored_values(ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixel values (no rescale) as (frames, rows, cols); raises :class:`LdctError` if corrupt."""
    if not any(t in ds for t in PIXEL_TAGS):
        raise LdctError("DICOM file has no PixelData (not an image, or the file is truncated)", path)
    spp = int_tag(ds, "SamplesPerPixel", path, 1)
    if spp != 1:
        pi = ds.get("PhotometricInterpretation", "?")
        raise LdctError(f"colour DICOM image ({pi}, {spp} samples per pixel) is not a CT image", path)
    check_decoder(ds, path)
    try:
        arr = ds.pixel_array
    except LdctError:
        raise
    except Exception as exc:
        text = " ".join(str(exc).split())
        if len(text) > 200:
            text = text[:197] + "..."
        size = f"Rows {ds.get('Rows')} x Columns {ds.get('Columns')}"
        raise LdctError(f"pixel data is truncated or corrupt ({size}): {text}", path) from None
    frames = int_tag(ds, "NumberOfFrames", path, 1)
    arr = np.asarray(arr)
    if frames == 1 or arr.ndim == 2:
        arr = arr.reshape((1,) + arr.shape[-2:])
    want = (int_tag(ds, "Rows", path), int_tag(ds, "Columns", path))
    if arr.ndim != 3 or arr.shape[1:] != want:
        raise LdctError(
            f"decoded pixel data has shape {arr.shape} but Rows x Columns say {want[0]} x {want[1]} (corrupt header)",
            path,
        )
    return arr


def padding_mask(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    """Boolean mask of padding pixels (PixelPaddingValue [.. PixelPaddingRangeLimit]) or None."""
    if "PixelPaddingValue" not in ds:
        return None
    try:
        a = int(ds.PixelPaddingValue)
        b = int(ds.PixelPaddingRangeLimit) if "PixelPaddingRangeLimit" in ds else a
    except (TypeError, ValueError):
        return None
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:  # value read as unsigned (implicit VR 'US or SS')
        a, b = (v - 65536 if v > 32767 else v for v in (a, b))
    lo, hi = min(a, b), max(a, b)
    mask = (stored >= lo) & (stored <= hi)
    return mask if mask.any() else None
