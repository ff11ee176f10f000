"""Recipes: YAML -> validated, fully resolved dict.

A recipe names a training method and its keyword arguments, the data and the training loop::

    method: supervised            # a name in ldct.methods.METHODS
    args:                         # keyword arguments of the method class
      net: {name: nafnet, width: 32}
      loss: l1_ssim
      lr: 2.0e-4
    data: {...}                   # keys of ldct.data's schema
    train: {max_steps: 2000, batch_size: 16, ...}   # see TRAIN_DEFAULTS

Every key is checked: an unknown or mistyped key raises :class:`LdctError` naming the key, the closest
allowed key and all allowed keys. Defaults are filled in, so the resolved recipe (saved as
``config.yaml`` in the run folder and in every checkpoint's ``meta.json``) is complete on its own.
``--set key.sub=value`` overrides single keys; values are parsed as YAML.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ldct.engine.specs import check_kwargs, check_spec, did_you_mean, signature_params, unknown_key_error
from ldct.errors import LdctError

TOP_KEYS = ("method", "args", "data", "train", "description")

#: Training-loop settings and their defaults (``train:`` section).
TRAIN_DEFAULTS: dict[str, Any] = {
    "max_steps": 2000,  # optimisation steps (each: one batch on every device)
    "batch_size": 16,  # patches per device per step
    "val_every": 200,  # steps between validations (0: never)
    "val_slices": 8,  # validation slices scored each time (0: all)
    "ckpt_every": 200,  # steps between checkpoints (0: only at the end / on interrupt)
    "log_every": 10,  # steps between logged scalars
    "sample_every": 200,  # steps between sample grids (0: never)
    "sample_slices": 2,  # slices per sample grid
    "keep_checkpoints": 5,  # periodic checkpoints kept (plus 'best' and 'last')
    "precision": "32-true",  # 32-true | bf16-mixed | 16-mixed (GPU)
    "accelerator": "auto",  # auto | cpu | cuda | gpu
    "devices": 1,  # devices per node (int or "auto")
    "num_nodes": 1,
    "strategy": "auto",  # auto | ddp | ...
    "seed": 0,
    "num_workers": 0,  # DataLoader workers per process
}

PRECISIONS = {
    "32": "32-true",
    "32-true": "32-true",
    "bf16": "bf16-mixed",
    "bf16-mixed": "bf16-mixed",
    "16": "16-mixed",
    "16-mixed": "16-mixed",
}
ACCELERATORS = ("auto", "cpu", "cuda", "gpu")
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true", "ddp_spawn", "dp", "single_device")


# ------------------------------------------------------------------------------------------------
# finding and reading recipes
def _bundled_dir() -> Path:
    return Path(str(resources.files("ldct") / "configs"))


def bundled_recipes() -> list[str]:
    """Names of the recipes shipped in ``ldct/configs`` (usable as ``ldct train NAME``)."""
    d = _bundled_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def recipe_path(spec: str | Path) -> Path:
    """A bundled recipe name or a YAML path -> the YAML file."""
    p = Path(spec)
    if p.suffix.lower() in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise LdctError("recipe file not found", p)
        return p
    names = bundled_recipes()
    if str(spec) in names:
        return _bundled_dir() / f"{spec}.yaml"
    raise LdctError(
        f"unknown recipe {str(spec)!r}{did_you_mean(str(spec), names)}; bundled: {', '.join(names)}; "
        "or give the path of a YAML file"
    )


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise LdctError(f"not valid YAML{where}: {getattr(exc, 'problem', exc)}", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LdctError(f"cannot read recipe: {exc}", path) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise LdctError("a recipe must be a YAML mapping (method:, args:, data:, train:)", path)
    return raw


def load_recipe(spec: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read a bundled or user recipe, apply ``key.sub=value`` overrides, validate and resolve it."""
    path = recipe_path(spec)
    recipe = apply_overrides(read_yaml(path), overrides)
    resolved = validate_recipe(recipe, source=path)
    resolved.setdefault("description", "")
    return resolved


