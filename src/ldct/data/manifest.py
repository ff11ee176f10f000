"""The simulation manifest: ``manifest.json`` in an ``ldct simulate`` output folder.

Schema (paths relative to the manifest's folder)::

    {"kind": "ldct-simulation", "ldct_version": str, "source": str,
     "mode": "projection" | "gaussian" | "poisson-gaussian",
     "parameters": {... every simulation parameter incl. seed, i0, sigma_e, filter, geometry, downsample},
     "normal_dose": "nd...",                      # the normal-dose reference series / file
     "low_dose": {"0.25": "ld_0.25...", ...},     # one series / file per dose (keys: dose fractions)
     "records": [{"patient_id": str, "series_uid": str | None, "slice_index": int, "z_mm": float,
                  "dose": float, "ld": "ld_0.25...", "nd": "nd...", "kernel": str | None}, ...]}

:func:`read_manifest` validates it and returns a copy whose paths are absolute (``str``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
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
    _validate(manifest, out, check_files=False)
    path = out / MANIFEST_NAME
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, default=_json_default) + "\n")
    return path


def read_manifest(path_or_dir: str | Path) -> dict[str, Any]:
    """Read and validate a manifest (its file or folder); paths in the result are absolute strings.

    Raises:
        LdctError: missing / unreadable / invalid manifest, or a file it names does not exist.
    """
    p = Path(path_or_dir)
    path = p / MANIFEST_NAME if p.is_dir() else p
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise LdctError("no simulation manifest here (expected manifest.json written by `ldct simulate`)",
                        path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LdctError(f"cannot read the manifest: {exc}", path) from None
    root = path.parent
    _validate(manifest, path, check_files=True, root=root)
    out = dict(manifest)
    out["root"] = str(root.resolve())
    out["normal_dose"] = str((root / manifest["normal_dose"]).resolve())
    out["low_dose"] = {k: str((root / v).resolve()) for k, v in manifest["low_dose"].items()}
    out["records"] = [
        {**r, "ld": str((root / r["ld"]).resolve()), "nd": str((root / r["nd"]).resolve())}
        for r in manifest["records"]
    ]
    return out


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _validate(m: Any, where: Path, *, check_files: bool, root: Path | None = None) -> None:
    def bad(msg: str) -> LdctError:
        return LdctError(f"invalid simulation manifest: {msg}", where)

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
        if not (isinstance(r["dose"], (int, float)) and 0 < r["dose"] <= 1):
            raise bad(f"record {i} has dose {r['dose']!r}, expected a fraction in (0, 1]")
    if check_files and root is not None:
        paths = {m["normal_dose"], *m["low_dose"].values()} | {r[k] for r in m["records"] for k in ("ld", "nd")}
        for rel in sorted(paths):
            if not (root / rel).exists():
                raise bad(f"file {rel!r} named in it does not exist")
