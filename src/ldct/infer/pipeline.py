"""``ldct denoise`` as a library call: read a scan, denoise it with a model, write the same kind of output.

:func:`denoise_path` checks everything a user can get wrong *before* the (slow) network runs: the input
exists and is CT in HU, the output does not lie inside the input series folder, the output does not
exist (unless ``overwrite``), the dose is in (0, 1]. The output is written atomically by ``ldct.io``
(a DICOM series appears complete or not at all); the input is only ever read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ldct.atomic import atomic_file, is_inside
from ldct.denoiser import Denoiser, Progress, auto_precision, resolve_device
from ldct.errors import LdctError
from ldct.hu import DISPLAY_WINDOWS, to_display
from ldct.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def output_kind(path: Path) -> str:
    """'dicom' (a folder: no suffix), 'nifti', 'npy' - from the path's name."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(".npy"):
        return "npy"
    if path.suffix == "" or path.is_dir():
        return "dicom"
    raise LdctError("unsupported output: use a folder (DICOM series), .nii/.nii.gz or .npy", path)


def check_dose(dose: float | None) -> None:
    if dose is not None and not (math.isfinite(dose) and 0.0 < dose <= 1.0):
        raise LdctError(f"--dose {dose:g}: must be a dose fraction in (0, 1] (e.g. 0.25 for quarter dose)")


def check_paths(inp: Path, out: Path, *, overwrite: bool, preview: Path | None = None,
                qa: Path | None = None) -> None:
    """Input exists; outputs are not the input, not inside the input folder, not already there."""
    if not inp.exists():
        raise LdctError("input not found", inp)
    extra = [x for x in (preview, qa) if x is not None]
    if qa is not None:
        if qa.suffix.lower() != ".json":
            raise LdctError("--qa writes a .json file (and a .png beside it)", qa)
        if qa.with_suffix(".png").resolve() in {t.resolve() for t in [out] + extra}:
            raise LdctError("--qa must differ from the output and the preview", qa)
        extra.append(qa.with_suffix(".png"))
    for target in [out] + extra:
        if target.resolve() == inp.resolve() or (inp.is_dir() and is_inside(target, inp)):
            raise LdctError("output must not be the input or lie inside the input series folder", target)
        if is_inside(inp, target):
            raise LdctError("output must not be a folder that contains the input", target)
    if preview is not None and preview.resolve() == out.resolve():
        raise LdctError("--preview must differ from the output", preview)
    if len({t.resolve() for t in [out] + extra}) < 1 + len(extra):
        raise LdctError("the output, --preview and --qa must be different files", out)
    if not overwrite:
        if out.exists() and not (out.is_dir() and not any(out.iterdir())):
            raise LdctError("output already exists (pass --overwrite to replace it)", out)
        for x in extra:
            if x.exists():
                raise LdctError("already exists (pass --overwrite to replace it)", x)


def check_ct(vol: Volume, path: Path) -> None:
    """Refuse anything that is not single-channel CT in HU."""
    modality = str(vol.meta.get("modality") or "").upper()
    if modality and modality != "CT":
        raise LdctError(f"not a CT series (Modality {modality}); ldct denoises CT in Hounsfield units", path)
    if not vol.is_hu or vol.channels != 1:
        raise LdctError("not CT in Hounsfield units (an ordinary image?); ldct denoises CT", path)
    if min(vol.shape[1:3]) < 16:
        raise LdctError(f"slices of {vol.shape[1]}x{vol.shape[2]} pixels are too small to denoise", path)


@dataclass
class DenoiseResult:
    output: Path
    slices: int
    shape: tuple[int, ...]
    seconds: float
    model: str
    device: str
    dose: float | None
    dose_how: str
    noise_before: float | None
    noise_after: float | None
    noise_how: str
    preview: Path | None = None
    #: what ``adapt_steps`` did (None: no adaptation)
    adapt: Any = None
    #: the ``--qa`` JSON written (its PNG beside it)
    qa: Path | None = None

    @property
    def slices_per_s(self) -> float:
        return self.slices / self.seconds if self.seconds > 0 else float("inf")


def noise_before_after(before: np.ndarray, after: np.ndarray, max_slices: int = 16) -> tuple[
    float | None, float | None, str
]:
    """Noise std (HU) of two aligned (z, y, x) volumes in the same body soft-tissue ROI.

    The ROI (``ldct.metrics.noise.soft_tissue_roi``: flat tissue in [-100, 150] HU inside the body) is
    chosen on the Gaussian-smoothed input, on at most ``max_slices`` evenly spread slices; noise is the
    std of a Gaussian high-pass (sigma 2 px, white-noise gain removed) in that ROI, for both volumes.
    """
    from scipy import ndimage as ndi

    from ldct.metrics.noise import noise_std_hu, soft_tissue_roi

    z = before.shape[0]
    idx = np.unique(np.linspace(0, z - 1, min(max_slices, z)).round().astype(int))
    b, a = before[idx].astype(np.float32), after[idx].astype(np.float32)
    roi = soft_tissue_roi(ndi.gaussian_filter(b, (0, 2, 2)))
    if roi.sum() < 50:
        return None, None, "no flat soft tissue found inside the body"
    how = (f"high-pass (Gaussian sigma 2 px) std in flat body soft tissue [-100, 150] HU, "
           f"{int(roi.sum())} px on {len(idx)} slices")
    return float(noise_std_hu(b, roi=roi)), float(noise_std_hu(a, roi=roi)), how


