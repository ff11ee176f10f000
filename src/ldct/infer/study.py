"""Whole studies (and folder trees of studies): ``ldct denoise STUDY_DIR -o OUT``.

Every DICOM series under the input is listed; the eligible ones are denoised one by one with
:func:`ldct.infer.pipeline.denoise_path`, each into its own derived series folder:

- eligible: Modality CT, an image series whose ImageType (when present) says ORIGINAL and PRIMARY and not
  LOCALIZER; skipped with the reason: localizers (scouts), derived and secondary series (earlier ldct
  outputs, reformats, secondary captures), dose reports, RTSTRUCT, SEG and other non-CT objects;
- output: ``OUT/<series>`` for one study, ``OUT/<study>/<series>`` for several (``<series>`` = the series
  number and description, ``<study>`` = patient ID, study date and the end of the StudyInstanceUID);
- resumable: an output folder that exists is complete (series are written atomically), so a second run
  skips it ("already done"); ``overwrite`` redoes it;
- a series that fails is reported with its reason and does not stop the others.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldct.errors import LdctError

#: modalities of objects that are not images to denoise (reported as such)
_NOT_IMAGES = {"SR": "structured report (dose report?)", "RTSTRUCT": "RT structure set", "SEG": "segmentation",
               "PR": "presentation state", "KO": "key object selection", "RTDOSE": "RT dose", "RTPLAN": "RT plan"}


@dataclass
class SeriesOutcome:
    """What happened to one series: ``status`` is ``denoised``, ``done`` (already there), ``skipped`` or
    ``failed``; ``reason`` says why (skipped, failed), ``output`` where it went."""

    uid: str
    label: str
    status: str
    reason: str = ""
    output: Path | None = None
    slices: int = 0
    seconds: float = 0.0


@dataclass
class StudyResult:
    outcomes: list[SeriesOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[SeriesOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def _safe(text: str, limit: int = 48) -> str:
    s = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._")
    return s[:limit] or "series"


def eligibility(info: Any) -> str | None:
    """None when the series (:class:`ldct.io.dicom_scan.SeriesInfo`) is one to denoise, else the reason."""
    modality = (info.modality or "").upper()
    if modality in _NOT_IMAGES:
        return f"not an image series ({modality}: {_NOT_IMAGES[modality]})"
    if modality and modality != "CT":
        return f"not CT (Modality {modality})"
    ds = info.datasets[0]
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        return "localizer (scout)"
    if image_type and ("DERIVED" in image_type or "SECONDARY" in image_type):
        return f"derived or secondary series (ImageType {'/'.join(image_type)})"
    sop = str(ds.get("SOPClassUID", ""))
    if sop == "1.2.840.10008.5.1.4.1.1.7":
        return "secondary capture"
    return None


def series_label(info: Any) -> str:
    ds = info.datasets[0]
    num = f"{info.number:04d}" if info.number is not None else "0000"
    return _safe(f"{num}_{info.description or ds.get('SeriesDescription', '') or 'series'}")


def study_label(info: Any) -> str:
    ds = info.datasets[0]
    uid = str(ds.get("StudyInstanceUID", "") or "")
    parts = [str(ds.get("PatientID", "") or "patient"), str(ds.get("StudyDate", "") or ""), uid.split(".")[-1][-8:]]
    return _safe("_".join(p for p in parts if p), 64)


def is_study(inp: Path) -> list[Any] | None:
    """The DICOM series under a folder when it holds more than one, else None (one series or not DICOM)."""
    from ldct.io import list_series

    if not inp.is_dir():
        return None
    try:
        found = list_series(inp)
    except LdctError:
        return None
    return found if len(found) > 1 else None


def denoise_study(inp: Path, out: Path, *, series: list[Any], denoise_one: Callable[[Any, Path], Any],
                  overwrite: bool = False, on_series: Callable[[SeriesOutcome], None] | None = None) -> StudyResult:
    """Denoise every eligible series of ``series`` (from :func:`is_study`) found under ``inp`` into ``out``.

    ``denoise_one(series_info, output_folder)`` denoises one series (``ldct denoise`` passes
    :func:`ldct.infer.pipeline.denoise_path` with its options and the series' files) and returns its result
    (``slices``).
    ``on_series(outcome)`` is called after each series (to print one line)."""
    studies = {str(s.datasets[0].get("StudyInstanceUID", "") or "") for s in series}
    result = StudyResult()
    used: set[Path] = set()
    for info in series:
        label = series_label(info)
        target = out / label if len(studies) <= 1 else out / study_label(info) / label
        k = 2
        while target in used:  # two series with the same number and description
            target = target.with_name(f"{label}_{k}")
            k += 1
        used.add(target)
        outcome = SeriesOutcome(info.uid, f"[{info.index}] {label}", "skipped")
        reason = eligibility(info)
        if reason is not None:
            outcome.reason = reason
        elif not info.uid:
            outcome.reason = "no SeriesInstanceUID (cannot be told apart from the others)"
        elif target.exists() and any(target.iterdir()) and not overwrite:
            outcome.status, outcome.output, outcome.reason = "done", target, "already done (--overwrite redoes it)"
        else:
            t0 = time.perf_counter()
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                res = denoise_one(info, target)
            except LdctError as exc:
                outcome.status, outcome.reason = "failed", exc.message
            except (OSError, ValueError, RuntimeError, MemoryError) as exc:
                outcome.status, outcome.reason = "failed", f"{type(exc).__name__}: {exc}"[:300]
            else:
                outcome.status, outcome.output = "denoised", target
                outcome.slices = int(getattr(res, "slices", 0) or 0)
            outcome.seconds = time.perf_counter() - t0
        result.outcomes.append(outcome)
        if on_series is not None:
            on_series(outcome)
    if not any(o.status in ("denoised", "done", "failed") for o in result.outcomes):
        reasons = "; ".join(f"{o.label}: {o.reason}" for o in result.outcomes)
        raise LdctError(f"no series to denoise in this folder ({reasons})", inp)
    return result
