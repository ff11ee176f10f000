"""PNG / JPEG / TIFF images -> :class:`Volume`.

Photographs and screenshots are not CT: their values are intensities, so ``is_hu`` is False, and
colour images keep their channels, data shaped (z, y, x, c). A 16-bit (or signed / float) grayscale
image counts as CT in HU only when the caller says how to get HU from it (``hu_offset``:
HU = value + offset, e.g. -1024 for CT exported as unsigned 16-bit), or when it is a signed-integer
or float TIFF, which is how CT slices are exported as TIFF (ldct writes float32 HU TIFF stacks).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ldct.atomic import atomic_file
from ldct.errors import LdctError
from ldct.io.limits import check_expansion, check_shape
from ldct.volume import Volume

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def read_image(path: str | Path, *, hu_offset: float | None = None) -> Volume:
    """Read a PNG/JPEG/TIFF (multi-page TIFF = slices) -> Volume (z, y, x) or (z, y, x, c)."""
    path = Path(path)
    tiff = path.suffix.lower() in (".tif", ".tiff")
    arr, colour = _read_tiff(path) if tiff else _read_pillow(path)
    warnings: list[str] = []
    if not colour and arr.ndim == 2 or colour and arr.ndim == 3:
        arr = arr[None]
    if colour and arr.shape[-1] == 4:
        warnings.append("alpha channel dropped")
        arr = arr[..., :3]
    elif colour and arr.shape[-1] == 2:  # grey + alpha
        warnings.append("alpha channel dropped")
        arr, colour = arr[..., 0], False
    if arr.dtype.kind not in "biuf":
        raise LdctError(f"image has unsupported pixel type {arr.dtype}", path)
    grey = arr.ndim == 3
    ct_tiff = grey and tiff and arr.dtype.kind in "if"
    is_hu = grey and (hu_offset is not None or ct_tiff)
    data = arr.astype(np.float64) + (float(hu_offset) if (is_hu and hu_offset is not None) else 0.0)
    meta = {
        "source_format": path.suffix.lower().lstrip("."),
        "source_path": str(path),
        "modality": "CT" if is_hu else "photo",
        "patient_id": path.stem,
        "bit_depth": int(arr.dtype.itemsize * 8),
        "warnings": warnings + ([] if is_hu else ["photograph: values are intensities, not HU"]),
    }
    return Volume(data=data.astype(np.float32), is_hu=is_hu, meta=meta)


def _read_pillow(path: Path) -> tuple[np.ndarray, bool]:
    """(y, x) or (y, x, c) pixels and whether they are colour."""
    from PIL import Image, UnidentifiedImageError

    try:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # ldct's own, lower cap is checked below, before decoding
        try:
            opened = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
        with opened as im:
            w, h = im.size
            check_shape((h, w), path, what="image", photo=True)
            sample = 2 if im.mode.startswith("I;16") else 4 if im.mode in ("I", "F") else 1
            per_pixel = len(im.getbands()) * sample
            check_expansion(w * h * per_pixel, path.stat().st_size, path, f"image ({w} x {h})")
            im.load()
            mode = im.mode
            if mode == "1":
                im = im.convert("L")
            elif mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "A" in mode or "transparency" in im.info else "RGB")
            if im.mode.startswith("I;16"):
                return np.asarray(im, dtype=np.uint16), False
            arr = np.asarray(im)
            return arr, arr.ndim == 3
    except UnidentifiedImageError:
        raise LdctError("not a readable PNG/JPEG image", path) from None
    except OSError as exc:
        raise LdctError(f"cannot read image (corrupt or truncated?): {exc}", path) from None


@contextlib.contextmanager
def _tifffile_log_as_warnings() -> Iterator[None]:
    """tifffile logs what it finds odd to stderr; turn it into warnings (``vol.meta["warnings"]``)."""
    logger = logging.getLogger("tifffile")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved
        for r in records[:5]:
            warnings.warn(f"tifffile: {r.getMessage()}", UserWarning, stacklevel=3)


def _read_tiff(path: Path) -> tuple[np.ndarray, bool]:
    """(z, y, x) / (y, x) pages, or (..., c) colour, and whether they are colour."""
    import tifffile

    try:
        with _tifffile_log_as_warnings(), tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            axes = series.axes
            shape = tuple(int(v) for v in series.shape)
            if "Y" in axes and "X" in axes:  # sizes against caps and the file before decoding
                y, x = shape[axes.index("Y")], shape[axes.index("X")]
                check_shape((y, x), path, what="image", photo=True)
            nbytes = int(np.prod(shape, dtype=np.float64)) * np.dtype(series.dtype).itemsize
            check_expansion(nbytes, path.stat().st_size, path, f"TIFF ({' x '.join(map(str, shape))})")
            arr = np.asarray(series.asarray())
    except LdctError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise LdctError(
            f"cannot read TIFF (corrupt or truncated?): {' '.join(str(exc).split())[:160]}", path
        ) from None
    colour = axes.endswith("S")
    if arr.ndim not in (2, 3, 4) or (arr.ndim == 4 and not colour):
        raise LdctError(
            f"TIFF has shape {arr.shape} (axes {axes}); expected (y, x), (z, y, x) or colour", path
        )
    return arr, colour


def write_tiff(vol: Volume, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write voxels as a float32 TIFF stack (z, y, x) (HU for CT); colour photos as uint8 RGB."""
    import tifffile

    path = Path(path)
    data = vol.data
    if not vol.is_hu and vol.channels > 1:
        data = np.clip(np.round(data), 0, 255).astype(np.uint8)
    else:
        data = data.astype(np.float32)
    with atomic_file(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, data[0] if data.shape[0] == 1 else data)
    return path
