"""The model file format, owned here and nowhere else: safetensors weights + JSON metadata.

Layouts it reads::

    MODEL/weights.safetensors + MODEL/meta.json         an exported model (kind "ldct-model")
    NAME.safetensors + NAME.json                         a bundled or user model
    RUN/checkpoints/step_XXXXXXX/weights.safetensors     a training checkpoint (kind "ldct-checkpoint": every
                               + meta.json                network of the method, '<net>.<param>')
    RUN/checkpoints/best | last                          text pointers naming one step folder
    *.safetensors alone                                  the metadata travels in its header (``ldct_meta``)

Loading trusts nothing: a pickle (by suffix or by its first bytes) is refused without being opened by an
unpickler; the safetensors header must be well formed (known dtypes, shapes and byte ranges that fit the
file); the metadata must be a JSON object with values of the expected types (:func:`check_meta`); the
network it names is built on PyTorch's meta device (no memory) within the size caps of
:mod:`ldct.models.specs` and must have exactly the file's tensor shapes (:func:`check_fits`); every weight
must be finite; a pointer must name a folder inside ``checkpoints/``. All of it before a real network is
built, and any failure is one :class:`LdctError` naming the file.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ldct.errors import LdctError

CKPT_KIND = "ldct-checkpoint"
MODEL_KIND = "ldct-model"
FORMAT = 1
META_KEY = "ldct_meta"
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar", ".joblib"}
#: bytes per element of the safetensors dtypes
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


# --- pickles ------------------------------------------------------------------------------------------
def looks_like_pickle(path: Path) -> bool:
    """A pickle stream or a zip archive (PyTorch's ``torch.save`` format) by its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head[:4] == b"PK\x03\x04"


def refuse_pickle(path: Path) -> None:
    """Raise :class:`LdctError` when ``path`` is (or looks like) a pickle / PyTorch archive. Never unpickles."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES or (path.is_file() and looks_like_pickle(path)):
        raise LdctError(
            "is a pickle/PyTorch archive; ldct never unpickles model files (that can run arbitrary code). "
            "Use a .safetensors model with its .json metadata (ldct writes these when training)", path)


# --- the safetensors header ------------------------------------------------------------------------------
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
    """Validate a safetensors file's header without loading tensors; returns the header (LdctError if bad)."""
    path = Path(path)
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


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from a checked header (nothing loaded)."""
    return {k: tuple(v["shape"]) for k, v in check_safetensors(path).items() if k != "__metadata__"}


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checked safetensors file (CPU); NaN or infinite weights are refused."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_safetensors(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise LdctError(f"not a valid safetensors file ({exc})", path) from None
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise LdctError(f"weights contain NaN or infinite values ({len(broken)} tensors, e.g. {broken[0]}): the "
                        "model is broken (a diverged training?) and would produce garbage", path)
    return tensors


def save_weights(path: Path, weights: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """A safetensors file whose header also carries the JSON metadata (a lone weights file describes itself).

    Serialised in memory and written by Python, so a full disk is an ``OSError`` (ENOSPC/EFBIG) that the
    atomic writers turn into one line, not a library-specific exception."""
    from safetensors.torch import save as save_bytes

    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    Path(path).write_bytes(save_bytes(tensors, metadata={"format": "pt", META_KEY: json.dumps(meta)}))


# --- run folders -------------------------------------------------------------------------------------------
def pointer_target(ckpt_root: Path, name: str) -> Path | None:
    """The folder a ``last``/``best`` pointer file names (None when there is no pointer).

    A pointer holds the name of one folder directly inside ``ckpt_root``; anything else (a path with
    separators, ``..``, an absolute path, binary bytes, a long text) is refused with :class:`LdctError`,
    so a pointer can never lead out of the run folder.
    """
    p = Path(ckpt_root) / name
    if not p.is_file():
        return None
    try:
        with open(p, "rb") as f:
            raw = f.read(1025)
        text = raw.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise LdctError(f"unreadable checkpoint pointer ({exc})", p) from None
    if len(raw) > 1024 or text in ("", ".", "..") or any(c in text for c in "/\\\0") or Path(text).name != text:
        raise LdctError(f"checkpoint pointer must name a checkpoint folder inside {Path(ckpt_root).name}/, "
                        f"got {text[:80]!r}", p)
    return Path(ckpt_root) / text


def read_pointer(ckpt_root: Path, name: str) -> Path | None:
    """The checkpoint folder ``ckpt_root/name`` points at, when it holds weights (see :func:`pointer_target`)."""
    target = pointer_target(ckpt_root, name)
    return target if target is not None and (target / "weights.safetensors").is_file() else None


def resolve_weights(path: str | Path, prefer: str = "best") -> Path:
    """Run folder | checkpoint folder | model folder | weights file -> the ``weights.safetensors`` to load.

    For a run folder, ``prefer`` ("best" or "last") picks the checkpoint; the other is the fallback, then
    the newest step folder.
    """
    p = Path(path)
    if not p.exists():
        raise LdctError("checkpoint not found (no such file or folder)", p)
    if p.is_file():
        refuse_pickle(p)
        if p.name in ("best", "last") and p.parent.name == "checkpoints":  # RUN/checkpoints/best|last pointers
            target = read_pointer(p.parent, p.name)
            if target is not None:
                return target / "weights.safetensors"
            raise LdctError("checkpoint pointer names no existing checkpoint", p)
        if p.suffix.lower() != ".safetensors":
            raise LdctError("not an ldct model: expected a run folder, a checkpoint folder or a .safetensors file", p)
        return p
    if (p / "weights.safetensors").is_file():
        return p / "weights.safetensors"
    ckpt_root = p / "checkpoints"
    if ckpt_root.is_dir():
        order = ("best", "last") if prefer == "best" else ("last", "best")
        for name in order:
            target = read_pointer(ckpt_root, name)
            if target is not None:
                return target / "weights.safetensors"
        steps = sorted(q for q in ckpt_root.glob("step_*") if (q / "weights.safetensors").is_file())
        if steps:
            return steps[-1] / "weights.safetensors"
        raise LdctError("run folder has no checkpoint yet", p)
    if not any(p.glob("*.safetensors")):
        for q in sorted(p.iterdir()):  # a folder of pickles is refused by name
            if q.is_file() and q.suffix.lower() not in (".json", ".yaml", ".txt", ".md", ".npy", ".npz"):
                refuse_pickle(q)
        raise LdctError("no .safetensors weights in this folder (not an ldct model, checkpoint or run folder)", p)
    raise LdctError("not an ldct model: no weights.safetensors and no checkpoints/ folder here", p)


# --- metadata ----------------------------------------------------------------------------------------------
def meta_path(weights_path: Path) -> Path:
    """The file a weights file's metadata comes from: ``meta.json`` / ``<stem>.json`` beside it, else itself."""
    for cand in (weights_path.parent / "meta.json", weights_path.with_suffix(".json")):
        if cand.is_file() and cand != weights_path:
            return cand
    return weights_path


def read_meta(weights_path: Path) -> dict[str, Any]:
    """Metadata of a weights file: ``meta.json``/``<stem>.json`` beside it, else the safetensors header."""
    source = meta_path(weights_path)
    if source != weights_path:
        try:
            meta = json.loads(source.read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise LdctError(f"unreadable model metadata ({exc})", source) from None
    else:
        header = check_safetensors(weights_path).get("__metadata__") or {}
        if META_KEY not in header:
            raise LdctError("not an ldct model: the safetensors file has no ldct metadata and no meta.json",
                            weights_path)
        try:
            meta = json.loads(header[META_KEY])
        except (ValueError, RecursionError) as exc:
            raise LdctError(f"the ldct metadata in the safetensors header is not JSON ({exc})", weights_path) from None
    if not isinstance(meta, dict):
        raise LdctError("model metadata is not a JSON object", source)
    if meta.get("kind") not in (CKPT_KIND, MODEL_KIND):
        raise LdctError("not an ldct model: metadata lacks kind 'ldct-checkpoint' or 'ldct-model'", source)
    check_meta(meta, source)
    return meta


def check_meta(meta: Mapping[str, Any], where: Path) -> None:
    """Types of the metadata values that loading uses (LdctError naming ``where`` for a wrong one)."""
    def bad(key: str, want: str) -> LdctError:
        return LdctError(f"model metadata: {key} must be {want}, got {meta[key]!r}"[:300], where)

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for key in ("method", "inference_net"):
        if key in meta and not isinstance(meta[key], str):
            raise bad(key, "a name")
    for key in ("network", "recipe", "metrics", "data_summary"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise bad(key, "an object")
    nets = meta.get("networks")
    if nets is not None and not (isinstance(nets, dict) and all(v is None or isinstance(v, dict) for v in nets.values())):
        raise bad("networks", "an object of network specs")
    if "dose_conditioned" in meta and not isinstance(meta["dose_conditioned"], bool):
        raise bad("dose_conditioned", "true or false")
    if "scale" in meta and not (is_int(meta["scale"]) and 1 <= meta["scale"] <= 16):
        raise bad("scale", "a whole number in [1, 16]")
    if meta.get("channels") is not None and not (is_int(meta["channels"]) and 1 <= meta["channels"] <= 15
                                                 and meta["channels"] % 2):
        raise bad("channels", "1 or an odd number of slices up to 15")
    if "step" in meta and not is_int(meta["step"]):
        raise bad("step", "a whole number")
    def positive(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

    if meta.get("full_scale") is not None and not positive(meta["full_scale"]):
        raise bad("full_scale", "a positive number")
    fs = (meta.get("data_summary") or {}).get("full_scale")
    if fs is not None and not positive(fs):
        raise LdctError(f"model metadata: data_summary.full_scale must be a positive number, got {fs!r}"[:300], where)
    w = meta.get("hu_window")
    if w is not None and not isinstance(w, dict) and not (isinstance(w, list) and len(w) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in w) and w[1] > w[0]):
        raise bad("hu_window", "[low, high] finite HU with low < high")
    ref = meta.get("reference_noise_hu")
    if ref is not None and not positive(ref):
        raise bad("reference_noise_hu", "a positive number")
    g = meta.get("grain")
    if g is not None and not (isinstance(g, (int, float)) and not isinstance(g, bool) and 0 <= g < 1):
        raise bad("grain", "a number in [0, 1)")


def inference_spec(meta: Mapping[str, Any], where: Path) -> tuple[str, dict[str, Any]]:
    """(name, network spec) of the network that denoises, from the metadata."""
    name = str(meta.get("inference_net", "net"))
    spec = meta.get("network") or (meta.get("networks") or {}).get(name)
    if not spec:
        raise LdctError("model metadata does not name its network", where)
    return name, dict(spec)


def describe(meta: Mapping[str, Any]) -> str:
    """``method/network(kwargs)`` for messages."""
    net = meta.get("network") or {}
    kwargs = ", ".join(f"{k}={v}" for k, v in net.items() if k != "name")
    return f"{meta.get('method')}/{net.get('name', '?')}({kwargs})"


def check_fits(meta: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], weights_path: Path, *,
               inference_only: bool = True) -> None:
    """Before anything is allocated: the networks in the metadata are within the size caps, and (built on
    the meta device) the inference network has exactly the file's tensor shapes; with ``inference_only``
    False (a full training checkpoint) every network holds at most as many values as the file."""
    from ldct.models.specs import network_skeleton

    where = meta_path(weights_path)
    name, spec = inference_spec(meta, where)
    in_file = sum(math.prod(s) for s in shapes.values())
    specs = {name: spec} if inference_only else {**{k: v for k, v in (meta.get("networks") or {}).items() if v},
                                                 name: spec}
    for net_name, net_spec in specs.items():
        skeleton = network_skeleton(net_spec, f"model metadata: network {net_name!r}", where)
        want = {f"{net_name}.{k}": tuple(v.shape) for k, v in skeleton.state_dict().items()}
        n = sum(math.prod(s) for s in want.values())
        if n > in_file:
            raise LdctError(f"weights do not fit the network in the metadata "
                            f"({describe({**meta, 'network': net_spec})}): it has {n:,} values, the weights file "
                            f"holds {in_file:,}", where)
        if net_name == name:
            _compare_shapes(want, {k: v for k, v in shapes.items() if k.startswith(name + ".")}, meta, weights_path)


def _compare_shapes(want: Mapping[str, tuple[int, ...]], have: Mapping[str, tuple[int, ...]],
                    meta: Mapping[str, Any], weights_path: Path) -> None:
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    wrong = [k for k in want if k in have and tuple(have[k]) != want[k]]
    if not (missing or extra or wrong):
        return
    bits = []
    if wrong:
        k = wrong[0]
        bits.append(f"{k} is {list(have[k])} in the file but {list(want[k])} in the network"
                    + (f" ({len(wrong)} tensors differ)" if len(wrong) > 1 else ""))
    if missing:
        bits.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if extra:
        bits.append(f"{len(extra)} unexpected tensors (e.g. {extra[0]})")
    raise LdctError(f"weights do not fit the network in the metadata ({describe(meta)}): {'; '.join(bits)}",
                    weights_path)


def load_inference_network(path: str | Path, *, prefer: str = "best") -> tuple[torch.nn.Module, dict[str, Any], Path]:
    """What denoising needs from any model file: ``(network in eval mode, meta, weights path)``.

    The network that denoises is built from the metadata and loaded strictly, after every check above.
    Works the same for an exported model and a training checkpoint (whose other networks, e.g. a critic or
    a distillation teacher, are not built and need not exist on disk any more)."""
    from ldct.models.specs import build_network

    weights_path = resolve_weights(path, prefer=prefer)
    shapes = tensor_shapes(weights_path)
    meta = read_meta(weights_path)
    check_fits(meta, shapes, weights_path, inference_only=True)
    where = meta_path(weights_path)
    name, spec = inference_spec(meta, where)
    prefix = name + "."
    state = {k[len(prefix):]: v for k, v in load_tensors(weights_path).items() if k.startswith(prefix)}
    try:
        net = build_network(spec, where="network")
    except LdctError as exc:
        raise LdctError(f"model metadata: {exc}", where) from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = "; ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise LdctError(f"weights do not fit the network in the metadata: {detail[:300]}", weights_path) from None
    return net.eval(), meta, weights_path