# ------------------------------------------------------------------------------------------------
# overrides
def apply_overrides(recipe: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``recipe`` with each ``a.b.c=value`` applied (value parsed as YAML)."""
    out = copy.deepcopy(dict(recipe))
    for item in overrides:
        if "=" not in item:
            raise LdctError(f"bad override {item!r}: use key.sub=value (e.g. train.max_steps=500)")
        key, _, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise LdctError(f"bad override {item!r}: empty key")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node: dict[str, Any] = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, str):
                child = node[part] = {"name": child}  # 'args.loss.alpha=0.3' on 'loss: l1_ssim'
            if not isinstance(child, dict):
                raise LdctError(f"bad override {item!r}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = child
        node[parts[-1]] = value
    return out


# ------------------------------------------------------------------------------------------------
# validation
def _is_annotated(param: Any, alias: str) -> bool:
    return alias in str(param.annotation)


def validate_method_args(method: str, args: Mapping[str, Any], path: Any = None) -> dict[str, Any]:
    """Check ``args`` against the method class; check network/loss specs against their registries."""
    import ldct.methods  # noqa: F401  (registers methods)
    from ldct.engine.specs import _registries
    from ldct.methods.base import METHODS

    if method not in METHODS:
        known = METHODS.names()
        raise LdctError(f"unknown method {method!r}{did_you_mean(method, known)}; known: {', '.join(known)}", path)
    cls = METHODS.get(method)
    resolved = check_kwargs(cls, args, "args", path)
    networks, losses = _registries()
    for name, param in signature_params(cls).items():
        value = resolved.get(name)
        if value is None:
            continue
        if _is_annotated(param, "NetSpec"):
            resolved[name] = check_spec(networks, value, f"args.{name}", path)
        elif _is_annotated(param, "LossSpec"):
            spec = check_spec(losses, value, f"args.{name}", path)
            resolved[name] = spec["name"] if isinstance(value, str) else spec
    return resolved


def validate_train(train: Mapping[str, Any], path: Any = None) -> dict[str, Any]:
    """Check the ``train:`` section; fill defaults; normalise precision names."""
    out = dict(TRAIN_DEFAULTS)
    for key, value in train.items():
        if key not in TRAIN_DEFAULTS:
            raise unknown_key_error(key, "train", list(TRAIN_DEFAULTS), path)
        out[key] = value
    for key in ("max_steps", "batch_size", "num_nodes"):
        out[key] = _int(out[key], f"train.{key}", path, minimum=1)
    for key in ("val_every", "val_slices", "ckpt_every", "log_every", "sample_every", "sample_slices",
                "keep_checkpoints", "num_workers", "seed"):
        out[key] = _int(out[key], f"train.{key}", path, minimum=0)
    out["log_every"] = max(1, out["log_every"])
    out["keep_checkpoints"] = max(1, out["keep_checkpoints"])
    prec = str(out["precision"]).lower()
    if prec not in PRECISIONS:
        raise LdctError(
            f"train.precision: unknown {out['precision']!r}{did_you_mean(prec, list(PRECISIONS))}; "
            "use 32-true, bf16-mixed or 16-mixed",
            path,
        )
    out["precision"] = PRECISIONS[prec]
    acc = str(out["accelerator"]).lower()
    if acc not in ACCELERATORS:
        raise LdctError(f"train.accelerator: unknown {acc!r}; use one of {', '.join(ACCELERATORS)}", path)
    out["accelerator"] = acc
    if out["devices"] != "auto":
        out["devices"] = _int(out["devices"], "train.devices", path, minimum=1)
    if str(out["strategy"]) not in STRATEGIES:
        raise LdctError(f"train.strategy: unknown {out['strategy']!r}; use one of {', '.join(STRATEGIES)}", path)
    return out


def _int(value: Any, where: str, path: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LdctError(f"{where} must be a whole number, got {value!r}", path)
    try:
        f = float(value)
    except ValueError:
        raise LdctError(f"{where} must be a whole number, got {value!r}", path) from None
    if not f.is_integer() or f < minimum:
        raise LdctError(f"{where} must be a whole number >= {minimum}, got {value!r}", path)
    return int(f)


def validate_data(data: Mapping[str, Any], path: Any = None) -> dict[str, Any]:
    """Check the ``data:`` section with the data package's own schema."""
    from ldct.data.config import validate_data_config  # the data package owns its schema

    return validate_data_config(dict(data), path)


def validate_recipe(recipe: Mapping[str, Any], source: Any = None) -> dict[str, Any]:
    """Validate a recipe mapping and return the resolved recipe (all defaults filled in)."""
    for key in recipe:
        if key not in TOP_KEYS:
            raise unknown_key_error(str(key), "", list(TOP_KEYS), source)
    method = recipe.get("method")
    if not isinstance(method, str) or not method:
        raise LdctError("recipe needs 'method:' (e.g. method: supervised)", source)
    for section in ("args", "data", "train"):
        value = recipe.get(section)
        if value is not None and not isinstance(value, Mapping):
            raise LdctError(f"'{section}:' must be a mapping, got {value!r}", source)
    out: dict[str, Any] = {"method": method}
    if recipe.get("description"):
        out["description"] = str(recipe["description"])
    out["args"] = validate_method_args(method, recipe.get("args") or {}, source)
    out["data"] = validate_data(recipe.get("data") or {}, source)
    out["train"] = validate_train(recipe.get("train") or {}, source)
    return plain(out)


# ------------------------------------------------------------------------------------------------
# writing
def plain(obj: Any) -> Any:
    """Tuples -> lists, recursively (for YAML/JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def dump_recipe(recipe: Mapping[str, Any]) -> str:
    """The resolved recipe as YAML text (what ``config.yaml`` holds)."""
    return yaml.safe_dump(plain(recipe), sort_keys=False, default_flow_style=None, width=110)
