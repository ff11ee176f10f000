"""Slices kept for the report's viewer: ``samples.npz`` in an evaluation folder.

``ldct evaluate`` keeps a few slices per dose (low dose, model output, normal dose, in HU) and writes
them here; ``ldct report`` reads them back as :class:`ViewerCase` objects. Layout (all arrays)::

    doses                  (D,) float64 dose fractions
    model                  () str, the model's name
    d<i>_ld, d<i>_out, d<i>_nd    (n_i, H, W) int16 HU (rounded) for dose i
    d<i>_labels            (n_i,) str, e.g. "L067 slice 12"

The low-dose panel of a super-resolution model is its bicubic upsampling (same grid as the output).
Slices of different sizes (patients scanned on different grids) are centred on the largest size of their
dose, the border filled with air (-1024 HU), so that one dose's slices stack.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ldct.atomic import atomic_file
from ldct.errors import LdctError
from ldct.report.data import ViewerCase

_KEYS = {"ld": "low_dose", "out": "output", "nd": "normal_dose"}


def _int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


#: HU of the border around slices smaller than the largest of their dose
PAD_HU = -1024


def _stack(images: list[np.ndarray]) -> np.ndarray:
    """(n, H, W) int16 of (h_i, w_i) HU images, each centred in the largest (H, W) on an air border."""
    arrs = [_int16(np.asarray(x)) for x in images]
    h, w = max(a.shape[0] for a in arrs), max(a.shape[1] for a in arrs)
    out = np.full((len(arrs), h, w), PAD_HU, dtype=np.int16)
    for k, a in enumerate(arrs):
        top, left = (h - a.shape[0]) // 2, (w - a.shape[1]) // 2
        out[k, top:top + a.shape[0], left:left + a.shape[1]] = a
    return out


def write_samples(samples: dict[float, list[dict[str, Any]]], path: str | Path, *, model: str = "model") -> Path:
    """Write ``{dose: [{"ld", "out", "nd": (H, W) HU, "patient_id", "slice_index"}, ...]}`` to ``path``.

    Within one sample the three images share a shape; samples may differ in size (padded, see above).
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"model": np.asarray(str(model))}
    doses = sorted(d for d, items in samples.items() if items)
    arrays["doses"] = np.asarray(doses, dtype=np.float64)
    for i, d in enumerate(doses):
        items = samples[d]
        for k in _KEYS:
            arrays[f"d{i}_{k}"] = _stack([s[k] for s in items])
        arrays[f"d{i}_labels"] = np.asarray([
            " ".join(str(v) for v in (s.get("patient_id"), "slice", s.get("slice_index")) if v is not None)
            if s.get("slice_index") is not None else str(s.get("patient_id") or "") for s in items
        ])
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


#: most values a samples file may hold in all (about 1000 slices of 512 x 512), checked before reading
MAX_SAMPLE_VALUES = 1 << 28


def _npz_sizes(path: Path) -> int:
    """Values held by the arrays of an ``.npz``, from their headers (nothing is decompressed beyond them)."""
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, _ = read(fh)
            total += int(np.prod(shape, dtype=np.float64))
    return total


def read_samples(path: str | Path) -> list[ViewerCase]:
    """Viewer cases (one per dose) from a ``samples.npz`` (LdctError if unreadable, corrupt or too large)."""
    path = Path(path)
    try:
        if _npz_sizes(path) > MAX_SAMPLE_VALUES:
            raise LdctError(f"samples file holds more than {MAX_SAMPLE_VALUES:,} values (not written by ldct)", path)
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise LdctError(f"unreadable samples file ({exc})", path) from None
    try:
        model = str(data.get("model", "model"))
        cases = []
        for i, d in enumerate(np.atleast_1d(data.get("doses", np.zeros(0)))):
            if f"d{i}_out" not in data:
                continue
            panels = {name: data[f"d{i}_{k}"].astype(np.float32) for k, name in _KEYS.items() if f"d{i}_{k}" in data}
            labels = [str(s) for s in np.atleast_1d(data.get(f"d{i}_labels", []))]
            cases.append(ViewerCase(f"dose {float(d):g}", panels, slice_labels=labels,
                                    titles={"low_dose": f"low dose ({float(d):g})", "output": model}))
    except (TypeError, ValueError) as exc:  # wrong dtypes or shapes: not what write_samples writes
        raise LdctError(f"corrupt samples file ({str(exc)[:200]})", path) from None
    return cases
