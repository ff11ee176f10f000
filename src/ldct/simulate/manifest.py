"""Writing the simulation manifest: ``manifest.json`` in an ``ldct simulate`` output folder.

The schema (paths relative to the manifest's folder, each a relative path inside it) is described in
:mod:`ldct.data.manifest`, which reads manifests back for training and evaluation. The writer and the
schema check live here so the simulation does not import the data package.
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ldct.atomic import atomic_file
from ldct.errors import LdctError

MANIFEST_NAME = "manifest.json"
KIND = "ldct-simulation"
MODES = ("projection", "gaussian", "poisson-gaussian")
_TOP = ("kind", "ldct_version", "source", "mode", "parameters", "normal_dose", "low_dose", "records")
_RECORD = ("patient_id", "series_uid", "slice_index", "z_mm", "dose", "ld", "nd", "kernel")


def dose_key(dose: float) -> str:
    """Manifest / file-name key of a dose fraction: 0.25 -> "0.25", 1/3 -> "0.3333"."""
    return f"{float(dose):.4f}".rstrip("0").rstrip(".") if dose < 1 else "1"


def write_manifest(out_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Validate ``manifest`` and write it (atomically) as ``out_dir/manifest.json``; returns the path."""
    out = Path(out_dir)
    validate_manifest(manifest, out, check_files=False)
    path = out / MANIFEST_NAME
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, default=_json_default) + "\n")
    return path


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _inside(rel: Any) -> bool:
    """``rel`` is a relative path that stays inside its folder (no absolute path, drive or ``..``)."""
    if not isinstance(rel, str) or not rel.strip() or "\0" in rel:
        return False
    posix, win = PurePosixPath(rel), PureWindowsPath(rel)
    return not (posix.is_absolute() or win.is_absolute() or win.drive or win.root or ".." in win.parts)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_manifest(m: Any, where: Path, *, check_files: bool, root: Path | None = None) -> None:
    """Check a manifest against the schema (and, with ``check_files``, that the files it names exist under
    ``root``); LdctError naming ``where`` otherwise."""
    def bad(msg: str) -> LdctError:
        return LdctError(f"invalid simulation manifest: {msg}", where)

    def path_ok(rel: Any, what: str) -> None:
        if not _inside(rel):
            raise bad(f"{what} {str(rel)[:120]!r} is not a relative path inside the manifest's folder")

    if not isinstance(m, dict):
        raise bad("not a JSON object")
    missing = [k for k in _TOP if k not in m]
    if missing:
        raise bad(f"missing keys {', '.join(missing)}")
    if m["kind"] != KIND:
        raise bad(f"kind is {m['kind']!r}, expected {KIND!r}")
    if m["mode"] not in MODES:
        raise bad(f"mode {m['mode']!r} is not one of {', '.join(MODES)}")
    if not isinstance(m["parameters"], dict):
        raise bad("parameters must be an object")
    if not isinstance(m["low_dose"], dict) or not m["low_dose"]:
        raise bad("low_dose must map dose fractions to paths")
    path_ok(m["normal_dose"], "normal_dose")
    for k, v in m["low_dose"].items():
        path_ok(v, f"low_dose[{k!r}]")
    for k in m["low_dose"]:
        try:
            d = float(k)
        except ValueError:
            raise bad(f"low_dose key {k!r} is not a dose fraction") from None
        if not (math.isfinite(d) and 0 < d <= 1):
            raise bad(f"low_dose key {k!r} is not a dose fraction in (0, 1]")
    if not isinstance(m["records"], list):
        raise bad("records must be a list")
    for i, r in enumerate(m["records"]):
        if not isinstance(r, dict) or any(k not in r for k in _RECORD):
            raise bad(f"record {i} lacks one of {', '.join(_RECORD)}")
        if not (_is_number(r["dose"]) and 0 < r["dose"] <= 1):
            raise bad(f"record {i} has dose {r['dose']!r}, expected a fraction in (0, 1]")
        if not (isinstance(r["slice_index"], int) and not isinstance(r["slice_index"], bool) and r["slice_index"] >= 0):
            raise bad(f"record {i} has slice_index {str(r['slice_index'])[:40]!r}, expected a whole number >= 0")
        if not _is_number(r["z_mm"]):
            raise bad(f"record {i} has z_mm {str(r['z_mm'])[:40]!r}, expected a number")
        if not isinstance(r["patient_id"], (str, int)) or isinstance(r["patient_id"], bool):
            raise bad(f"record {i} has patient_id {str(r['patient_id'])[:40]!r}, expected a text")
        if r["series_uid"] is not None and not isinstance(r["series_uid"], str):
            raise bad(f"record {i} has series_uid {str(r['series_uid'])[:40]!r}, expected a text or null")
        for side in ("ld", "nd"):
            path_ok(r[side], f"record {i} {side}")
    if check_files and root is not None:
        paths = {m["normal_dose"], *m["low_dose"].values()} | {r[k] for r in m["records"] for k in ("ld", "nd")}
        for rel in sorted(paths):
            if not (root / rel).exists():
                raise bad(f"file {rel!r} named in it does not exist")
