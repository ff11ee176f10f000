"""Plain arrays <-> :class:`Volume`: .npy, .npz and headerless raw files.

- ``.npy``: one slice (y, x) or a volume (z, y, x) of HU (any real dtype; converted to float32).
- ``.npz``: written by ldct with arrays ``hu`` (z, y, x), ``spacing`` (3,), ``positions`` (z, 3) and
  ``orientation`` (6,); other .npz files must hold exactly one array (or one named ``hu``/``data``).
- raw: headerless voxels; the caller gives the shape, dtype and the offset added to get HU
  (Mayo challenge raw: uint16, HU = value - 1024, i.e. ``raw_offset=-1024``).
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from ldct.atomic import atomic_file
from ldct.errors import LdctError
from ldct.io.limits import check_expansion, check_orientation, check_shape, check_spacing, check_stored
from ldct.volume import Volume

RAW_SUFFIXES = (".raw", ".bin", ".dat", ".img")


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


def _check_dtype(dtype: np.dtype, path: Path, what: str) -> None:
    if dtype.hasobject:
        raise LdctError(f"{what} holds Python objects (object arrays are not allowed: not HU)", path)
    if dtype == bool:
        raise LdctError(f"{what} looks like a mask, not HU: its dtype is bool (give the CT scan)", path)
    if dtype.kind not in "biuf":
        raise LdctError(f"{what} has dtype {dtype}; expected real numbers (HU)", path)


def _check_array(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    _check_dtype(arr.dtype, path, what)
    if arr.ndim not in (2, 3):
        raise LdctError(f"{what} has shape {arr.shape}; expected a slice (y, x) or a volume (z, y, x)", path)
    if 0 in arr.shape:
        raise LdctError(f"{what} is empty (shape {arr.shape})", path)
    return arr


def _npy_header(fh, path: Path, what: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) of the .npy stream ``fh`` at its start, without reading the data."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fh)
        else:
            shape, _, dtype = fmt._read_array_header(fh, version)
    except Exception as exc:
        raise LdctError(
            f"{what} is not a valid .npy array (corrupt or truncated?): {_short(exc)}", path
        ) from None
    return tuple(int(s) for s in shape), np.dtype(dtype), int(fh.tell())


def _check_declared(shape: tuple[int, ...], dtype: np.dtype, path: Path, what: str, *, claimed: bool) -> int:
    """dtype, dimensions and caps of an array header; returns its data size in bytes."""
    _check_dtype(dtype, path, what)
    if len(shape) not in (2, 3):
        raise LdctError(f"{what} has shape {shape}; expected a slice (y, x) or a volume (z, y, x)", path)
    if 0 in shape:
        raise LdctError(f"{what} is empty (shape {shape})", path)
    check_shape(shape, path, what=what, claimed=claimed)
    return math.prod(shape) * dtype.itemsize


def _array_volume(arr: np.ndarray, path: Path, fmt: str, **geometry) -> Volume:
    meta = {"source_format": fmt, "source_path": str(path), "modality": "CT", "patient_id": path.stem}
    if "spacing" not in geometry:
        meta["warnings"] = ["no geometry stored; spacing assumed 1 mm"]
    return Volume(data=arr.astype(np.float32), is_hu=True, meta=meta, **geometry)


def read_npy(path: str | Path) -> Volume:
    """(y, x) or (z, y, x) HU array in a .npy file -> Volume (spacing 1 mm unless known)."""
    path = Path(path)
    size = os.stat(path).st_size
    with open(path, "rb") as fh:  # the header first: shape and dtype against the file size and caps
        shape, dtype, header = _npy_header(fh, path, "file")
    _check_dtype(dtype, path, "array")
    need = header + math.prod(shape) * dtype.itemsize
    check_stored(need, size, path, f"the .npy header (shape {shape} of {dtype})")
    _check_declared(shape, dtype, path, "array", claimed=False)
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode=None)
    except ValueError as exc:
        raise LdctError(f"cannot read .npy (object arrays are not allowed): {exc}", path) from None
    except MemoryError:
        raise
    except Exception as exc:
        raise LdctError(f"not a valid .npy file (corrupt or truncated?): {_short(exc)}", path) from None
    return _array_volume(_check_array(arr, path, "array"), path, "npy")


#: number of values each geometry array of an ldct .npz holds (positions: 3 per slice)
_NPZ_GEOMETRY = {"spacing": 3, "orientation": 6, "positions": 3}


def _npz_entries(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{array name: (shape, dtype)} of an .npz from its entries' headers, checking what each entry
    declares against its stored size and the whole against how far the file may expand."""
    size = os.stat(path).st_size
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                with zf.open(info) as fh:
                    shape, dtype, header = _npy_header(fh, path, f"entry {info.filename}")
                _check_dtype(dtype, path, f"array '{info.filename}'")
                nbytes = math.prod(shape) * dtype.itemsize
                if info.file_size < header + nbytes:
                    raise LdctError(
                        f"entry {info.filename} is truncated or forged: its header declares shape {shape} of "
                        f"{dtype} ({nbytes} bytes) but it holds {max(info.file_size - header, 0)}",
                        path,
                    )
                total += header + nbytes
                name = info.filename.removesuffix(".npy")
                out[name] = (shape, dtype)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
        raise LdctError(f"not a valid .npz file: {_short(exc)}", path) from None
    check_expansion(total, size, path, f".npz ({len(out)} arrays)")
    return out


