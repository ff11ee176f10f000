"""Find CT scans in a data folder and name the patient each belongs to.

:func:`discover` walks a root folder and returns one :class:`Scan` per CT volume: a DICOM series
(grouped by SeriesInstanceUID, or by folder when files carry none), a NIfTI file, a ``.npy`` volume, or a
group of per-slice ``.raw``/``.npy`` files (``L067_FD_3mm_sharp_000039.raw`` ... grouped by their name
without the trailing slice number). Pixel data is not read here; :meth:`Scan.load` reads it through
``ldct.io.read_volume``.

Patient ids, in order of preference: ``patient_regex`` (first capture group on the path relative to the
root); the DICOM PatientID (unless a de-identification placeholder such as ``Anonymous``); a well-known id in the file name (AAPM-Mayo / TCIA LDCT ``L067``, ``C002``,
``N001``); for DICOM without a PatientID a stable id from the StudyInstanceUID, else the series folder;
else the file (or per-slice group) name without dose tokens, or its top-level folder when files of that
name lie in several top-level folders (``P1/full/ct.npy``, ``P2/full/ct.npy`` -> ``P1``, ``P2``).
``patient_map`` then renames ids (to merge two scans of one person).

The dose role of a scan (``nd`` full dose / ``ld`` low dose) matters for paired data and keeps low-dose
scans out of the normal-dose pool of simulated training. ldct's own outputs are recognised by what they
are, never by the word "ldct": a scan inside an ``ldct simulate`` output folder takes role, dose and
patient id from that folder's ``manifest.json``; a DICOM series that ldct derived (ImageType DERIVED,
DerivationDescription ``ldct simulated 25% dose (...); derived from series ... by ldct 0.1.0``) from its
DerivationDescription / SeriesDescription (``simulated N% dose`` -> low dose N %, ``normal-dose
reference`` -> normal dose). Other scans: tokens in the path or series description (``full``, ``FD``,
``NDCT``, ``normal dose`` / ``quarter``, ``QD``, ``low dose``, ``half``, ``tenth``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ldct.errors import LdctError
from ldct.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SKIP_SUFFIXES = {".json", ".csv", ".txt", ".md", ".yaml", ".yml", ".py", ".png", ".jpg", ".jpeg", ".tif",
                 ".tiff", ".gif", ".html", ".pdf", ".zip", ".gz", ".tar", ".xml", ".log", ".safetensors", ".pt",
                 ".mat", ".h5", ".hdf5", ".mha", ".mhd", ".nrrd", ".bmp", ".svg"}
_KNOWN_ID = re.compile(r"(?<![A-Za-z0-9])([LCN]\d{3})(?![0-9])")
_SLICE_NUM = re.compile(r"^(.*?)[_\-.]?(\d+)$")
_KERNEL = re.compile(r"(?<![A-Za-z])(sharp|smooth|soft|standard|bone|lung)(?![A-Za-z])", re.IGNORECASE)
ND_TOKENS = re.compile(r"(?<![A-Za-z])(full[ _-]?dose|normal[ _-]?dose|full|fd|ndct|normal|hd)(?![A-Za-z])", re.IGNORECASE)
LD_TOKENS = re.compile(r"(?<![A-Za-z])((?:quarter|low|half|tenth)[ _-]?dose|quarter|qd|low|half|tenth)"
                        r"(?![A-Za-z])", re.IGNORECASE)
_DOSE_FROM_TOKEN = {"quarter": 0.25, "qd": 0.25, "half": 0.5, "tenth": 0.1}
# what ldct's writers state about a derived series (ldct.simulate.scan -> ldct.io.dicom_write)
_SIM_LD = re.compile(r"(?<![A-Za-z])simulated (\d+(?:\.\d+)?) ?% dose(?![A-Za-z])", re.IGNORECASE)
_SIM_ND = re.compile(r"(?<![A-Za-z])normal[ -]dose (?:reference|\(reference for ldct simulation\))", re.IGNORECASE)
_BY_LDCT = re.compile(r"\bby ldct \S+$")


@dataclass
class Scan:
    """One CT volume found on disk (pixels not loaded)."""

    patient_id: str
    fmt: str
    """'dicom' | 'nifti' | 'npy' | 'raw'"""
    files: tuple[Path, ...]
    """The DICOM files of the series, the one volume file, or the per-slice files in slice order."""
    name: str
    """Path relative to the data root (folder of a DICOM series, file, or per-slice group stem)."""
    series_uid: str | None = None
    kernel: str | None = None
    role: str | None = None
    """'nd', 'ld' or None (unknown: treated as normal dose)."""
    role_dose: float | None = None
    """Dose fraction named in the path (quarter -> 0.25), for low-dose scans."""
    n_slices: int | None = None
    slice_numbers: tuple[int, ...] | None = None
    """For per-slice groups: the number in each file name (slice position proxy)."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    study_uid: str | None = None
    description: str = ""
    """DICOM SeriesDescription (used for the dose role)."""
    derivation: str = ""
    """DICOM DerivationDescription (what ldct states about the series it derived)."""
    image_type: tuple[str, ...] = ()
    """DICOM ImageType values (upper case)."""
    manifest: Path | None = None
    """The ``manifest.json`` of the ``ldct simulate`` output that holds this scan (None otherwise)."""

    @property
    def key(self) -> str:
        """Stable identity for caches: relative name + size and mtime of the files."""
        h = hashlib.sha1(self.name.encode())
        for f in self.files[:1] + self.files[-1:]:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}:{len(self.files)}".encode())
        return h.hexdigest()[:16]

    @property
    def contiguous(self) -> bool:
        """False for per-slice groups whose slice numbers skip (neighbours are not adjacent slices)."""
        if self.slice_numbers is None:
            return True
        d = np.diff(self.slice_numbers)
        return bool(len(d) == 0 or np.all(d == 1))

    def load(self) -> Volume:
        """Read the voxels (HU, (z, y, x)) with ``ldct.io.read_volume``."""
        from ldct.io import read_volume

        if self.fmt == "dicom":
            return read_volume(list(self.files))
        if self.fmt in ("nifti",) or (self.fmt == "npy" and len(self.files) == 1):
            return read_volume(self.files[0])
        kw: dict[str, Any] = {}
        if self.fmt == "raw":
            shape = tuple(int(s) for s in self.raw.get("shape", ()))
            sp = self.raw.get("spacing")
            kw = {"raw_shape": shape, "raw_dtype": str(self.raw.get("dtype", "uint16")),
                  "raw_offset": float(self.raw.get("offset", 0.0)),
                  "raw_spacing": tuple(float(s) for s in sp) if sp else None}
        vols = [read_volume(f, **kw) for f in self.files]
        first = vols[0]
        for f, v in zip(self.files, vols):
            if v.data.shape[1:] != first.data.shape[1:]:
                raise LdctError(f"slice shape {v.data.shape[1:]} differs from {first.data.shape[1:]} of "
                                f"{self.files[0].name} in the same group", f)
        data = np.concatenate([v.data for v in vols], axis=0)
        dz = first.spacing[0]
        nums = self.slice_numbers or tuple(range(len(vols)))
        positions = np.asarray([[0.0, 0.0, n * dz] for n in nums])
        return Volume(data, spacing=first.spacing, positions=positions, is_hu=first.is_hu,
                      meta={**first.meta, "source_path": str(self.files[0].parent), "kernel": self.kernel})


