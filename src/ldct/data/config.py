"""The ``data:`` section of a recipe: schema, defaults and validation.

Every key is checked on load: an unknown or mistyped key raises :class:`LdctError` naming itself and the
allowed keys, and a value of the wrong kind names the key and what was expected. The resolved section
(all defaults filled in) is what runs record beside their checkpoints.

Example::

    data:
      root: ../shared/data          # also given by `ldct train --data`
      kind: simulated               # simulated | manifest | paired_dirs | unpaired | lowdose | photos | auto
      doses: [0.25]                 # evaluation dose levels (and training ones without dose_range)
      sim: {mode: projection}       # passed to ldct.simulate.simulate_low_dose
      patch_size: 64
      split: {test: [L067], val: 1, seed: 0}
      mix:                          # more training sources (training only), a weight = share of patches
        - {root: ../shared/extra_ct, kind: simulated, weight: 0.3}

A ``mix`` source takes the parent's keys (doses, sim, window, patch size...) unless it sets its own
(:data:`MIX_KEYS`); its patients only ever train, and any patient held out by the parent's split is dropped
from it, so a leave-one-patient-out fold never sees its test patient through the mix.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ldct.errors import LdctError
from ldct.hu import Window

KINDS = ("auto", "simulated", "manifest", "paired_dirs", "unpaired", "lowdose", "photos")

#: the AAPM-Mayo challenge convention for headerless .raw slices (overridable with ``raw:``)
DEFAULT_RAW = {"shape": [512, 512], "dtype": "uint16", "offset": -1024.0, "spacing": [3.0, 0.7, 0.7]}

DEFAULTS: dict[str, Any] = {
    "root": None,
    "kind": "auto",
    "doses": [0.25],
    "dose_range": None,
    "dose_steps": 7,
    "seed": 0,
    "sim": {"mode": "projection", "filter": "auto"},
    "cache": True,
    "cache_dir": None,
    "precompute": True,
    "downsample": 1,
    "patch_size": 64,
    "samples_per_epoch": 200000,
    "sample_by": "slice",
    "body_fraction": 0.3,
    "body_threshold_hu": -500.0,
    "augment": True,
    "hu_window": [-1000.0, 1000.0],
    "channels": 1,
    "split": {"val": 0.15, "test": 0.15, "seed": 0},
    "val_max_slices": 16,
    "raw": copy.deepcopy(DEFAULT_RAW),
    "include": [],
    "exclude": [],
    "patient_regex": None,
    "patient_map": {},
    "slice_stride": 1,
    "ld_root": None,
    "nd_root": None,
    "ld_dose": None,
    "adjacent": False,
    "mix": [],
}

#: what a ``mix`` entry may set for itself (the rest comes from the parent section); plus ``weight``
MIX_KEYS = ("root", "kind", "doses", "dose_range", "dose_steps", "seed", "sim", "raw", "include", "exclude",
            "patient_regex", "patient_map", "slice_stride", "sample_by", "body_fraction", "weight")
MIX_KINDS = ("auto", "simulated", "manifest", "paired_dirs")

SPLIT_KEYS = ("val", "test", "seed", "file")
#: how a training patch picks its slice: uniformly over slices, or a patient first (each patient equally
#: often, however many slices it has), then one of its slices
SAMPLE_BY = ("slice", "patient")
RAW_KEYS = ("shape", "dtype", "offset", "spacing")


@dataclass
class DataConfig:
    """Validated ``data:`` section (see module docstring). ``raw_dict`` is the resolved YAML form."""

    root: str | None
    kind: str
    doses: list[float]
    dose_range: tuple[float, float] | None
    dose_steps: int
    seed: int
    sim: dict[str, Any]
    cache: bool
    cache_dir: str | None
    precompute: bool
    downsample: int
    patch_size: int
    samples_per_epoch: int
    sample_by: str
    body_fraction: float
    body_threshold_hu: float
    augment: bool
    hu_window: Window
    channels: int
    split: dict[str, Any]
    val_max_slices: int | None
    raw: dict[str, Any]
    include: list[str]
    exclude: list[str]
    patient_regex: str | None
    patient_map: dict[str, str]
    slice_stride: int
    ld_root: str | None
    nd_root: str | None
    ld_dose: float | None
    #: ``kind: lowdose``: each training item also carries the same patch of an adjacent slice (``ld_adj``,
    #: Noise2Noise from neighbouring slices of a thin contiguous series)
    adjacent: bool = False
    #: extra training sources: (their resolved config, share of training patches)
    mix: list[tuple[DataConfig, float]] = field(default_factory=list)
    raw_dict: dict[str, Any] = field(default_factory=dict, repr=False)

    def train_doses(self) -> list[float]:
        """Dose levels used for (cached) training pairs: ``doses``, or a grid over ``dose_range``."""
        if self.dose_range is None:
            return list(self.doses)
        lo, hi = self.dose_range
        n = max(2, self.dose_steps)
        return [round(lo + (hi - lo) * k / (n - 1), 6) for k in range(n)]


def _err(key: str, msg: str, source: str | None) -> LdctError:
    return LdctError(f"data.{key}: {msg}", source)


def _check_keys(d: Mapping[str, Any], allowed: tuple[str, ...] | list[str], prefix: str, source: str | None):
    for k in d:
        if k not in allowed:
            import difflib

            close = difflib.get_close_matches(str(k), list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise LdctError(
                f"unknown key {prefix}{k!r}{hint}; allowed keys: {', '.join(allowed)}", source
            )


def _num(d: Mapping[str, Any], key: str, kind: type, source: str | None, lo: float | None = None,
         hi: float | None = None) -> Any:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
        raise _err(key, f"expected {'an integer' if kind is int else 'a number'}, got {v!r}", source)
    v = kind(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _err(key, f"{v} is outside [{lo}, {hi}]", source)
    return v


def _dose_list(v: Any, key: str, source: str | None) -> list[float]:
    vals = v if isinstance(v, (list, tuple)) else [v]
    out = []
    for x in vals:
        try:
            f = float(x)
        except (TypeError, ValueError):
            raise _err(key, f"dose {x!r} is not a number", source) from None
        if not 0.0 < f <= 1.0:
            raise _err(key, f"dose {f:g} must be a fraction of the normal dose in (0, 1]", source)
        out.append(f)
    if not out:
        raise _err(key, "needs at least one dose", source)
    return out


def _str_list(v: Any, key: str, source: str | None) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise _err(key, f"expected a list of glob patterns, got {v!r}", source)
    return list(v)


def parse_data_config(section: Mapping[str, Any] | None, *, source: str | None = None) -> DataConfig:
    """Validate a recipe's ``data:`` section (None = all defaults) and fill in defaults.

    ``source`` (the recipe path) is named in error messages.
    """
    section = dict(section or {})
    _check_keys(section, list(DEFAULTS), "data.", source)
    d = copy.deepcopy(DEFAULTS)
    if section.get("kind") == "photos":  # photographs: image-domain noise (ldct.data.photos)
        from ldct.data.photos import PHOTO_SIM_DEFAULTS

        d["sim"] = copy.deepcopy(PHOTO_SIM_DEFAULTS)
    for k, v in section.items():
        if k in ("sim", "split", "raw") and isinstance(v, Mapping):
            d[k] = {**d[k], **dict(v)}
        else:
            d[k] = copy.deepcopy(v)

    if d["kind"] not in KINDS:
        raise _err("kind", f"unknown kind {d['kind']!r}; allowed: {', '.join(KINDS)}", source)
    if d["root"] is not None and not isinstance(d["root"], str):
        d["root"] = str(d["root"])
    doses = _dose_list(d["doses"], "doses", source)
    d["doses"] = doses
    dose_range = None
    if d["dose_range"] is not None:
        r = _dose_list(d["dose_range"], "dose_range", source)
        if len(r) != 2 or r[0] >= r[1]:
            raise _err("dose_range", f"expected [low, high] with low < high, got {d['dose_range']!r}", source)
        dose_range = (r[0], r[1])
    if d["ld_dose"] is not None:
        d["ld_dose"] = _dose_list(d["ld_dose"], "ld_dose", source)[0]
    for k, lo in (("dose_steps", 2), ("patch_size", 8), ("samples_per_epoch", 1), ("slice_stride", 1), ("seed", 0)):
        d[k] = _num(d, k, int, source, lo=lo)
    if d["val_max_slices"] is not None:
        d["val_max_slices"] = _num(d, "val_max_slices", int, source, lo=1)
    if d["sample_by"] not in SAMPLE_BY:
        raise _err("sample_by", f"expected one of {', '.join(SAMPLE_BY)}, got {d['sample_by']!r}", source)
    d["body_fraction"] = _num(d, "body_fraction", float, source, 0.0, 1.0)
    d["body_threshold_hu"] = _num(d, "body_threshold_hu", float, source)
    if d["downsample"] not in (1, 2, 3, 4, 8):
        raise _err("downsample", f"expected 1, 2, 4 (or 3, 8), got {d['downsample']!r}", source)
    if d["patch_size"] % d["downsample"]:
        raise _err("patch_size", f"{d['patch_size']} is not a multiple of downsample={d['downsample']}", source)
    if d["channels"] not in (1, 3):
        raise _err("channels", f"expected 1 or 3 (3 = the slice and its two neighbours), got {d['channels']!r}",
                   source)
    for k in ("augment", "precompute", "adjacent"):
        if not isinstance(d[k], bool):
            raise _err(k, f"expected true or false, got {d[k]!r}", source)
    if d["adjacent"] and d["kind"] != "lowdose":
        raise _err("adjacent", "pairs of adjacent low-dose slices are for data.kind: lowdose", source)
    if isinstance(d["cache"], str):  # a path given as cache: is the shared cache directory
        d["cache_dir"], d["cache"] = d["cache"], True
    if not isinstance(d["cache"], bool):
        raise _err("cache", f"expected true, false or a directory, got {d['cache']!r}", source)
    w = d["hu_window"]
    if not (isinstance(w, (list, tuple)) and len(w) == 2 and all(isinstance(x, (int, float)) for x in w)
            and w[0] < w[1]):
        raise _err("hu_window", f"expected [low_hu, high_hu] with low < high, got {w!r}", source)
    d["hu_window"] = [float(w[0]), float(w[1])]

    if not isinstance(d["sim"], Mapping):
        raise _err("sim", f"expected a mapping of simulator parameters, got {d['sim']!r}", source)
    if d["kind"] == "photos":
        _check_photo_sim(d["sim"], source)
    else:
        _check_sim_keys(d["sim"], source)
    if not isinstance(d["split"], Mapping):
        raise _err("split", "expected a mapping with keys val, test, seed, file", source)
    _check_keys(d["split"], SPLIT_KEYS, "data.split.", source)
    for part in ("val", "test"):
        _check_split_part(d["split"].get(part), part, source)
    if not isinstance(d["raw"], Mapping):
        raise _err("raw", "expected a mapping with keys shape, dtype, offset, spacing", source)
    _check_keys(d["raw"], RAW_KEYS, "data.raw.", source)
    d["include"] = _str_list(d["include"], "include", source)
    d["exclude"] = _str_list(d["exclude"], "exclude", source)
    if d["patient_regex"] is not None:
        import re

        try:
            if re.compile(d["patient_regex"]).groups < 1:
                raise _err("patient_regex", "needs one capture group, e.g. '(L\\d{3})'", source)
        except re.error as exc:
            raise _err("patient_regex", f"bad regular expression: {exc}", source) from None
    if not isinstance(d["patient_map"], Mapping):
        raise _err("patient_map", "expected a mapping {found_id: patient_id}", source)
    d["patient_map"] = {str(k): str(v) for k, v in d["patient_map"].items()}

    mix = _parse_mix(section.get("mix"), d, source)
    d["mix"] = [copy.deepcopy(dict(e)) for e in section.get("mix") or []]  # as given: re-parsed the same way

    resolved = copy.deepcopy(d)
    resolved["dose_range"] = list(dose_range) if dose_range else None
    return DataConfig(
        **{k: v for k, v in d.items() if k not in ("hu_window", "dose_range", "mix")},
        mix=mix,
        dose_range=dose_range,
        hu_window=Window(d["hu_window"][0], d["hu_window"][1], "net"),
        raw_dict=resolved,
    )


def _parse_mix(entries: Any, parent: dict[str, Any], source: str | None) -> list[tuple[DataConfig, float]]:
    """``data.mix``: each entry is a data section of its own (a training-only source), inheriting the
    parent's keys; ``weight`` is its share of training patches (the parent keeps the rest, at least 0.05)."""
    if entries is None or entries == []:
        return []
    if parent["kind"] in ("photos", "unpaired", "lowdose"):
        raise _err("mix", f"extra sources are for paired or simulated CT, not data.kind {parent['kind']}", source)
    if not isinstance(entries, (list, tuple)):
        raise _err("mix", f"expected a list of data sections, e.g. [{{root: DIR, weight: 0.3}}], got {entries!r}",
                   source)
    out: list[tuple[DataConfig, float]] = []
    for i, entry in enumerate(entries):
        where = f"mix[{i}]"
        if not isinstance(entry, Mapping):
            raise _err(where, f"expected a mapping with root and weight, got {entry!r}", source)
        _check_keys(entry, MIX_KEYS, f"data.{where}.", source)
        if entry.get("root") is None:
            raise _err(f"{where}.root", "each extra source needs its folder", source)
        weight = entry.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < 1:
            raise _err(f"{where}.weight", f"expected its share of training patches in (0, 1), got "
                       f"{entry.get('weight')!r}", source)
        if entry.get("kind", "auto") not in MIX_KINDS:
            raise _err(f"{where}.kind", f"expected one of {', '.join(MIX_KINDS)}, got {entry.get('kind')!r}",
                       source)
        inherited = {k: copy.deepcopy(v) for k, v in parent.items()
                     if k not in ("mix", "root", "kind", "split", "include", "exclude", "patient_regex",
                                  "patient_map", "raw", "ld_root", "nd_root", "ld_dose", "cache_dir", "adjacent")}
        inherited["hu_window"] = list(parent["hu_window"])
        if "doses" in entry and "dose_range" not in entry:
            inherited["dose_range"] = None
        sub = {**inherited, **{k: v for k, v in entry.items() if k != "weight"}, "split": {"val": 0, "test": 0}}
        try:
            out.append((parse_data_config(sub, source=source), float(weight)))
        except LdctError as exc:  # name the entry: data.X -> data.mix[i].X
            raise LdctError(exc.message.replace("data.", f"data.{where}.", 1), source) from None
    if sum(w for _, w in out) > 0.95:
        raise _err("mix", f"the weights add up to {sum(w for _, w in out):g}; the main data needs at least 0.05",
                   source)
    return out


