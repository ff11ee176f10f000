"""The simulation manifest: ``manifest.json`` in an ``ldct simulate`` output folder.

Schema (paths relative to the manifest's folder)::

    {"kind": "ldct-simulation", "ldct_version": str, "source": str,
     "mode": "projection" | "gaussian" | "poisson-gaussian",
     "parameters": {... every simulation parameter incl. seed, i0, sigma_e, filter, geometry, downsample},
     "normal_dose": "nd...",                      # the normal-dose reference series / file
     "low_dose": {"0.25": "ld_0.25...", ...},     # one series / file per dose (keys: dose fractions)
     "records": [{"patient_id": str, "series_uid": str | None, "slice_index": int, "z_mm": float,
                  "dose": float, "ld": "ld_0.25...", "nd": "nd...", "kernel": str | None}, ...]}

:func:`write_manifest` and :func:`dose_key` live in :mod:`ldct.simulate.manifest` (re-exported here).
:func:`read_manifest` validates it and returns a copy whose paths are absolute (``str``). Every path in
a manifest is a relative path inside the manifest's folder: absolute paths and ``..`` are refused, so a
manifest can never make ldct read (or train on) files elsewhere.

A folder holding several ``ldct simulate`` outputs (``ROOT/a/manifest.json``, ``ROOT/b/manifest.json``,
...) is one data source (:mod:`ldct.data.discover` finds them, :func:`is_simulation_manifest`);
:func:`output_patient_ids` gives each output its patient id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ldct.errors import LdctError
from ldct.simulate.manifest import (  # the writer and the schema live with the simulation
    KIND,
    MANIFEST_NAME,
    MODES,  # noqa: F401  (re-exported)
    dose_key,  # noqa: F401  (re-exported)
    validate_manifest,
    write_manifest,  # noqa: F401  (re-exported)
)


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
    validate_manifest(manifest, path, check_files=True, root=root)
    out = dict(manifest)
    out["root"] = str(root.resolve())
    out["normal_dose"] = str((root / manifest["normal_dose"]).resolve())
    out["low_dose"] = {k: str((root / v).resolve()) for k, v in manifest["low_dose"].items()}
    out["records"] = [
        {**r, "ld": str((root / r["ld"]).resolve()), "nd": str((root / r["nd"]).resolve())}
        for r in manifest["records"]
    ]
    return out


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
