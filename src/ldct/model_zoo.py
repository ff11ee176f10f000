"""Models by name or path: what ``--model NAME|PATH`` resolves to.

Where models live:

- **bundled** models ship inside the package: ``ldct/weights/<name>.safetensors`` + ``<name>.json``
  (metadata: method, network and kwargs, HU window, training data, doses). The default is ``default``.
- **user** models live in ``$LDCT_MODEL_DIR`` (default ``~/.ldct/models``), either as a model folder
  ``<name>/`` (``weights.safetensors`` + ``meta.json``, what ``ldct export`` / training checkpoints write)
  or as a ``<name>.safetensors`` + ``<name>.json`` pair.
- any **path**: a training run folder, a checkpoint folder, a model folder or a ``.safetensors`` file.

Only safetensors weights are accepted. A pickle (``.pt``, ``.pth``, ``.ckpt``, ``.pkl``, or any file that
starts like one) is refused without being opened by an unpickler: unpickling can run arbitrary code.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from ldct.errors import LdctError
from ldct.hu import DEFAULT_NET_WINDOW, Window

DEFAULT_MODEL = "default"
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar", ".joblib"}
_NO_BUNDLED = (
    "no bundled model named 'default' is installed in this build of ldct; pass --model with a training run "
    "folder, a checkpoint or a .safetensors model (see `ldct models`)"
)


def bundled_dir() -> Path:
    """Folder of the models shipped inside the package (``ldct/weights``)."""
    return Path(str(resources.files("ldct"))) / "weights"


def user_dir() -> Path:
    """Folder of the user's models: ``$LDCT_MODEL_DIR`` or ``~/.ldct/models``."""
    env = os.environ.get("LDCT_MODEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".ldct" / "models"


# --- file checks ------------------------------------------------------------------------------
def refuse_pickle(path: Path) -> None:
    """Raise :class:`LdctError` when ``path`` is (or looks like) a pickle / PyTorch archive. Never unpickles."""
    head = b""
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
    is_pickle = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    is_zip = head[:4] == b"PK\x03\x04"
    if path.suffix.lower() in PICKLE_SUFFIXES or is_pickle or is_zip:
        raise LdctError(
            "is a pickle/PyTorch archive; ldct never unpickles model files (that can run arbitrary code). "
            "Use a .safetensors model with its .json metadata (ldct writes these when training)",
            path,
        )


#: bytes per element of the safetensors dtypes
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_header(header: Any, data_bytes: int) -> None:
    """Every entry of a parsed safetensors header is well formed and lies inside the data (else ValueError)."""
    if not isinstance(header, dict):
        raise TypeError("header is not a JSON object")
    for name, entry in header.items():
        if name == "__metadata__":
            if not (isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())):
                raise ValueError("__metadata__ must map names to strings")
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in DTYPE_BYTES:
            raise ValueError(f"tensor {name[:80]!r} has no known dtype")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and len(shape) <= 8 and all(_is_count(d) for d in shape)):
            raise ValueError(f"tensor {name[:80]!r} has a bad shape {str(shape)[:80]}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
                and offsets[0] <= offsets[1] <= data_bytes):
            raise ValueError(f"tensor {name[:80]!r} has byte offsets {str(offsets)[:80]} outside the file")
        if math.prod(shape) * DTYPE_BYTES[entry["dtype"]] != offsets[1] - offsets[0]:
            raise ValueError(f"tensor {name[:80]!r} of shape {shape} does not fit its {offsets[1] - offsets[0]} bytes")


