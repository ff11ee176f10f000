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

Recipes are read with a YAML loader that refuses aliases (``*name``: nested aliases expand
exponentially), files over 1 MB and nesting too deep to parse. Numbers are bounded where a wrong one
would crash or exhaust memory later: optimiser settings (``lr``, ``betas``, ``eps``, ``weight_decay``),
step counts, batch and patch sizes, seeds, and every network's arguments
(:func:`ldct.models.specs.network_skeleton`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ldct.errors import LdctError
from ldct.models.specs import MAX_NET_WIDTH, WIDTH_WORDS, network_skeleton
from ldct.registry import check_kwargs, check_spec, did_you_mean, signature_params, unknown_key_error

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
    "init": None,  # start from a model's weights (bundled name, run folder or model path): fine-tuning
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

#: bounds that no sane run needs to exceed (checked before anything is built or allocated)
MAX_YAML_BYTES = 1 << 20  # a recipe is a few hundred bytes
MAX_STEPS = 100_000_000  # steps (and step intervals)
MAX_COUNT = 1_000_000  # slices, checkpoints kept
MAX_BATCH = 4096  # patches per device per step
MAX_PATCH = 4096  # patch side (pixels)
MAX_SEED = 2**32 - 1
MAX_LR = 10.0
# network sizes: MAX_NET_WIDTH, MAX_NET_DEPTH, MAX_NET_VALUES in ldct.models.specs


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


class SafeYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``). Recipes never need them, and a few nested
    aliases expand to billions of nodes in anything that walks the result ("billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in ldct YAML files", mark)
        return super().compose_node(parent, index)