def write_preview(before: np.ndarray, after: np.ndarray, path: Path, *, labels: tuple[str, str]) -> Path:
    """Before | after PNG of one (y, x) HU slice pair in the soft-tissue window (C40/W400), atomically."""
    from PIL import Image, ImageDraw

    win = DISPLAY_WINDOWS["soft"]
    a, b = to_display(before, win), to_display(after, win)
    gap = np.full((a.shape[0], 8), 255, dtype=np.uint8)
    img = Image.fromarray(np.concatenate([a, gap, b], axis=1), mode="L").convert("RGB")
    draw = ImageDraw.Draw(img)
    for x0, text in ((4, labels[0]), (a.shape[1] + 12, labels[1])):
        draw.text((x0 + 1, 5), text, fill=(0, 0, 0))
        draw.text((x0, 4), text, fill=(255, 255, 0))
    draw.text((4, a.shape[0] - 14), f"window {win.describe()}", fill=(255, 255, 0))
    with atomic_file(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def denoise_path(
    inp: Path,
    out: Path,
    *,
    model: Denoiser,
    dose: float | None = None,
    device: str = "auto",
    batch_size: int = 4,
    tile: int | None = None,
    overlap: int = 32,
    precision: str = "auto",
    series: str | None = None,
    overwrite: bool = False,
    preview: Path | None = None,
    reference_ctdivol: float | None = None,
    reference_mas: float | None = None,
    reference_noise_hu: float | None = None,
    progress: Progress | None = None,
    on_start: Callable[[Volume, float | None, str], Any] | None = None,
    compress: bool | None = None,
    adapt_steps: int = 0,
    adapt_seconds: float | None = None,
    adapt_seed: int = 0,
    adapt_progress: Progress | None = None,
    qa: Path | None = None,
    files: list[Path] | None = None,
) -> DenoiseResult:
    """Denoise the scan at ``inp`` with ``model`` and write it to ``out`` (same kind: DICOM/NIfTI/npy).

    ``on_start(vol, dose, how)`` is called once the input is read and the dose is known (to print it).
    A DICOM output gets its own SeriesNumber (the input's + 5000) and is compressed losslessly when
    the input was compressed or ``compress`` is True. ``adapt_steps`` > 0 first fine-tunes a copy of the
    model on this scan, self-supervised (:func:`ldct.infer.adapt.adapt`; at most ``adapt_seconds``, seeded
    by ``adapt_seed``); the model given is not changed. ``qa`` writes reference-free quality figures
    (:mod:`ldct.infer.qa`: noise and NPS before/after, structure score) as JSON, and a PNG beside it.
    ``files`` (the DICOM files of one series of ``inp``, as :func:`ldct.io.list_series` found them) are
    read instead of searching ``inp`` again.
    Raises :class:`LdctError` for every user mistake, before any output is written.
    """
    from ldct.io import read_volume, write_volume
    from ldct.io.dicom_attrs import derived_series_number

    inp, out = Path(inp), Path(out)
    check_dose(dose)
    check_paths(inp, out, overwrite=overwrite, preview=preview, qa=qa)
    output_kind(out)
    if qa is not None and model.scale != 1:
        raise LdctError("--qa measures denoisers, not super-resolution models", qa)
    dev = resolve_device(device)
    if precision == "auto":
        precision = auto_precision(dev)
    vol = read_volume(files if files is not None else inp, series=None if files is not None else series)
    check_ct(vol, inp)
    used_dose, how = model.dose_for(vol, dose, reference_ctdivol=reference_ctdivol, reference_mas=reference_mas,
                                    reference_noise_hu=reference_noise_hu)
    if on_start is not None:
        on_start(vol, used_dose, how)
    report = None
    if adapt_steps:
        from ldct.infer.adapt import adapt

        model, report = adapt(model, vol.data, steps=adapt_steps, seconds=adapt_seconds, seed=adapt_seed,
                              dose=used_dose, device=dev, progress=adapt_progress)
    t0 = time.perf_counter()
    data = model.denoise_array(vol.data, used_dose, batch_size=batch_size, tile=tile, overlap=overlap, device=dev,
                               precision=precision, progress=progress)
    seconds = time.perf_counter() - t0
    result_vol = model.output_volume(vol, data)
    knobs = (f", strength {model.strength:g}" if model.strength != 1 else "") + (
        f", grain {model.grain:g}" if model.grain else "") + (
        f", adapted {report.steps} steps seed {adapt_seed}" if report is not None and not report.skipped else "")
    desc = f"ldct denoised ({model.name}{knobs})"
    written = write_volume(result_vol, out, source=vol, description=desc, overwrite=overwrite, compress=compress,
                           series_number=derived_series_number(vol.meta.get("series_number"), "denoised"))
    if model.scale == 1:
        before, after, nhow = noise_before_after(vol.data, data)
    else:
        before, after, nhow = None, None, "not measured for super-resolution models"
    if preview is not None:
        k = vol.shape[0] // 2
        b = vol.data[k]
        if model.scale != 1:
            b = np.kron(b, np.ones((model.scale, model.scale), dtype=np.float32))
        write_preview(b, data[k], preview, labels=("input", f"ldct {model.name}"))
    qa_path = None
    if qa is not None:
        from ldct.infer.qa import scan_qa, write_qa

        figures = scan_qa(vol.data, data, float(np.mean(vol.spacing[1:])))
        figures = {"input": str(inp), "output": str(written or out), "model": model.describe(), **figures}
        qa_path, _ = write_qa(figures, vol.data, data, Path(qa))
    return DenoiseResult(
        output=Path(written or out), slices=vol.shape[0], shape=tuple(data.shape), seconds=seconds,
        model=model.describe(), device=str(dev), dose=used_dose, dose_how=how, noise_before=before,
        noise_after=after, noise_how=nhow, preview=preview, adapt=report, qa=qa_path,
    )