def read_npz(path: str | Path) -> Volume:
    """An ldct .npz (``hu`` + geometry) or a single-array .npz -> Volume."""
    path = Path(path)
    entries = _npz_entries(path)
    key = next((k for k in ("hu", "data") if k in entries), None)
    if key is None:
        if len(entries) != 1:
            raise LdctError(
                f".npz holds arrays {sorted(entries)}; expected one array or one named 'hu'", path
            )
        key = next(iter(entries))
    shape, dtype = entries[key]
    _check_declared(shape, dtype, path, f"array '{key}'", claimed=True)
    nz = 1 if len(shape) == 2 else shape[0]
    wanted = [key]
    for g, per in _NPZ_GEOMETRY.items():
        if g in entries:
            count, expect = math.prod(entries[g][0]), per * (nz if g == "positions" else 1)
            if count != expect:
                raise LdctError(f"array '{g}' has {count} values, expected {expect}", path)
            wanted.append(g)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in wanted}
    except MemoryError:
        raise
    except Exception as exc:
        raise LdctError(f"not a valid .npz file: {_short(exc)}", path) from None
    arr = _check_array(arrays[key], path, f"array '{key}'")
    geometry: dict = {}
    if "spacing" in arrays:
        geometry["spacing"] = check_spacing(arrays["spacing"].reshape(3), 3, "array 'spacing'", path)
    if "orientation" in arrays:
        geometry["orientation"] = check_orientation(
            arrays["orientation"].reshape(6), "array 'orientation'", path
        )
    if "positions" in arrays:
        geometry["positions"] = np.asarray(arrays["positions"], dtype=np.float64).reshape(-1, 3)
        if not np.all(np.isfinite(geometry["positions"])):
            raise LdctError("array 'positions' holds NaN or Inf (slice positions must be finite)", path)
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
    shape, dt = check_raw_options(path, shape, dtype, spacing)
    expected = math.prod(shape) * dt.itemsize
    size = path.stat().st_size
    if size != expected:
        hint = ""
        per_slice = math.prod(shape[-2:]) * dt.itemsize
        if size % per_slice == 0:
            hint = f"; the size fits {size // per_slice} slices of {shape[-2:]}"
        raise LdctError(
            f"raw file is {size} bytes but --raw-shape {shape} of {dt.name} needs {expected} bytes{hint}",
            path,
        )
    arr = np.fromfile(path, dtype=dt).reshape(shape).astype(np.float64) + float(offset)
    geometry = {"spacing": tuple(float(s) for s in spacing)} if spacing is not None else {}
    vol = _array_volume(arr.astype(np.float32), path, "raw", **geometry)
    vol.meta["raw"] = {"shape": list(shape), "dtype": dt.str, "offset": float(offset)}
    if spacing is None:
        vol.meta["warnings"] = ["raw file: spacing unknown, assumed 1 mm (give --raw-spacing Z,Y,X)"]
    return vol


def check_raw_options(
    path: Path, shape: tuple[int, ...] | None, dtype: str, spacing: tuple[float, ...] | None
) -> tuple[tuple[int, ...], np.dtype]:
    """Validate --raw-shape / --raw-dtype / --raw-spacing before the file is touched (Python integers:
    no overflow); returns (shape, little-endian dtype). ``shape`` may be None (not a raw input)."""
    if spacing is not None:
        check_spacing(spacing, 3, "--raw-spacing", path)
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError, SyntaxError):
        raise LdctError(f"unknown --raw-dtype {dtype!r} (use e.g. uint16, int16, float32)", path) from None
    if dt.kind not in "iuf" or dt.shape or dt.fields:
        raise LdctError(f"--raw-dtype {dtype!r} is not a number type (use e.g. uint16, int16, float32)", path)
    if dt.byteorder == "=" and dt.itemsize > 1:
        dt = dt.newbyteorder("<")
    if shape is None:
        return (), dt
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError, OverflowError):
        dims = ()
    if len(dims) not in (2, 3) or min(dims) <= 0:
        raise LdctError(f"--raw-shape {tuple(shape)} must be (y, x) or (z, y, x) with positive sizes", path)
    check_shape(dims, path, what="--raw-shape", claimed=False)
    return dims, dt


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