def parse_yaml(text: str, path: Any = None) -> Any:
    """Parse untrusted YAML text with :class:`SafeYamlLoader` (plain data only, no aliases, at most
    ``MAX_YAML_BYTES``); LdctError naming ``path`` for anything else."""
    if len(text) > MAX_YAML_BYTES:
        raise LdctError(f"YAML file of {len(text) / 1e6:.1f} MB is too large (at most {MAX_YAML_BYTES >> 20} MB)",
                        path)
    try:
        return yaml.load(text, Loader=SafeYamlLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise LdctError(f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}", path) from None
    except RecursionError:
        raise LdctError("not valid YAML: nested too deeply", path) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise LdctError(f"not valid YAML: {str(exc)[:200]}", path) from None


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise LdctError(f"recipe of {path.stat().st_size / 1e6:.1f} MB is too large (at most "
                            f"{MAX_YAML_BYTES >> 20} MB)", path)
        raw = parse_yaml(path.read_text(encoding="utf-8"), path)
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
            value = yaml.load(text, Loader=SafeYamlLoader) if text.strip() else None
        except (yaml.YAMLError, RecursionError, ValueError):
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
    import ldct.losses  # registers losses
    import ldct.methods  # noqa: F401  (registers methods)
    from ldct.losses.registry import LOSSES
    from ldct.methods.base import METHODS
    from ldct.models.registry import NETWORKS  # filled: ldct.models.specs imports ldct.models

    if method not in METHODS:
        known = METHODS.names()
        raise LdctError(f"unknown method {method!r}{did_you_mean(method, known)}; known: {', '.join(known)}", path)
    cls = METHODS.get(method)
    resolved = check_kwargs(cls, args, "args", path)
    for name, param in signature_params(cls).items():
        value = resolved.get(name)
        if value is None:
            continue
        if _is_annotated(param, "NetSpec"):
            resolved[name] = check_spec(NETWORKS, value, f"args.{name}", path)
            network_skeleton(resolved[name], f"args.{name}", path)
        elif _is_annotated(param, "LossSpec"):
            spec = check_spec(LOSSES, value, f"args.{name}", path)
            resolved[name] = spec["name"] if isinstance(value, str) else spec
    check_method_numbers(resolved, path)
    return resolved


def _number(value: Any, where: str, path: Any, lo: float, hi: float, *, lo_open: bool = False,
            hi_open: bool = False) -> float:
    """``value`` as a finite float in the interval (LdctError naming ``where`` otherwise)."""
    try:
        f = float(value) if not isinstance(value, bool) and isinstance(value, (int, float, str)) else math.nan
    except (ValueError, OverflowError):
        f = math.nan
    inside = math.isfinite(f) and (lo < f if lo_open else lo <= f) and (f < hi if hi_open else f <= hi)
    if not inside:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise LdctError(f"{where} must be a number in {interval}, got {value!r}", path)
    return f


def check_method_numbers(args: Mapping[str, Any], path: Any = None) -> None:
    """Bound a method's numeric arguments by name: learning rates in (0, 10], ``betas`` two numbers in
    [0, 1), ``eps`` in (0, 1), ``weight_decay`` in [0, 1], loss weights >= 0, every float finite, every
    integer in [0, MAX_STEPS] (widths: [0, MAX_NET_WIDTH])."""
    for key, value in args.items():
        where = f"args.{key}"
        if value is None:
            continue
        if key == "lr" or key.endswith("_lr") or key.startswith("lr_"):
            _number(value, where, path, 0.0, MAX_LR, lo_open=True)
        elif key == "betas":
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != 2:
                raise LdctError(f"{where} must be two numbers in [0, 1) such as [0.9, 0.999], got {value!r}", path)
            for i, b in enumerate(value):
                _number(b, f"{where}[{i}]", path, 0.0, 1.0, hi_open=True)
        elif key == "eps":
            _number(value, where, path, 0.0, 1.0, lo_open=True, hi_open=True)
        elif key == "weight_decay":
            _number(value, where, path, 0.0, 1.0)
        elif isinstance(value, (bool, Mapping)):
            continue
        elif isinstance(value, float) or (key.endswith("_weight") or key.startswith("lambda_")) and \
                isinstance(value, int):
            lo = 0.0 if key.endswith("_weight") or key.startswith("lambda_") else -math.inf
            _number(value, where, path, lo, math.inf, hi_open=True)
        elif isinstance(value, int):
            cap = MAX_NET_WIDTH if any(w in key for w in WIDTH_WORDS) else MAX_STEPS
            _int(value, where, path, minimum=0, maximum=cap)


def validate_train(train: Mapping[str, Any], path: Any = None) -> dict[str, Any]:
    """Check the ``train:`` section; fill defaults; normalise precision names."""
    out = dict(TRAIN_DEFAULTS)
    for key, value in train.items():
        if key not in TRAIN_DEFAULTS:
            raise unknown_key_error(key, "train", list(TRAIN_DEFAULTS), path)
        out[key] = value
    caps = {"max_steps": MAX_STEPS, "batch_size": MAX_BATCH, "num_nodes": 1024, "num_workers": 256, "seed": MAX_SEED,
            "val_every": MAX_STEPS, "ckpt_every": MAX_STEPS, "log_every": MAX_STEPS, "sample_every": MAX_STEPS}
    for key in ("max_steps", "batch_size", "num_nodes"):
        out[key] = _int(out[key], f"train.{key}", path, minimum=1, maximum=caps[key])
    for key in ("val_every", "val_slices", "ckpt_every", "log_every", "sample_every", "sample_slices",
                "keep_checkpoints", "num_workers", "seed"):
        out[key] = _int(out[key], f"train.{key}", path, minimum=0, maximum=caps.get(key, MAX_COUNT))
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
        out["devices"] = _int(out["devices"], "train.devices", path, minimum=1, maximum=1024)
    if str(out["strategy"]) not in STRATEGIES:
        raise LdctError(f"train.strategy: unknown {out['strategy']!r}; use one of {', '.join(STRATEGIES)}", path)
    if out["init"] is not None and (not isinstance(out["init"], str) or not out["init"].strip()):
        raise LdctError(f"train.init must be a model name or path, got {out['init']!r}", path)
    return out


def _int(value: Any, where: str, path: Any, minimum: int, maximum: int = MAX_STEPS) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LdctError(f"{where} must be a whole number, got {value!r}", path)
    try:
        f = float(value)
    except (ValueError, OverflowError):
        raise LdctError(f"{where} must be a whole number, got {value!r}", path) from None
    if not f.is_integer() or f < minimum:
        raise LdctError(f"{where} must be a whole number >= {minimum}, got {value!r}", path)
    if f > maximum:
        raise LdctError(f"{where} must be a whole number <= {maximum}, got {value!r}", path)
    return int(f)


#: upper bounds of the data section's integers (the data package checks their lower bounds)
DATA_CAPS = {"patch_size": MAX_PATCH, "samples_per_epoch": 1_000_000_000, "dose_steps": 1000,
             "slice_stride": 10_000, "val_max_slices": MAX_COUNT, "seed": MAX_SEED}


def validate_data(data: Mapping[str, Any], path: Any = None) -> dict[str, Any]:
    """Check the ``data:`` section with the data package's own schema, then bound its sizes."""
    from ldct.data.config import validate_data_config  # the data package owns its schema

    out = validate_data_config(dict(data), path)
    for key, cap in DATA_CAPS.items():
        if out.get(key) is not None:
            _int(out[key], f"data.{key}", path, minimum=0, maximum=cap)
    for key in ("hu_window", "body_threshold_hu"):
        value = out.get(key)
        if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
            raise LdctError(f"data.{key} must be finite, got {value!r}", path)
    return out


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
