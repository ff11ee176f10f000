"""PNG/JPEG previews of one slice through a display window.

CT slices are mapped through an HU window (``ldct.hu.DISPLAY_WINDOWS`` presets or centre/width) to
8-bit grey. Slices are shown the usual radiological way (patient's left on the image right,
anterior at the top for axial slices): when the Volume's rows or columns run the other way (e.g. a
NIfTI stored in RAS order) the preview is flipped, never the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ldct.atomic import atomic_file
from ldct.errors import LdctError
from ldct.hu import DISPLAY_WINDOWS, Window, parse_window, to_display
from ldct.volume import Volume

DEFAULT_WINDOW = "soft"


def display_slice(vol: Volume, k: int | None = None) -> np.ndarray:
    """Slice ``k`` (default: middle) oriented for display: (y, x) or (y, x, c), a view of the data."""
    nz = vol.data.shape[0]
    k = nz // 2 if k is None else int(k)
    if k < 0:
        k += nz
    if not 0 <= k < nz:
        raise LdctError(f"slice {k} out of range: the volume has {nz} slices (0..{nz - 1})")
    img = vol.data[k]
    o = np.asarray(vol.orientation, dtype=np.float64)
    row, col = o[:3], o[3:]
    # flip so that columns advance toward the dominant axis' positive direction (L or P or S->I for col)
    if row[np.argmax(np.abs(row))] < 0:
        img = img[:, ::-1]
    ci = int(np.argmax(np.abs(col)))
    want_positive = ci != 2  # down the image: posterior (+y) or, for coronal/sagittal, inferior (-z)
    if (col[ci] < 0) == want_positive:
        img = img[::-1, :]
    return img


def _as_window(window: Window | str | None, vol: Volume, img: np.ndarray) -> Window:
    if isinstance(window, Window):
        return window
    if window is not None:
        return parse_window(window)
    if vol.is_hu:
        return DISPLAY_WINDOWS[DEFAULT_WINDOW]
    lo, hi = float(np.min(img)), float(np.max(img))
    if img.dtype.kind == "f" and hi <= 255 and lo >= 0 and vol.meta.get("bit_depth", 8) == 8:
        lo, hi = 0.0, 255.0
    return Window(lo, hi if hi > lo else lo + 1.0, "full range")


def render(vol: Volume, *, window: Window | str | None = None, slice_index: int | None = None) -> np.ndarray:
    """uint8 image (y, x) or (y, x, 3) of one slice through ``window`` (default soft tissue for CT)."""
    img = display_slice(vol, slice_index)
    win = _as_window(window, vol, img)
    return to_display(img, win)


def write_preview(
    vol: Volume,
    path: str | Path,
    *,
    window: Window | str | None = None,
    slice_index: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one slice as an 8-bit PNG (or JPEG by extension) through a display window."""
    from PIL import Image

    path = Path(path)
    img = np.ascontiguousarray(render(vol, window=window, slice_index=slice_index))
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_file(path, overwrite=overwrite) as tmp:
        Image.fromarray(img).save(tmp, format=fmt)
    return path
