"""Checkpoints: writing them during training, loading them for resume/evaluate/denoise, exporting models.

Run folder layout::

    RUN/config.yaml                       resolved recipe
    RUN/checkpoints/step_0000200/         one checkpoint (written to a temporary folder, then renamed)
        weights.safetensors               method.weights(): every network, '<net>.<param>'; meta in its header
        meta.json                         method, networks and kwargs, HU window, data summary, step, metrics
        train_state.pt                    optimizers, schedulers, RNG, data order, step (tensors and
                                          primitives only: loads with torch.load(weights_only=True))
    RUN/checkpoints/last                  text file: name of the newest checkpoint folder
    RUN/checkpoints/best                  text file: name of the checkpoint with the best validation PSNR

An exported model folder (:func:`export_model`) holds only ``weights.safetensors`` (the inference
network) and ``meta.json``. Pickle files are never unpickled.

Loading trusts nothing in these files: the safetensors header must be well formed (dtypes, shapes and
byte ranges that fit the file), the metadata must be a JSON object with values of the expected types,
the network it names must be within ``ldct.engine.config``'s size caps and (built on PyTorch's meta
device, no memory) must have exactly the tensor shapes the file holds, every weight must be finite, and a
``last``/``best`` pointer must name a folder inside ``checkpoints/``. All this before the real network
is built; any failure is one :class:`LdctError` naming the file.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import nn

import ldct
from ldct.atomic import atomic_dir, atomic_file
from ldct.engine.config import plain
from ldct.errors import LdctError
from ldct.methods.base import Method

CKPT_KIND = "ldct-checkpoint"
MODEL_KIND = "ldct-model"
FORMAT = 1
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar", ".joblib"}
_META_KEY = "ldct_meta"


# ------------------------------------------------------------------------------------------------
# metadata
def net_spec(module: nn.Module) -> dict[str, Any] | None:
    """The ``{"name": ..., **kwargs}`` a network was built from (see ``engine.specs.build_network``)."""
    for m in (module, getattr(module, "module", None), getattr(getattr(module, "module", None), "module", None)):
        spec = getattr(m, "ldct_spec", None) if m is not None else None
        if spec is not None:
            return dict(spec)
    return None


def make_meta(method: Any, recipe: Mapping[str, Any], *, step: int, metrics: Mapping[str, float] | None = None,
              data_summary: Mapping[str, Any] | None = None, kind: str = CKPT_KIND) -> dict[str, Any]:
    """The JSON metadata stored beside (and inside) a checkpoint's weights."""
    networks = {name: net_spec(net) for name, net in method.nets.items()}
    data = recipe.get("data", {})
    photos = data.get("kind") == "photos"
    extra: dict[str, Any] = {}
    if photos:  # photographs (ldct.data.photos): intensities, not HU; what `ldct denoise` needs to map them
        extra = {"full_scale": float((data_summary or {}).get("full_scale") or 255.0),
                 "photo_sim": dict(data.get("sim") or {})}
    return plain({
        "kind": kind,
        "format": FORMAT,
        "ldct_version": ldct.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "method": recipe["method"],
        "inference_net": method.inference_net,
        "network": networks.get(method.inference_net),
        "networks": networks,
        "dose_conditioned": bool(method.dose_conditioned),
        "scale": int(method.scale),
        "data_kind": "photos" if photos else "ct",
        **extra,
        "hu_window": list(data.get("hu_window", [-1000.0, 1000.0])),
        "channels": int(data.get("channels", 1)),
        "doses": list(data.get("doses", [])),
        "step": int(step),
        "metrics": dict(metrics or {}),
        "data_summary": dict(data_summary or {}),
        "recipe": dict(recipe),
    })


# ------------------------------------------------------------------------------------------------
# writing
def step_name(step: int) -> str:
    return f"step_{step:07d}"