def check_safetensors(path: Path) -> dict[str, Any]:
    """Validate a safetensors file's header without loading tensors; returns the header (LdctError if bad).

    The header must be a JSON object whose tensors have a known dtype, a shape and byte offsets inside the
    file that agree with each other, and whose ``__metadata__`` maps names to strings."""
    refuse_pickle(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("file too short")
            (n,) = struct.unpack("<Q", raw)
            if n < 2 or 8 + n > size or n > MAX_HEADER_BYTES:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
        _check_header(header, size - 8 - n)
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        raise LdctError(f"not a valid safetensors model file ({exc})", path) from None
    return header


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LdctError(f"unreadable model metadata ({exc})", path) from None
    if not isinstance(data, dict):
        raise LdctError("model metadata is not a JSON object", path)
    return data


# --- what a model is ------------------------------------------------------------------------------
@dataclass
class ModelInfo:
    """A model found on disk (metadata only, weights not loaded)."""

    name: str
    where: str  # "bundled" | "user" | "path"
    weights: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size_mb(self) -> float:
        return self.weights.stat().st_size / 1e6 if self.weights.is_file() else 0.0

    @property
    def method(self) -> str:
        return str(_find(self.meta, "method") or "?")

    @property
    def network(self) -> str:
        return str(_find(self.meta, "network") or "?")

    @property
    def trained_on(self) -> str:
        v = _find(self.meta, "trained_on") or _find(self.meta, "data_summary") or _find(self.meta, "data")
        if isinstance(v, dict):
            split = v.get("split") if isinstance(v.get("split"), dict) else {}
            if split.get("train") and v.get("kind") == "photos":
                v = f"{len(split['train'])} photographs (photos)"
            elif split.get("train"):  # a data summary: say which patients and how many slices
                n = (v.get("slices") or {}).get("train") if isinstance(v.get("slices"), dict) else None
                v = f"{len(split['train'])} patients" + (f", {n} slices" if n else "") + f" ({v.get('kind', '?')})"
            else:
                v = v.get("description") or v.get("source") or v.get("path") or v.get("kind")
        return str(v) if v else "?"

    @property
    def doses(self) -> str:
        if data_kind_of(self.meta) == "photos":
            return "- (photos)"
        v = _find(self.meta, "doses")
        if isinstance(v, (list, tuple)) and v:
            return ", ".join(f"{d:g}" if isinstance(d, (int, float)) else str(d) for d in v)
        return str(v) if v else "?"


def _find(meta: dict[str, Any], key: str, depth: int = 0) -> Any:
    """First value for ``key`` in a nested metadata dict (breadth-first, 3 levels)."""
    if key in meta and meta[key] not in (None, ""):
        v = meta[key]
        return v.get("name") or v.get("type") if isinstance(v, dict) and key in ("network", "method") else v
    if depth < 3:
        for v in meta.values():
            if isinstance(v, dict):
                found = _find(v, key, depth + 1)
                if found not in (None, ""):
                    return found
    return None


def data_kind_of(meta: dict[str, Any]) -> str:
    """What a model was trained on: ``"photos"`` (``data.kind: photos``: PNG/JPG intensities) or ``"ct"`` (HU).

    Reads ``data_kind`` (written since photographs were supported), else the recipe's or the data summary's
    ``kind``; models without either (older ones, the bundled default) are CT models."""
    kind = meta.get("data_kind")
    if kind in ("photos", "ct"):
        return str(kind)
    for section in ((meta.get("recipe") or {}).get("data"), meta.get("data_summary")):
        if isinstance(section, dict) and section.get("kind") == "photos":
            return "photos"
    return "ct"


def hu_window_of(meta: dict[str, Any], path: str | Path | None = None) -> Window:
    """The network's HU window from model metadata (``hu_window: [lo, hi]``), default [-1000, 1000]."""
    v = _find(meta, "hu_window")
    if v is None:
        return DEFAULT_NET_WINDOW
    try:
        if isinstance(v, dict):
            lo, hi = float(v["lo"]), float(v["hi"])
        elif isinstance(v, (list, tuple)):
            lo, hi = (float(t) for t in v)
        else:
            raise TypeError(v)
    except (TypeError, ValueError, KeyError):
        raise LdctError(f"model metadata has a bad hu_window {str(v)[:80]}", path) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise LdctError(f"model metadata has an empty or infinite hu_window {v!r}", path)
    return Window(lo, hi, "net")


def _pair(weights: Path) -> Path | None:
    """Metadata beside a weights file: ``<stem>.json`` or ``meta.json``."""
    for cand in (weights.with_suffix(".json"), weights.parent / "meta.json"):
        if cand.is_file():
            return cand
    return None


def _info_for_file(weights: Path, name: str, where: str) -> ModelInfo:
    meta_path = _pair(weights)
    meta = _read_json(meta_path) if meta_path else {}
    return ModelInfo(name=name, where=where, weights=weights, meta=meta)


def list_models() -> list[ModelInfo]:
    """Bundled and user models (name order within each group); unreadable entries are skipped."""
    found: list[ModelInfo] = []
    for where, folder in (("bundled", bundled_dir()), ("user", user_dir())):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            try:
                if p.is_file() and p.suffix == ".safetensors":
                    found.append(_info_for_file(p, p.stem, where))
                elif p.is_dir() and (p / "weights.safetensors").is_file():
                    found.append(_info_for_file(p / "weights.safetensors", p.name, where))
            except LdctError:
                continue
    return found


def find_model(spec: str | None) -> ModelInfo | Path:
    """``--model`` value -> a named model (:class:`ModelInfo`) or a path to hand to the checkpoint loader."""
    spec = DEFAULT_MODEL if spec in (None, "") else str(spec)
    p = Path(spec).expanduser()
    if not p.exists() and os.sep not in spec:
        for info in list_models():  # a name (names may contain dots: "nafnet-v1.2")
            if info.name == spec:
                return info
    if p.exists() or os.sep in spec or p.suffix != "":
        if not p.exists():
            raise LdctError("model not found (no such file or folder)", p)
        if p.is_file():
            refuse_pickle(p)
            if p.suffix == ".json":
                raise LdctError("this is model metadata; pass the .safetensors file or its folder", p)
            if p.suffix != ".safetensors":
                raise LdctError(
                    "not an ldct model: expected a .safetensors file (with its .json metadata), "
                    "a model/checkpoint folder or a training run folder", p,
                )
            check_safetensors(p)
        return p
    if spec == DEFAULT_MODEL:
        raise LdctError(_NO_BUNDLED)
    known = ", ".join(sorted({m.name for m in list_models()})) or "none installed"
    raise LdctError(f"unknown model {spec!r} (known: {known}); or pass a path to a model, checkpoint or run folder")


# --- loading ------------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A model ready for :func:`ldct.infer.predict_volume`."""

    name: str
    source: Path
    module: nn.Module  # forward(x, dose=None): (B, 1, H, W) -> (B, 1, H*scale, W*scale), network range
    window: Window
    dose_conditioned: bool
    scale: int
    meta: dict[str, Any]
    channels: int = 1  # input channels: 1, or an odd number of neighbouring slices (2.5D)

    @property
    def method(self) -> str:
        return str(_find(self.meta, "method") or "?")

    @property
    def network(self) -> str:
        return str(_find(self.meta, "network") or "?")

    @property
    def data_kind(self) -> str:
        """``"photos"`` for a model trained on photographs (``data.kind: photos``), else ``"ct"``."""
        return data_kind_of(self.meta)

    @property
    def full_scale(self) -> float:
        """The intensity full scale of a photo model's training images (255 for 8-bit)."""
        return float(self.meta.get("full_scale") or (self.meta.get("data_summary") or {}).get("full_scale") or 255.0)

    def describe(self) -> str:
        return f"{self.name} ({self.method}/{self.network})"


def load_model(spec: str | None = None) -> LoadedModel:
    """Resolve ``--model`` and load it on the CPU (safetensors only; see module docstring)."""
    found = find_model(spec)
    if isinstance(found, ModelInfo):
        path, name = found.weights, found.name
    else:
        path = found
        name = path.stem if path.is_file() else path.name
    if path.is_dir():
        _refuse_pickles_in(path)
    from ldct.engine.checkpoint import load_checkpoint, meta_path, resolve_checkpoint

    method, meta = load_checkpoint(path)
    return LoadedModel(
        name=name,
        source=path,
        module=method.inference_module().eval(),
        window=hu_window_of(meta, meta_path(resolve_checkpoint(path))),
        dose_conditioned=bool(getattr(method, "dose_conditioned", False)),
        scale=int(getattr(method, "scale", 1) or 1),
        meta=meta,
        channels=int(meta.get("channels", 1) or 1),
    )


def _refuse_pickles_in(folder: Path) -> None:
    """A model folder must hold safetensors weights; a folder with only pickles is refused by name."""
    if any(folder.glob("*.safetensors")) or any(folder.glob("*/*.safetensors")) or (folder / "checkpoints").is_dir():
        return
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() not in (".json", ".yaml", ".txt", ".md", ".npy", ".npz"):
            refuse_pickle(p)  # raises for a pickle/zip by name or content
    raise LdctError("no .safetensors weights in this folder (not an ldct model, checkpoint or run folder)", folder)


# --- installing ---------------------------------------------------------------------------------------
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def install_model(source: str | Path, name: str, *, bundled: bool = False, overwrite: bool = False) -> Path:
    """Export a run folder / checkpoint / model (inference network + metadata) under ``name``.

    User models go to ``user_dir()/<name>/`` (``weights.safetensors`` + ``meta.json``); with ``bundled``
    the pair ``ldct/weights/<name>.safetensors`` + ``<name>.json`` is written into the package (how the
    default model is made: ``install_model(RUN, "default", bundled=True)``). Returns the weights path.
    """
    import shutil
    import tempfile

    from ldct.atomic import atomic_file
    from ldct.engine.checkpoint import export_model

    if not name or set(name) - _NAME_OK or name.startswith("."):
        raise LdctError(f"model name {name!r}: use letters, digits, '-', '_' and '.'")
    src = Path(source)
    if src.is_file():
        refuse_pickle(src)
    if not bundled:
        out = user_dir() / name
        out.parent.mkdir(parents=True, exist_ok=True)
        export_model(src, out, overwrite=overwrite)
        return out / "weights.safetensors"
    dest = bundled_dir()
    dest.mkdir(parents=True, exist_ok=True)
    weights, meta = dest / f"{name}.safetensors", dest / f"{name}.json"
    if not overwrite and (weights.exists() or meta.exists()):
        raise LdctError("bundled model already exists (pass overwrite=True to replace it)", weights)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        export_model(src, Path(tmp) / "m")
        with atomic_file(weights) as t1, atomic_file(meta) as t2:
            shutil.copyfile(Path(tmp) / "m" / "weights.safetensors", t1)
            shutil.copyfile(Path(tmp) / "m" / "meta.json", t2)
    return weights