def discover(root: str | Path, *, include: list[str] | None = None, exclude: list[str] | None = None,
             raw: dict[str, Any] | None = None, patient_regex: str | None = None,
             patient_map: dict[str, str] | None = None) -> list[Scan]:
    """All CT scans under ``root`` (a folder or one file), sorted by patient id then name.

    ``include``/``exclude`` are glob patterns on the path relative to the root (``*`` crosses folders).
    Raises :class:`LdctError` naming ``root`` when it is missing or holds no CT.
    """
    root = Path(root)
    if not root.exists():
        raise LdctError("data path does not exist", root)
    base = root if root.is_dir() else root.parent
    files = _walk(root)
    outputs = _simulate_outputs(root, base, files)
    named = {p for out in outputs.values() for p in out}  # files/folders that ldct simulate outputs name
    rel = {f: f.relative_to(base).as_posix() for f in files}
    tops = _top_folders([rel[f] for f in files])  # before filtering, so ids do not depend on include/exclude
    if include:
        files = [f for f in files if any(fnmatch.fnmatch(rel[f], p) for p in include)]
    if exclude:
        files = [f for f in files if not any(fnmatch.fnmatch(rel[f], p) for p in exclude)]

    scans: list[Scan] = []
    slices: dict[tuple[str, str, str], list[tuple[int, Path]]] = {}
    dicom_candidates: list[Path] = []
    for f in files:
        name = f.name.lower()
        if name.endswith(NIFTI_SUFFIXES):
            scans.append(Scan(_file_patient(rel[f]), "nifti", (f,), rel[f], kernel=_kernel(rel[f])))
        elif name.endswith(".npy"):
            ndim = len(np.load(f, mmap_mode="r").shape)
            if ndim == 3 or (ndim == 2 and _real(f) in named):  # an output's 2-D .npy is one scan, not a slice
                scans.append(Scan(_file_patient(rel[f]), "npy", (f,), rel[f], kernel=_kernel(rel[f])))
            elif ndim == 2:
                _add_slice(slices, "npy", f, rel[f])
        elif name.endswith(".raw"):
            _add_slice(slices, "raw", f, rel[f])
        elif f.suffix.lower() in SKIP_SUFFIXES or name.endswith(".nii.gz"):
            continue
        else:
            dicom_candidates.append(f)
    scans.extend(_dicom_scans(dicom_candidates, base))
    for (fmt, folder, stem), members in sorted(slices.items()):
        members.sort()
        name = f"{folder}/{stem}" if folder else stem
        spec = dict(raw or {}) if fmt == "raw" else {}
        if fmt == "raw":
            _check_raw_sizes([p for _, p in members], spec)
        scans.append(Scan(_file_patient(name), fmt, tuple(p for _, p in members), name, kernel=_kernel(name),
                          n_slices=len(members), slice_numbers=tuple(n for n, _ in members), raw=spec))
    if not scans:
        raise LdctError("no CT found here (looked for DICOM series, NIfTI, .npy volumes or slices, .raw slices)",
                        root)
    _folder_ids(scans, tops, base.name)
    _attach_outputs(scans, outputs)
    for s in scans:
        s.role, s.role_dose = _scan_role(s)
        if s.manifest is not None:  # the manifest knows what each file of an ldct simulate output is
            s.role, s.role_dose, s.patient_id = outputs[_real(s.manifest)][scan_path(s)]
        if patient_regex:
            m = re.search(patient_regex, s.name)
            if m:
                s.patient_id = m.group(1)
        s.patient_id = (patient_map or {}).get(s.patient_id, s.patient_id)
    scans.sort(key=lambda s: (s.patient_id, s.name))
    return scans


