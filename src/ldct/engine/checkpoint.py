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

The file format (safetensors + metadata, pointers, every check made before a network is built) belongs
to :mod:`ldct.models.files`; this module writes checkpoints during training and rebuilds a whole method
from one (:func:`load_checkpoint`, for tests and tools that need every network). Denoising, evaluation
and export load only the denoising network: :meth:`ldct.Denoiser.load`.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import ldct
from ldct.atomic import atomic_dir, atomic_file
from ldct.engine.config import plain
from ldct.errors import LdctError
from ldct.models.files import (
    CKPT_KIND,
    FORMAT,
    check_fits,
    describe,
    load_tensors,
    meta_path,
    read_meta,
    read_pointer,
    resolve_weights,
    save_weights,
    tensor_shapes,
)


# ------------------------------------------------------------------------------------------------
# metadata
def net_spec(module: nn.Module) -> dict[str, Any] | None:
    """The ``{"name": ..., **kwargs}`` a network was built from (see ``ldct.models.specs.build_network``)."""
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


def write_pointer(ckpt_root: Path, name: str, target: str) -> None:
    with atomic_file(ckpt_root / name) as tmp:
        tmp.write_text(target + "\n")


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
# reading a whole method back
def load_checkpoint(path: str | Path, *, prefer: str = "best") -> tuple[Any, dict]:
    """Rebuild the whole trained method of a checkpoint (every network, CPU, eval mode) from the recipe in
    its metadata, e.g. a GAN's generator and critic. For denoising use :meth:`ldct.Denoiser.load`, which
    builds the denoising network alone.

    Args:
        path: a run folder (its ``best`` checkpoint, else ``last``) or a checkpoint folder.
    Returns:
        ``(method, meta)``.
    Raises:
        LdctError: missing/pickle/non-ldct file, an exported model (it holds one network, no recipe), or
            weights that do not fit the networks in the metadata.
    """
    weights_path = resolve_weights(path, prefer=prefer)
    shapes = tensor_shapes(weights_path)
    meta = read_meta(weights_path)
    if meta["kind"] != CKPT_KIND:
        raise LdctError("an exported model holds only its denoising network; load it with ldct.Denoiser.load",
                        weights_path)
    check_fits(meta, shapes, weights_path, inference_only=False)
    tensors = load_tensors(weights_path)
    method = _build_method(meta, weights_path)
    try:
        method.load_weights(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[:3])
        raise LdctError(f"weights do not fit the network in the metadata ({describe(meta)}): {detail[:300]}",
                        weights_path) from None
    method.train(False)
    return method, meta


def _build_method(meta: Mapping[str, Any], where: Path) -> Any:
    from ldct.engine.config import validate_method_args
    from ldct.methods.base import METHODS

    recipe = meta.get("recipe") or {}
    if not isinstance(recipe.get("method"), str) or not isinstance(recipe.get("args") or {}, Mapping):
        raise LdctError("checkpoint metadata has no recipe (method and args)", meta_path(where))
    args = validate_method_args(recipe["method"], recipe.get("args") or {}, meta_path(where))
    return METHODS.get(recipe["method"])(**args)


def load_train_state(ckpt_dir: Path) -> dict[str, Any]:
    """``train_state.pt`` of a checkpoint, loaded with ``weights_only=True``."""
    path = Path(ckpt_dir) / "train_state.pt"
    if not path.is_file():
        raise LdctError("checkpoint has no train_state.pt (an exported model cannot be resumed)", ckpt_dir)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unpickling refusal or corrupt file)
        raise LdctError(f"cannot read training state ({type(exc).__name__}: {str(exc)[:200]})", path) from None
