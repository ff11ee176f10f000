"""Find DICOM files and group them into series (by SeriesInstanceUID).

Headers are read with large values deferred, so scanning a folder does not load pixel data.
Files that are not DICOM at all (no 'DICM' marker and no DICOM tags) are skipped when scanning a
folder; files that are DICOM but broken raise :class:`LdctError` naming the file.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from ldct.errors import LdctError
from ldct.io.limits import MAX_SCAN_FILES, PSEUDO_FILESYSTEMS, check_regular_file, regular_file_size

MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR
_MARKER_TAGS = ("SOPClassUID", "Modality", "SeriesInstanceUID", "PixelData", "ImagePositionPatient", "Rows")


@dataclass
class SeriesInfo:
    """One series found in the input."""

    index: int
    uid: str
    """SeriesInstanceUID ('' when the files carry none)."""
    modality: str
    description: str
    number: int | None
    files: list[Path] = field(repr=False)
    datasets: list[Dataset] = field(repr=False)
    """Headers (pixel data deferred), parallel to ``files``."""

    def describe(self) -> str:
        uid = self.uid or "(no SeriesInstanceUID)"
        desc = f" '{self.description}'" if self.description else ""
        return f"[{self.index}] {uid} {self.modality or '?'}{desc} ({len(self.files)} files)"


def check_readable(path: Path) -> None:
    """Raise :class:`LdctError` when ``path`` does not exist or cannot be opened."""
    try:
        os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise LdctError("broken symbolic link (target does not exist)", path) from None
        raise LdctError("no such file or directory", path) from None
    except PermissionError:
        raise LdctError("permission denied", path) from None
    except OSError as exc:
        raise LdctError(f"cannot access: {exc.strerror or exc}", path) from None
    check_regular_file(path)  # before open(): a named pipe would block for ever
    if path.is_file():
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise LdctError(f"cannot read file: {exc.strerror or exc}", path) from None


def collect_files(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """All regular files named by ``inputs`` (a folder is searched recursively), sorted by path."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not items:
        raise LdctError("no input files given")
    files: list[Path] = []
    special: list[str] = []
    for item in items:
        p = Path(item)
        check_readable(p)
        if p.is_dir():
            found = []
            seen: set[str] = set()
            empty = 0
            for root, dirs, names in os.walk(p, onerror=_walk_error, followlinks=True):
                real = os.path.realpath(root)
                if real in seen or (real + "/").startswith(PSEUDO_FILESYSTEMS):  # a link loop, or to /proc
                    dirs[:] = []
                    if real not in seen:
                        special.append(os.path.basename(root))
                    continue
                seen.add(real)
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for n in sorted(names):
                    if n.startswith("."):
                        continue
                    size = regular_file_size(Path(root) / n)
                    if size is None:  # pipe, socket, device, broken link, link loop: never opened
                        special.append(n)
                    elif size == 0:  # not DICOM; never opened (a /proc file may block on read)
                        empty += 1
                    else:
                        found.append(Path(root) / n)
                if len(found) > MAX_SCAN_FILES:
                    raise LdctError(
                        f"more than {MAX_SCAN_FILES} files under this folder (searched recursively, links "
                        "followed): give the folder of one series",
                        p,
                    )
            if not found:
                what = f"only {empty} empty files" if empty else "no files"
                raise LdctError(f"folder is empty ({what} found, searched recursively)", p)
            files.extend(found)
        else:
            files.append(p)
    if special:
        shown = ", ".join(special[:3]) + (", ..." if len(special) > 3 else "")
        warnings.warn(
            f"{len(special)} {'entry' if len(special) == 1 else 'entries'} that are not a regular file (named "
            f"pipe, socket, device, broken or looping link) skipped: {shown}",
            UserWarning,
            stacklevel=2,
        )
    return files


def _walk_error(exc: OSError) -> None:
    raise LdctError(f"cannot list folder: {exc.strerror or exc}", exc.filename)


def read_header(path: Path, *, strict: bool) -> Dataset | None:
    """Read a DICOM file with pixel data deferred.

    Returns None for a file that is not DICOM when ``strict`` is False (folder scans); raises
    :class:`LdctError` for a broken DICOM file, or for any non-DICOM file when ``strict``.
    """
    try:
        ds = pydicom.dcmread(path, defer_size="4 KB")
    except InvalidDicomError:
        ds = _read_forced(path)
        if ds is None:
            if strict:
                raise LdctError("not a DICOM file (no 'DICM' marker, no DICOM tags)", path) from None
            return None
    except PermissionError:
        raise LdctError("permission denied", path) from None
    except IsADirectoryError:
        raise LdctError("is a directory, expected a DICOM file", path) from None
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise LdctError(f"corrupt or truncated DICOM file ({_short(exc)})", path) from None
    if len(ds) == 0:
        raise LdctError("DICOM file holds no data elements (truncated?)", path)
    sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    if sop == MEDIA_DIRECTORY or "DirectoryRecordSequence" in ds:
        return None  # DICOMDIR index file: not an image
    return ds