def _top_folders(rels: list[str]) -> dict[str, set[str]]:
    """Candidate patient id of each volume/slice file -> the top-level folders it occurs in."""
    tops: dict[str, set[str]] = {}
    for r in rels:
        low = r.lower()
        if "/" in r and low.endswith((*NIFTI_SUFFIXES, ".npy", ".raw")):
            folder, name = r.rsplit("/", 1)
            m = _SLICE_NUM.match(name.rsplit(".", 1)[0])
            stem = m.group(1) if m and m.group(1) else name
            tops.setdefault(_file_patient(f"{folder}/{stem}"), set()).add(r.split("/", 1)[0])
    return tops


def _folder_ids(scans: list[Scan], tops: dict[str, set[str]], root_name: str) -> None:
    """Files named alike in several top-level folders (``P1/full/ct.npy``, ``P2/full/ct.npy``) take the
    top-level folder as patient id; when those folders only name doses (``full_dose/ct.npy``,
    ``quarter_dose/ct.npy``) the root folder names the patient. DICOM ids (from headers) are left alone."""
    for s in scans:
        if s.fmt == "dicom" or _KNOWN_ID.search(s.name):
            continue
        folders = tops.get(s.patient_id, set())
        plain = {t for t in folders if _role(t)[0] is None}
        top = s.name.split("/", 1)[0] if "/" in s.name else ""
        if len(plain) > 1 and top in plain:
            s.patient_id = top
        elif len(folders) > 1 and not plain:
            s.patient_id = root_name


