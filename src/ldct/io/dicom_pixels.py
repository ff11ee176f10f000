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


def check_decoder(ds: Dataset, path: Path) -> None:
    """Raise :class:`LdctError` naming the pip package when ``ds``'s pixel data cannot be decoded here."""
    ts = transfer_syntax(ds)
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
    if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise LdctError("DICOM file has no PixelData (not an image, or the file is truncated)", path)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
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
        raise LdctError(f"pixel data is truncated or corrupt: {text}", path) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    arr = np.asarray(arr)
    if frames == 1 or arr.ndim == 2:
        arr = arr.reshape((1,) + arr.shape[-2:])
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
