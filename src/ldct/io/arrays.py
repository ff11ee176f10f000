"""Plain arrays <-> :class:`Volume`: .npy, .npz and headerless raw files.

- ``.npy``: one slice (y, x) or a volume (z, y, x) of HU (any real dtype; converted to float32).
- ``.npz``: written by ldct with arrays ``hu`` (z, y, x), ``spacing`` (3,), ``positions`` (z, 3) and
  ``orientation`` (6,); other .npz files must hold exactly one array (or one named ``hu``/``data``).
- raw: headerless voxels; the caller gives the shape, dtype and the offset added to get HU
  (Mayo challenge raw: uint16, HU = value - 1024, i.e. ``raw_offset=-1024``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ldct.atomic import atomic_file
from ldct.errors import LdctError
from ldct.volume import Volume

RAW_SUFFIXES = (".raw", ".bin", ".dat", ".img")


def _check_array(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise LdctError(f"{what} has dtype {arr.dtype}; expected real numbers (HU)", path)
    if arr.ndim not in (2, 3):
        raise LdctError(f"{what} has shape {arr.shape}; expected a slice (y, x) or a volume (z, y, x)", path)
    if 0 in arr.shape:
        raise LdctError(f"{what} is empty (shape {arr.shape})", path)
    return arr


def _array_volume(arr: np.ndarray, path: Path, fmt: str, **geometry) -> Volume:
    meta = {"source_format": fmt, "source_path": str(path), "modality": "CT", "patient_id": path.stem}
    if "spacing" not in geometry:
        meta["warnings"] = ["no geometry stored; spacing assumed 1 mm"]
    return Volume(data=arr.astype(np.float32), is_hu=True, meta=meta, **geometry)


def read_npy(path: str | Path) -> Volume:
    """(y, x) or (z, y, x) HU array in a .npy file -> Volume (spacing 1 mm unless known)."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode=None)
    except ValueError as exc:
        raise LdctError(f"cannot read .npy (object arrays are not allowed): {exc}", path) from None
    except Exception as exc:
        raise LdctError(
            f"not a valid .npy file (corrupt or truncated?): {' '.join(str(exc).split())[:160]}", path
        ) from None
    return _array_volume(_check_array(arr, path, "array"), path, "npy")


def read_npz(path: str | Path) -> Volume:
    """An ldct .npz (``hu`` + geometry) or a single-array .npz -> Volume."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise LdctError(f"not a valid .npz file: {' '.join(str(exc).split())[:160]}", path) from None
    key = next((k for k in ("hu", "data") if k in arrays), None)
    if key is None:
        if len(arrays) != 1:
            raise LdctError(f".npz holds arrays {sorted(arrays)}; expected one array or one named 'hu'", path)
        key = next(iter(arrays))
    arr = _check_array(arrays[key], path, f"array '{key}'")
    geometry = {}
    if "spacing" in arrays:
        geometry["spacing"] = tuple(float(v) for v in np.asarray(arrays["spacing"]).reshape(3))
    if "orientation" in arrays:
        geometry["orientation"] = tuple(float(v) for v in np.asarray(arrays["orientation"]).reshape(6))
    if "positions" in arrays:
        geometry["positions"] = np.asarray(arrays["positions"], dtype=np.float64).reshape(-1, 3)
        nz = 1 if arr.ndim == 2 else arr.shape[0]
        if len(geometry["positions"]) != nz:
            raise LdctError(f"'positions' has {len(geometry['positions'])} rows for {nz} slices", path)
    return _array_volume(arr, path, "npz", **geometry)


def read_raw(
    path: str | Path,
    *,
    shape: tuple[int, ...],
    dtype: str = "uint16",
    offset: float = 0.0,
    spacing: tuple[float, float, float] | None = None,
) -> Volume:
    """Headerless raw voxels -> Volume with HU = value + ``offset``.

    ``shape`` is (y, x) or (z, y, x); ``dtype`` a NumPy name ('uint16', 'int16', 'float32', '>u2'
    for big endian; little endian by default). The file size must match exactly.
    """
    path = Path(path)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise LdctError(f"unknown raw dtype {dtype!r} (use e.g. uint16, int16, float32)") from None
    if dt.kind not in "iuf":
        raise LdctError(f"raw dtype {dtype!r} is not a number type")
    if dt.byteorder == "=" and dt.itemsize > 1:
        dt = dt.newbyteorder("<")
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) <= 0:
        raise LdctError(f"raw shape {shape} must be (y, x) or (z, y, x) with positive sizes")
    expected = int(np.prod(shape)) * dt.itemsize
    size = path.stat().st_size
    if size != expected:
        hint = ""
        if size % (int(np.prod(shape[-2:])) * dt.itemsize) == 0:
            hint = (
                f"; the size fits {size // (int(np.prod(shape[-2:])) * dt.itemsize)} slices of {shape[-2:]}"
            )
        raise LdctError(
            f"raw file is {size} bytes but shape {shape} of {dt.name} needs {expected} bytes{hint}", path
        )
    arr = np.fromfile(path, dtype=dt).reshape(shape).astype(np.float64) + float(offset)
    geometry = {"spacing": tuple(float(s) for s in spacing)} if spacing is not None else {}
    vol = _array_volume(arr.astype(np.float32), path, "raw", **geometry)
    vol.meta["raw"] = {"shape": list(shape), "dtype": dt.str, "offset": float(offset)}
    if spacing is None:
        vol.meta["warnings"] = ["raw file: spacing unknown, assumed 1 mm (give --raw-spacing Z,Y,X)"]
    return vol


def write_npy(vol: Volume, path: str | Path, *, overwrite: bool = False) -> Path:
    """Voxels as float32 .npy: (y, x) for a single slice, else (z, y, x) (or (z, y, x, c))."""
    path = Path(path)
    data = vol.data[0] if vol.data.shape[0] == 1 else vol.data
    with atomic_file(path, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
        np.save(fh, data.astype(np.float32), allow_pickle=False)
    return path


def write_npz(vol: Volume, path: str | Path, *, overwrite: bool = False) -> Path:
    """Voxels plus geometry: ``hu`` (z, y, x) float32, ``spacing``, ``positions``, ``orientation``."""
    path = Path(path)
    with atomic_file(path, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            hu=vol.data.astype(np.float32),
            spacing=np.asarray(vol.spacing, dtype=np.float64),
            positions=np.asarray(vol.positions, dtype=np.float64),
            orientation=np.asarray(vol.orientation, dtype=np.float64),
        )
    return path
