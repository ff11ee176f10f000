"""Models by name or path: what ``--model NAME|PATH`` resolves to (the files themselves are read by
:mod:`ldct.models.files`; :meth:`ldct.Denoiser.load` builds the model, :meth:`ldct.Denoiser.install` installs
one under a name).

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
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ldct.errors import LdctError
from ldct.hu import DEFAULT_NET_WINDOW, Window
from ldct.models.files import check_safetensors, refuse_pickle

DEFAULT_MODEL = "default"
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


# --- installing ---------------------------------------------------------------------------------------
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def install_target(name: str, *, bundled: bool = False) -> tuple[Path, Path]:
    """Where a model named ``name`` is installed: ``(weights, metadata)`` paths (user or bundled folder).
    The name must be letters, digits, '-', '_' and '.' (LdctError otherwise)."""
    if not name or set(name) - _NAME_OK or name.startswith("."):
        raise LdctError(f"model name {name!r}: use letters, digits, '-', '_' and '.'")
    if bundled:
        return bundled_dir() / f"{name}.safetensors", bundled_dir() / f"{name}.json"
    return user_dir() / name / "weights.safetensors", user_dir() / name / "meta.json"