def _check_split_part(v: Any, part: str, source: str | None) -> None:
    if v is None or isinstance(v, (list, tuple)) and all(isinstance(x, (str, int)) for x in v):
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (isinstance(v, float) and v >= 1):
        raise _err(f"split.{part}", f"expected a list of patient ids, a fraction in [0, 1) or a count, got {v!r}",
                   source)


def _check_photo_sim(sim: Mapping[str, Any], source: str | None) -> None:
    """``sim`` of photographs: ``ldct.simulate.image_noise`` parameters (see ldct.data.photos)."""
    from ldct.data.photos import PHOTO_SIM_KEYS

    _check_keys(sim, PHOTO_SIM_KEYS, "data.sim.", source)
    if sim["mode"] not in ("gaussian", "poisson-gaussian"):
        raise _err("sim.mode", f"photographs take gaussian or poisson-gaussian noise, got {sim['mode']!r}", source)
    for k in ("sigma", "gain"):
        _num({f"sim.{k}": sim[k]}, f"sim.{k}", float, source, lo=0.0)
    if sim["mode"] == "poisson-gaussian" and not sim["gain"] > 0:
        raise _err("sim.gain", "poisson-gaussian noise needs a gain > 0 (intensity units per count)", source)


def _check_sim_keys(sim: Mapping[str, Any], source: str | None) -> None:
    """Simulator keys are the keyword arguments of ``simulate_low_dose`` (minus the per-slice ones)."""
    try:
        import inspect

        from ldct.simulate import simulate_low_dose
    except ImportError:  # simulator not installed in this build: nothing to check against
        return
    params = inspect.signature(simulate_low_dose).parameters
    reserved = {"hu", "dose", "pixel_spacing_mm", "seed"}
    allowed = [p for p in params if p not in reserved and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for k in sorted(reserved & set(sim)):
        raise _err(f"sim.{k}", "is set per slice by the dataset (use data.seed for the noise seed)", source)
    _check_keys(sim, allowed, "data.sim.", source)


def validate_data_config(section: Mapping[str, Any] | None, path: Any = None) -> dict[str, Any]:
    """Validate a ``data:`` section and return it resolved (defaults filled in, plain YAML types).

    The engine calls this when loading a recipe; :func:`parse_data_config` accepts the result again.
    """
    return parse_data_config(section, source=None if path is None else str(path)).raw_dict
