"""Patient-level train/val/test splits, made by code from patient ids and recorded in the run folder.

Never by slice: every slice of a patient lands in the same set. The split is deterministic given the
patient ids and the seed (ids are sorted, then shuffled with ``numpy.random.default_rng(seed)``), so a
run and a later ``ldct evaluate`` agree on who was held out. A split that puts one patient in two sets is
an error (:class:`LdctError`), whether it comes from a recipe, a split file or a hand-edited split.json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ldct.atomic import atomic_file
from ldct.errors import LdctError

PARTS = ("train", "val", "test")


@dataclass
class Split:
    """Patient ids per set."""

    train: list[str]
    val: list[str]
    test: list[str]
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_disjoint({"train": self.train, "val": self.val, "test": self.test})

    def part_of(self, patient_id: str) -> str | None:
        for part in PARTS:
            if patient_id in getattr(self, part):
                return part
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "ldct-split", "seed": self.seed, "train": self.train, "val": self.val,
                "test": self.test, **self.info}


def check_disjoint(parts: Mapping[str, Sequence[str]], source: str | Path | None = None) -> None:
    """Raise :class:`LdctError` when a patient id appears in two sets (or twice in one)."""
    seen: dict[str, str] = {}
    for part, ids in parts.items():
        for pid in ids:
            if pid in seen:
                where = f"both {seen[pid]} and {part}" if seen[pid] != part else f"{part} twice"
                raise LdctError(f"patient {pid!r} is in {where}: a split must keep each patient in one set",
                                source)
            seen[pid] = part


def _pick(spec: Any, pool: list[str], all_ids: list[str], part: str, source: str | None) -> list[str]:
    """Patients for one held-out set: an explicit list, a count, or a fraction of all patients."""
    if spec is None:
        return []
    if isinstance(spec, (list, tuple)):
        ids = [str(x) for x in spec]
        unknown = [i for i in ids if i not in all_ids]
        if unknown:
            raise LdctError(f"data.split.{part}: unknown patient id(s) {', '.join(unknown)}; "
                            f"patients found: {', '.join(all_ids)}", source)
        return ids
    n_all = len(all_ids)
    if isinstance(spec, float) and spec < 1:
        n = round(spec * n_all)
        if spec > 0 and n == 0 and n_all >= 3:
            n = 1  # a held-out set exists whenever there are enough patients for one
    else:
        n = int(spec)
    if n > len(pool) - 1 and n > 0:
        raise LdctError(f"data.split.{part}: asks for {n} patient(s) but only {len(pool)} are left and at "
                        f"least one must stay for training (patients: {', '.join(all_ids)})", source)
    return pool[:n]


def make_split(patient_ids: Sequence[str], spec: Mapping[str, Any] | None = None, *,
               source: str | None = None) -> Split:
    """Split patients into train/val/test from ``spec`` ({val, test, seed, file}; see ``data.split``).

    Explicit id lists are taken as given; counts and fractions are drawn from the remaining patients in
    seeded random order (test first, then val). With ``file`` the split is read from that split.json.
    """
    spec = dict(spec or {})
    all_ids = sorted({str(p) for p in patient_ids})
    if not all_ids:
        raise LdctError("no patients to split", source)
    if spec.get("file"):
        return read_split(spec["file"], known=all_ids)
    seed = int(spec.get("seed", 0) or 0)
    explicit = {p: spec.get(p) for p in ("test", "val") if isinstance(spec.get(p), (list, tuple))}
    check_disjoint({p: [str(x) for x in v] for p, v in explicit.items()}, source)
    rng = np.random.default_rng(seed)
    order = [all_ids[i] for i in rng.permutation(len(all_ids))]
    taken = {str(x) for v in explicit.values() for x in v}
    pool = [p for p in order if p not in taken]
    test = _pick(spec.get("test"), pool, all_ids, "test", source)
    pool = [p for p in pool if p not in test]
    val = _pick(spec.get("val"), pool, all_ids, "val", source)
    held = set(test) | set(val)
    train = [p for p in all_ids if p not in held]
    if not train:
        raise LdctError(f"data.split leaves no patient for training (patients: {', '.join(all_ids)})", source)
    return Split(train=sorted(train), val=sorted(val), test=sorted(test), seed=seed)


def write_split(split: Split, run_dir: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``run_dir/split.json`` atomically; returns its path."""
    path = Path(run_dir) / "split.json"
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({**split.to_dict(), **dict(extra or {})}, indent=2) + "\n")
    return path


def read_split(path: str | Path, *, known: Sequence[str] | None = None) -> Split:
    """Read a split.json (a run folder or the file); checks it is disjoint (and ids known, if given)."""
    p = Path(path)
    if p.is_dir():
        p = p / "split.json"
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise LdctError("split file not found", p) from None
    except (OSError, ValueError) as exc:
        raise LdctError(f"cannot read split file: {exc}", p) from None
    if not isinstance(d, dict) or not all(isinstance(d.get(k, []), list) for k in PARTS):
        raise LdctError("not a split file (expected lists 'train', 'val', 'test')", p)
    parts = {k: [str(x) for x in d.get(k, [])] for k in PARTS}
    check_disjoint(parts, p)
    if known is not None:
        missing = [i for ids in parts.values() for i in ids if i not in set(known)]
        if missing and len(missing) == sum(len(v) for v in parts.values()):
            raise LdctError(f"none of the split's patients are in the data (found: {', '.join(known)})", p)
    info = {k: v for k, v in d.items() if k not in (*PARTS, "seed", "kind")}
    return Split(**parts, seed=int(d.get("seed", 0) or 0), info=info)