def save_checkpoint(run_dir: Path, method: Any, meta: Mapping[str, Any], train_state: Mapping[str, Any]) -> Path:
    """Write ``RUN/checkpoints/step_XXXXXXX`` atomically and point ``last`` at it. Rank 0 only."""
    ckpt_root = Path(run_dir) / "checkpoints"
    target = ckpt_root / step_name(int(meta["step"]))
    with atomic_dir(target, overwrite=True) as tmp:
        save_weights(tmp / "weights.safetensors", method.weights(), meta)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        buf = io.BytesIO()
        torch.save(dict(train_state), buf)
        (tmp / "train_state.pt").write_bytes(buf.getbuffer())
    write_pointer(ckpt_root, "last", target.name)
    return target


def save_weights(path: Path, weights: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """safetensors file whose header also carries the JSON metadata (a lone weights file is self-describing).

    Serialised in memory and written by Python, so a full disk is an ``OSError`` (ENOSPC/EFBIG) that the
    atomic writers turn into one line, not a library-specific exception."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    Path(path).write_bytes(save_bytes(tensors, metadata={"format": "pt", _META_KEY: json.dumps(meta)}))


def write_pointer(ckpt_root: Path, name: str, target: str) -> None:
    with atomic_file(ckpt_root / name) as tmp:
        tmp.write_text(target + "\n")


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


def last_step(run_dir: Path) -> int:
    """The step of a run's ``last`` checkpoint, -1 when it has none yet."""
    last = read_pointer(Path(run_dir) / "checkpoints", "last")
    if last is None:
        return -1
    try:
        return int(last.name.split("_")[1])
    except (IndexError, ValueError):
        raise LdctError(f"checkpoint pointer names {last.name!r}, not a step_NNNNNNN folder",
                        Path(run_dir) / "checkpoints" / "last") from None


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` step folders (never the ones ``last``/``best`` point at)."""
    ckpt_root = Path(run_dir) / "checkpoints"
    steps = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())
    protected = {read_pointer(ckpt_root, "last"), read_pointer(ckpt_root, "best")}
    removed = []
    for p in steps[: max(0, len(steps) - keep)]:
        if p not in protected:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def remove_after(run_dir: Path, step: int) -> None:
    """Delete checkpoints newer than ``step`` (left by a run that diverged or was not resumed from them)."""
    for p in (Path(run_dir) / "checkpoints").glob("step_*"):
        try:
            s = int(p.name.split("_", 1)[1])
        except ValueError:
            continue
        if s > step:
            shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# finding and reading
def resolve_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """Run dir | checkpoint dir | model dir | weights file -> the ``weights.safetensors`` to load.

    For a run folder, ``prefer`` ("best" or "last") picks the checkpoint; the other is the fallback.
    """
    p = Path(path)
    if not p.exists():
        raise LdctError("checkpoint not found (no such file or folder)", p)
    if p.is_file():
        if p.suffix.lower() in PICKLE_SUFFIXES or _looks_like_pickle(p):
            raise LdctError(
                "is a pickle/PyTorch archive; ldct never unpickles model files (that can run arbitrary code); "
                "use a .safetensors checkpoint written by ldct", p)
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
    raise LdctError("not an ldct model: no weights.safetensors and no checkpoints/ folder here", p)


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head[:4] == b"PK\x03\x04"


def meta_path(weights_path: Path) -> Path:
    """The file a weights file's metadata comes from: ``meta.json`` / ``<stem>.json`` beside it, else itself."""
    for cand in (weights_path.parent / "meta.json", weights_path.with_suffix(".json")):
        if cand.is_file() and cand != weights_path:
            return cand
    return weights_path


def read_meta(weights_path: Path) -> dict[str, Any]:
    """Metadata of a weights file: ``meta.json`` beside it, else the safetensors header (checked types)."""
    source = meta_path(weights_path)
    if source != weights_path:
        try:
            meta = json.loads(source.read_text())
        except (OSError, ValueError) as exc:
            raise LdctError(f"unreadable checkpoint metadata ({exc})", source) from None
    else:
        try:
            from safetensors import safe_open

            with safe_open(str(weights_path), framework="pt") as f:
                header = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise LdctError(f"not a valid safetensors file ({exc})", weights_path) from None
        if _META_KEY not in header:
            raise LdctError("not an ldct model: the safetensors file has no ldct metadata and no meta.json",
                            weights_path)
        try:
            meta = json.loads(header[_META_KEY])
        except ValueError as exc:
            raise LdctError(f"the ldct metadata in the safetensors header is not JSON ({exc})", weights_path) from None
    if not isinstance(meta, dict) or meta.get("kind") not in (CKPT_KIND, MODEL_KIND):
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
    fs = meta.get("full_scale")
    if fs is not None and not (isinstance(fs, (int, float)) and not isinstance(fs, bool) and math.isfinite(fs)
                               and fs > 0):
        raise bad("full_scale", "a positive number")


def _tensor_shapes(weights_path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header checked by ``ldct.model_zoo.check_safetensors``."""
    from ldct.model_zoo import check_safetensors

    header = check_safetensors(weights_path)
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _check_skeletons(meta: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], inference_only: bool,
                     weights_path: Path) -> None:
    """Before anything is allocated: the networks in the metadata are within the size caps, and (built on
    the meta device) the inference network has exactly the file's tensor shapes; for a full checkpoint
    every network has at most as many values as the file holds."""
    from ldct.engine.config import network_skeleton

    where = meta_path(weights_path)
    name = str(meta.get("inference_net", "net"))
    spec = meta.get("network") or (meta.get("networks") or {}).get(name)
    if not spec:
        raise LdctError("model metadata does not name its network", where)
    in_file = sum(math.prod(s) for s in shapes.values())
    specs = {name: spec} if inference_only else {**{k: v for k, v in (meta.get("networks") or {}).items() if v},
                                                 name: spec}
    for net_name, net_spec in specs.items():
        skeleton = network_skeleton(net_spec, f"model metadata: network {net_name!r}", where)
        want = {f"{net_name}.{k}": tuple(v.shape) for k, v in skeleton.state_dict().items()}
        n = sum(math.prod(s) for s in want.values())
        if n > in_file:
            raise LdctError(f"weights do not fit the network in the metadata "
                            f"({_describe({**meta, 'network': net_spec})}): it has {n:,} values, the weights file "
                            f"holds {in_file:,}", where)
        if net_name == name and inference_only:
            _compare_shapes(want, {k: v for k, v in shapes.items() if k.startswith(name + ".")}, meta,
                            weights_path)


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
    raise LdctError(f"weights do not fit the network in the metadata ({_describe(meta)}): {'; '.join(bits)}",
                    weights_path)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise LdctError(f"not a valid safetensors file ({exc})", path) from None


def load_checkpoint(path: str | Path, *, inference_only: bool | None = None, prefer: str = "best") -> tuple[Any, dict]:
    """Rebuild a trained method and load its weights (CPU).

    Args:
        path: a run folder (its ``best`` checkpoint, else ``last``), a checkpoint or model folder, or a
            ``.safetensors`` file written by ldct.
        inference_only: build only the inference network (default: True for exported models, False for
            training checkpoints, which rebuild the whole method from the recipe in ``meta.json``).
    Returns:
        ``(method, meta)``; ``method.predict(x)`` maps (B, C, H, W) network range -> (B, C, H*s, W*s).
    Raises:
        LdctError: missing/pickle/non-ldct file, or weights that do not fit the network in the metadata.
    """
    weights_path = resolve_checkpoint(path, prefer=prefer)
    shapes = _tensor_shapes(weights_path)
    meta = read_meta(weights_path)
    if inference_only is None:
        inference_only = meta["kind"] == MODEL_KIND
    _check_skeletons(meta, shapes, bool(inference_only), weights_path)
    tensors = _load_tensors(weights_path)
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise LdctError(f"weights contain NaN or infinite values ({len(broken)} tensors, e.g. {broken[0]}): the "
                        "model is broken (a diverged training?) and would produce garbage", weights_path)
    if inference_only:
        method = InferenceModel.from_meta(meta, weights_path)
    else:
        method = _build_method(meta, weights_path)
    if inference_only:  # a full checkpoint also holds the other networks (critic, teacher, ...)
        tensors = {k: v for k, v in tensors.items() if k.startswith(method.inference_net + ".")}
    try:
        method.load_weights(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[:3])
        raise LdctError(
            f"weights do not fit the network in the metadata ({_describe(meta)}): {detail[:300]}", weights_path
        ) from None
    method.train(False)
    return method, meta


def _describe(meta: Mapping[str, Any]) -> str:
    net = meta.get("network") or {}
    kwargs = ", ".join(f"{k}={v}" for k, v in net.items() if k != "name")
    return f"{meta.get('method')}/{net.get('name', '?')}({kwargs})"


def _build_method(meta: Mapping[str, Any], where: Path) -> Any:
    from ldct.engine.config import validate_method_args
    from ldct.methods.base import METHODS

    recipe = meta.get("recipe") or {}
    if not isinstance(recipe.get("method"), str) or not isinstance(recipe.get("args") or {}, Mapping):
        raise LdctError("checkpoint metadata has no recipe (method and args)", meta_path(where))
    args = validate_method_args(recipe["method"], recipe.get("args") or {}, meta_path(where))
    return METHODS.get(recipe["method"])(**args)


class InferenceModel(Method):
    """Only a method's inference network, rebuilt from metadata (what exported models load into)."""

    def __init__(self, net: nn.Module, *, method: str, inference_net: str, dose_conditioned: bool, scale: int):
        super().__init__()
        self.name = method  # type: ignore[misc]
        self.inference_net = inference_net  # type: ignore[misc]
        self.dose_conditioned = dose_conditioned
        self.scale = scale
        self.add_net(inference_net, net)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], where: Path) -> InferenceModel:
        from ldct.engine.specs import build_network

        name = str(meta.get("inference_net", "net"))
        spec = meta.get("network") or (meta.get("networks") or {}).get(name)
        if not spec:
            raise LdctError("model metadata does not name its network", where)
        try:
            net = build_network(spec, where="network")
        except LdctError as exc:
            raise LdctError(f"model metadata: {exc}", where) from None
        return cls(net, method=str(meta.get("method", "?")), inference_net=name,
                   dose_conditioned=bool(meta.get("dose_conditioned", False)), scale=int(meta.get("scale", 1)))

    def inference_module(self) -> nn.Module:
        if self.dose_conditioned:
            return self.nets[self.inference_net]
        return super().inference_module()


# ------------------------------------------------------------------------------------------------
# export
def export_model(run_or_ckpt: str | Path, out_dir: str | Path, *, overwrite: bool = False,
                 prefer: str = "best") -> Path:
    """Write a minimal inference model: ``out_dir/weights.safetensors`` (the inference network only,
    keys ``<net>.<param>``) and ``out_dir/meta.json`` (kind 'ldct-model', no optimizer state)."""
    weights_path = resolve_checkpoint(run_or_ckpt, prefer=prefer)
    meta = dict(read_meta(weights_path))
    tensors = _load_tensors(weights_path)
    method, _ = load_checkpoint(weights_path, inference_only=True)  # checks the weights fit
    prefix = method.inference_net + "."
    kept = {k: v for k, v in tensors.items() if k.startswith(prefix)}
    meta.update(kind=MODEL_KIND, exported_from=str(weights_path.parent), networks={
        method.inference_net: meta.get("network")})
    out = Path(out_dir)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        save_weights(tmp / "weights.safetensors", kept, meta)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return out


def load_train_state(ckpt_dir: Path) -> dict[str, Any]:
    """``train_state.pt`` of a checkpoint, loaded with ``weights_only=True``."""
    path = Path(ckpt_dir) / "train_state.pt"
    if not path.is_file():
        raise LdctError("checkpoint has no train_state.pt (an exported model cannot be resumed)", ckpt_dir)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unpickling refusal or corrupt file)
        raise LdctError(f"cannot read training state ({type(exc).__name__}: {str(exc)[:200]})", path) from None