def _walk(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    out: list[Path] = []
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        out.extend(Path(d) / n for n in sorted(names) if not n.startswith("."))
    return out


def _file_patient(rel: str) -> str:
    m = _KNOWN_ID.search(rel)
    if m:
        return m.group(1)
    stem = rel.rsplit("/", 1)[-1]
    for suf in (".nii.gz", ".nii", ".npy", ".raw"):
        if stem.lower().endswith(suf):
            stem = stem[: -len(suf)]
    bare = ND_TOKENS.sub("", LD_TOKENS.sub("", stem)).strip("_-. ")
    return re.sub(r"[_\-. ]{2,}", "_", bare) or stem


def _kernel(text: str) -> str | None:
    m = _KERNEL.search(text)
    return m.group(1).lower() if m else None


def _scan_role(s: Scan) -> tuple[str | None, float | None]:
    """Role of a scan from what it is (ldct-derived DICOM: its derivation), else from dose tokens."""
    if s.fmt == "dicom":
        derived = "DERIVED" in s.image_type[:1]
        # what ldct did comes first in its DerivationDescription: "<what>; derived from series ... by ldct V"
        what = s.derivation.split(";", 1)[0] if _BY_LDCT.search(s.derivation) else ""
        for text in (what, s.description if derived or what else "", s.derivation):
            m = _SIM_LD.search(text)
            if m:
                return "ld", float(m.group(1)) / 100.0
            if _SIM_ND.search(text):
                return "nd", None
    return _role(f"{s.name} {s.description}")


def _real(p: Path) -> Path:
    return Path(os.path.realpath(p))


def scan_path(s: Scan) -> Path:
    """The path a manifest names for a scan: its folder (DICOM series) or its file."""
    return _real(s.files[0].parent if s.fmt == "dicom" else s.files[0])


def _simulate_outputs(root: Path, base: Path,
                      files: list[Path]) -> dict[Path, dict[Path, tuple[str, float | None, str]]]:
    """The ``ldct simulate`` outputs among ``files`` (for a file root: its folder's manifest): per manifest,
    the (role, dose, patient id) of each path it names (series folder or file)."""
    from ldct.data.manifest import MANIFEST_NAME, is_simulation_manifest, output_patient_ids, read_manifest

    candidates = files if root.is_dir() else [base / MANIFEST_NAME]
    paths = sorted(f for f in candidates if f.name == MANIFEST_NAME and is_simulation_manifest(f))
    if not paths:
        return {}
    mans = [read_manifest(p) for p in paths]  # an invalid ldct manifest is an error naming it
    ids = output_patient_ids(mans, base)
    out: dict[Path, dict[Path, tuple[str, float | None, str]]] = {}
    for p, m, pid_of in zip(paths, mans, ids):
        named: dict[Path, tuple[str, float | None, str]] = {}
        for r in m["records"]:
            pid = pid_of[str(r["patient_id"])]
            named.setdefault(_real(Path(r["nd"])), ("nd", None, pid))
            named[_real(Path(r["ld"]))] = ("ld", float(r["dose"]), pid)
        out[_real(p)] = named
    return out


def _attach_outputs(scans: list[Scan], out: dict[Path, dict[Path, Any]]) -> None:
    """Set ``scan.manifest`` of the scans that an ``ldct simulate`` output names."""
    for s in scans:
        where = scan_path(s)
        for p, named in out.items():
            if where in named:
                s.manifest = p
                break


def _role(text: str) -> tuple[str | None, float | None]:
    ld = LD_TOKENS.search(text)
    if ld:
        return "ld", _DOSE_FROM_TOKEN.get(re.split(r"[ _-]", ld.group(1).lower())[0])
    if ND_TOKENS.search(text):
        return "nd", None
    return None, None


def _add_slice(groups: dict, fmt: str, f: Path, rel: str) -> None:
    folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
    stem = f.name[: -len(f.suffix)]
    m = _SLICE_NUM.match(stem)
    key, num = (m.group(1), int(m.group(2))) if m and m.group(1) else (stem, 0)
    groups.setdefault((fmt, folder, key), []).append((num, f))


def _check_raw_sizes(files: list[Path], spec: dict[str, Any]) -> None:
    shape = spec.get("shape")
    if not shape:
        raise LdctError("raw slices need data.raw.shape (and dtype, offset, spacing)", files[0])
    expected = int(np.prod(shape)) * np.dtype(spec.get("dtype", "uint16")).itemsize
    for f in files:
        size = f.stat().st_size
        if size != expected:
            raise LdctError(f"raw file has {size} bytes but data.raw {{shape: {list(shape)}, dtype: "
                            f"{spec.get('dtype', 'uint16')}}} needs {expected}; set data.raw to match", f)


def _dicom_scans(files: list[Path], base: Path) -> list[Scan]:
    if not files:
        return []
    from ldct.io.dicom_scan import patient_id_of, read_header

    groups: dict[tuple[str, str], list[tuple[Path, Any]]] = {}
    for f in files:
        ds = read_header(f, strict=False)
        if ds is None or not any(t in ds for t in ("PixelData", "FloatPixelData")):
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        folder = f.parent.relative_to(base).as_posix() if f.parent != base else "."
        # without a UID, files of one folder form one series
        groups.setdefault((uid, "" if uid else folder), []).append((f, ds))
    scans = []
    for (uid, folder), members in groups.items():
        ds = members[0][1]
        folders = sorted({m[0].parent for m in members})
        rel_folder = folders[0].relative_to(base).as_posix() if folders[0] != base else base.name
        pid = patient_id_of(ds) or ""  # a de-identification placeholder ("Anonymous") is no identity
        study = str(ds.get("StudyInstanceUID", "") or "").strip()
        if not pid:
            m = _KNOWN_ID.search(rel_folder)
            if m:
                pid = m.group(1)
            elif study:
                pid = "study-" + hashlib.sha1(study.encode()).hexdigest()[:8]
            else:
                pid = rel_folder.split("/")[0] if rel_folder != "." else base.name
        kernel = ds.get("ConvolutionKernel", None)
        if kernel is not None and not isinstance(kernel, str):
            kernel = "/".join(str(k) for k in kernel)
        desc = str(ds.get("SeriesDescription", "") or "")
        image_type = ds.get("ImageType", None)
        image_type = [image_type] if isinstance(image_type, str) else list(image_type or [])
        scans.append(Scan(pid, "dicom", tuple(sorted(m[0] for m in members)), rel_folder,
                          series_uid=uid or None, kernel=str(kernel) if kernel else _kernel(rel_folder),
                          n_slices=len(members), description=desc, study_uid=study or None,
                          derivation=str(ds.get("DerivationDescription", "") or ""),
                          image_type=tuple(str(t).strip().upper() for t in image_type)))
    return scans


def describe(scans: list[Scan]) -> list[dict[str, Any]]:
    """JSON-friendly listing (for summaries and split.json)."""
    return [{"patient_id": s.patient_id, "name": s.name, "format": s.fmt, "series_uid": s.series_uid,
             "kernel": s.kernel, "role": s.role, "role_dose": s.role_dose, "n_files": len(s.files),
             "simulate_output": str(s.manifest.parent) if s.manifest else None} for s in scans]


def patients(scans: list[Scan], keep: Callable[[Scan], bool] | None = None) -> list[str]:
    """Sorted distinct patient ids (of the scans ``keep`` accepts)."""
    return sorted({s.patient_id for s in scans if keep is None or keep(s)})
