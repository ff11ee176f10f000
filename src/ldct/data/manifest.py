"""The simulation manifest: ``manifest.json`` in an ``ldct simulate`` output folder.

Schema (paths relative to the manifest's folder)::

    {"kind": "ldct-simulation", "ldct_version": str, "source": str,
     "mode": "projection" | "gaussian" | "poisson-gaussian",
     "parameters": {... every simulation parameter incl. seed, i0, sigma_e, filter, geometry, downsample},
     "normal_dose": "nd...",                      # the normal-dose reference series / file
     "low_dose": {"0.25": "ld_0.25...", ...},     # one series / file per dose (keys: dose fractions)
     "records": [{"patient_id": str, "series_uid": str | None, "slice_index": int, "z_mm": float,
                  "dose": float, "ld": "ld_0.25...", "nd": "nd...", "kernel": str | None}, ...]}

:func:`read_manifest` validates it and returns a copy whose paths are absolute (``str``). Every path in
a manifest is a relative path inside the manifest's folder: absolute paths and ``..`` are refused, so a
manifest can never make ldct read (or train on) files elsewhere.

A folder holding several ``ldct simulate`` outputs (``ROOT/a/manifest.json``, ``ROOT/b/manifest.json``,
...) is one data source (:mod:`ldct.data.discover` finds them, :func:`is_simulation_manifest`);
:func:`output_patient_ids` gives each output its patient id.
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
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad UTF-8 or JSON
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


def _inside(rel: Any) -> bool:
    """``rel`` is a relative path that stays inside its folder (no absolute path, drive or ``..``)."""
    if not isinstance(rel, str) or not rel.strip() or "\0" in rel:
        return False
    posix, win = PurePosixPath(rel), PureWindowsPath(rel)
    return not (posix.is_absolute() or win.is_absolute() or win.drive or win.root or ".." in win.parts)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _validate(m: Any, where: Path, *, check_files: bool, root: Path | None = None) -> None:
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


#: largest manifest.json looked at when searching a folder (a million records is about 200 MB)
MAX_MANIFEST_BYTES = 512 * 1024**2


def is_simulation_manifest(path: str | Path) -> bool:
    """True when ``path`` is a readable JSON object of kind ``ldct-simulation`` (not validated further).

    Only a regular file of at most :data:`MAX_MANIFEST_BYTES` is opened (never a pipe or device)."""
    from ldct.io.limits import regular_file_size

    size = regular_file_size(path)
    if size is None or size > MAX_MANIFEST_BYTES:
        return False
    try:
        m = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(m, dict) and m.get("kind") == KIND


def output_patient_ids(manifests: list[dict[str, Any]], root: str | Path) -> list[dict[str, str]]:
    """For each manifest (as :func:`read_manifest` returns it): its records' patient id -> the id to use.

    A record's id is kept (a DICOM PatientID: two outputs of one patient stay one patient), except an
    id that ``ldct simulate`` guessed from the input's file name (``P1/ct.npy`` and ``P2/ct.npy`` both
    give ``ct``) and that outputs of different inputs share: those take the output folder's path
    relative to ``root`` (``P1``, ``P2``).
    """
    base = Path(root).resolve()

    def guessed(m: dict[str, Any], pid: str) -> bool:
        if isinstance(m.get("patient_id_guessed"), bool):  # written by ldct simulate since 0.1.0 session 6
            return m["patient_id_guessed"]
        return pid == Path(str(m.get("source", ""))).name.split(".")[0]  # older manifests

    sources: dict[str, set[str]] = {}
    for m in manifests:
        for pid in {str(r["patient_id"]) for r in m["records"]}:
            if guessed(m, pid):
                sources.setdefault(pid, set()).add(str(m.get("source")))
    out = []
    for m in manifests:
        folder = Path(m["root"])
        rel = folder.relative_to(base).as_posix() if base in folder.parents else folder.name
        ids = {}
        for pid in {str(r["patient_id"]) for r in m["records"]}:
            ids[pid] = rel if guessed(m, pid) and len(sources.get(pid, ())) > 1 else pid
        out.append(ids)
    return out