def _read_forced(path: Path) -> Dataset | None:
    """Headerless (no preamble) DICOM, as some old scanners write; None when it is not DICOM."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
        # a plausible first tag is group 0x0008 (or 0x0002) little endian
        if len(head) < 8 or head[1:2] != b"\x00" or head[0] not in (0x02, 0x08):
            return None
        ds = pydicom.dcmread(path, defer_size="4 KB", force=True)
    except Exception:
        return None
    if not any(t in ds for t in _MARKER_TAGS):
        return None
    return ds


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def scan_series(inputs: str | Path | Sequence[str | Path]) -> list[SeriesInfo]:
    """Group the DICOM files in ``inputs`` by SeriesInstanceUID.

    Series holding no image (no file with PixelData) are dropped; a folder with DICOM files but no
    image raises :class:`LdctError`. Series are ordered by SeriesNumber, then UID.
    """
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    files = collect_files(items)
    strict = not any(Path(i).is_dir() for i in items)  # a named file must be DICOM
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    skipped = 0
    for f in files:
        ds = read_header(f, strict=strict)
        if ds is None:
            skipped += 1
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        groups.setdefault(uid, []).append((f, ds))
    where = (
        Path(items[0])
        if len(items) == 1
        else Path(os.path.commonpath([str(Path(i).resolve()) for i in items]))
    )
    if not groups:
        raise LdctError(f"no DICOM files found ({skipped} other files skipped)", where)

    series: list[SeriesInfo] = []
    no_pixels: list[Path] = []
    for uid, members in groups.items():
        has_pixels = [_has_pixels(ds) for _, ds in members]
        if not any(has_pixels):
            no_pixels.extend(f for f, _ in members)
            continue
        first = members[0][1]
        num = _series_number(first, members[0][0])
        series.append(
            SeriesInfo(
                index=-1,
                uid=uid,
                modality=str(first.get("Modality", "") or ""),
                description=str(first.get("SeriesDescription", "") or ""),
                number=num,
                files=[f for f, _ in members],
                datasets=[ds for _, ds in members],
            )
        )
    if not series:
        bad = no_pixels[0]
        if len(no_pixels) == 1:
            raise LdctError("DICOM file has no PixelData (not an image, or the file is truncated)", bad)
        raise LdctError(f"none of the {len(no_pixels)} DICOM files holds PixelData (not images?)", where)
    series.sort(key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid))
    for i, s in enumerate(series):
        s.index = i
    return series


def _series_number(ds: Dataset, path: Path) -> int | None:
    num = ds.get("SeriesNumber", None)
    if num in (None, ""):
        return None
    try:
        return int(num)
    except (TypeError, ValueError):
        raise LdctError(f"SeriesNumber {str(num)!r} is not an integer (corrupt header)", path) from None


def first_item(ds: Dataset, seq: str) -> Dataset | None:
    """The first item of sequence ``seq`` in ``ds`` (None when absent or empty)."""
    if seq in ds and ds[seq].value is not None and len(ds[seq].value):
        return ds[seq].value[0]
    return None


def functional_group(ds: Dataset, frame: int, seq: str) -> Dataset | None:
    """Functional group item ``seq`` for ``frame`` of an Enhanced object (per-frame, else shared)."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and frame < len(per):
        it = first_item(per[frame], seq)
        if it is not None:
            return it
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    return first_item(shared, seq) if shared is not None else None


#: PatientIDs that de-identification tools write for every patient alike: not an identity (the AAPM-Mayo
#: DICOM say "Anonymous" for L096, L143 and L286).
PLACEHOLDER_PATIENT_IDS = {"", "anonymous", "anonymized", "anonymised", "anon", "unknown", "none", "n/a", "na",
                           "0", "patient", "noid", "removed", "deidentified", "de-identified"}


def patient_id_of(ds: Dataset) -> str | None:
    """The header's PatientID, or None when it is missing or a de-identification placeholder."""
    pid = str(ds.get("PatientID", "") or "").strip()
    return None if pid.lower().strip(" _-.") in PLACEHOLDER_PATIENT_IDS else pid


def _has_pixels(ds: Dataset) -> bool:
    return any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def select_series(series: list[SeriesInfo], choice: str | None, where: str | Path) -> SeriesInfo:
    """Pick a series by UID or 0-based index; with several series and no choice, raise listing them."""
    if choice is None or str(choice).strip() == "":
        if len(series) == 1:
            return series[0]
        listing = "; ".join(s.describe() for s in series)
        raise LdctError(f"{len(series)} series found, choose one with --series UID|INDEX: {listing}", where)
    c = str(choice).strip()
    for s in series:
        if s.uid and s.uid == c:
            return s
    if c.isdigit() and int(c) < len(series):
        return series[int(c)]
    listing = "; ".join(s.describe() for s in series)
    raise LdctError(f"no series {c!r} here; found: {listing}", where)
