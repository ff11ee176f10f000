"""What ``ldct evaluate RUN_DIR_OR_CHECKPOINT --data DATA`` does: :func:`evaluate_run`.

1. Load the model (``ldct.engine.load_checkpoint``; only the inference network).
2. Rebuild the run's ``data:`` section with ``root`` = DATA (doses overridable), reusing the run's cache of
   simulated slices when evaluating a run folder.
3. Pick patients: ``split="test"`` (default), ``"val"`` or ``"train"`` use the run's ``split.json`` (or the
   split its recipe makes of DATA's patients when there is none); ``"all"`` takes every patient in DATA.
   The output records which evaluated patients the model was trained on.
4. Score the model and the baselines (:func:`ldct.evaluation.evaluate`) and write CSVs, JSON and figures.

A model trained on photographs (``data_kind: photos``) is scored by
:func:`ldct.evaluation.photos.evaluate_photo_run` instead (held-out files, intensity metrics).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ldct.errors import LdctError
from ldct.evaluation.core import EvalResults, evaluate
from ldct.evaluation.report import write_results
from ldct.hu import Window

if TYPE_CHECKING:
    from ldct.data.config import DataConfig
    from ldct.data.split import Split

SPLITS = ("test", "val", "train", "all")


def find_run_dir(path: Path) -> Path | None:
    """The run folder a checkpoint belongs to (None for a lone exported model or weights file)."""
    p = path if path.is_dir() else path.parent
    for cand in (p, p.parent, p.parent.parent):
        if (cand / "checkpoints").is_dir() or (cand / "config.yaml").is_file() and (cand / "split.json").is_file():
            return cand
    return None


def run_data_config(meta: dict[str, Any], data: Path, model_path: Path, **changes: Any) -> DataConfig:
    """The checkpoint recipe's ``data:`` section with ``root = data`` and ``changes``, parsed; a section that no
    longer parses is one error naming the checkpoint."""
    from ldct.data.config import parse_data_config

    section = copy.deepcopy((meta.get("recipe") or {}).get("data") or {})
    section["root"] = str(data.absolute())
    section.update(changes)
    try:
        return parse_data_config(section)
    except LdctError as exc:
        raise LdctError(f"checkpoint's data section: {exc}", model_path) from None


def choose_part(found: list[str], *, split: str, run_dir: Path | None, recipe_split: Any, data: Path,
                noun: str = "patients") -> tuple[list[str], Split | None]:
    """Which of ``found`` (patient or file ids in DATA) to score, and the run's split (None without a
    split.json): ``all`` = every one; otherwise that part of the run's ``split.json`` (or, without one, of
    the split the recipe makes of ``found``), restricted to what DATA holds; none there is an error."""
    from ldct.data.split import make_split, read_split

    run_split = read_split(run_dir) if run_dir is not None and (run_dir / "split.json").is_file() else None
    if split == "all":
        return list(found), run_split
    wanted = getattr(run_split or make_split(found, recipe_split, source=str(data)), split)
    chosen = [k for k in wanted if k in set(found)]
    if not chosen:
        origin = f"{run_dir / 'split.json'}" if run_split else "the recipe's split"
        listing = ", ".join(found[:8]) + (f", ... ({len(found)} in all)" if len(found) > 8 else "")
        raise LdctError(f"none of the {split} {noun} of {origin} ({', '.join(wanted) or 'none'}) are in the data "
                        f"(found: {listing}); use --split all to evaluate every one", data)
    return chosen, run_split


def default_out_dir(out: str | Path | None, run_dir: Path | None, model_path: Path, split: str) -> Path:
    """``out``, else ``RUN_DIR/eval_<split>``; for a lone model (a bundled or installed model, an exported
    folder or a weights file) ``./eval_<model>_<split>``: never beside the weights, which may be read-only or
    inside the installed package."""
    if out:
        return Path(out)
    if run_dir is not None:
        return run_dir / f"eval_{split}"
    stem = model_path.name if model_path.is_dir() else model_path.stem
    return Path.cwd() / f"eval_{stem}_{split}"


def model_name(meta: dict[str, Any]) -> str:
    """``method/network`` of a checkpoint, the name of its rows."""
    return f"{meta.get('method', 'model')}/{(meta.get('network') or {}).get('name', '?')}"


def evaluate_run(
    model_path: str | Path,
    data: str | Path,
    *,
    out: str | Path | None = None,
    doses: Sequence[float] | None = None,
    baselines: bool | Sequence[str] = True,
    split: str = "test",
    device: str = "cpu",
    max_slices: int | None = None,
    bm3d_max_slices: int | None = 8,
    tile: int | None = None,
    figures: bool = True,
    progress: Callable[[int, int], None] | None = None,
    stage: Callable[[str], None] | None = None,
) -> tuple[EvalResults, Path]:
    """Evaluate a run folder or checkpoint on DATA; returns the results and the output folder.

    ``progress(done, total)`` is called after each scored slice, ``stage(text)`` when a stage begins."""
    say = stage or (lambda text: None)
    from ldct.data.build import eval_dataset
    from ldct.data.datasets import SliceDataset
    from ldct.engine.checkpoint import load_checkpoint

    if split not in SPLITS:
        raise LdctError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    data = Path(data)
    if not data.exists():
        raise LdctError("data not found (no such file or folder)", data)
    from ldct.model_zoo import ModelInfo, find_model

    found = find_model(str(model_path))  # a model name (bundled or user-installed) or a path
    model_path = found.weights if isinstance(found, ModelInfo) else Path(model_path)
    method, meta = load_checkpoint(model_path, inference_only=True)
    run_dir = find_run_dir(model_path)
    from ldct.model_zoo import data_kind_of

    if data_kind_of(meta) == "photos":  # photographs with image-domain noise: ldct.evaluation.photos
        from ldct.evaluation.photos import evaluate_photo_run

        return evaluate_photo_run(method, meta, model_path, data, run_dir=run_dir, out=out, doses=doses,
                                  baselines=baselines, split=split, device=device, max_images=max_slices,
                                  tile=tile, figures=figures, progress=progress)
    from ldct.infer.photos import is_photo_input

    if is_photo_input(data):
        raise LdctError("this holds photographs, but the model was trained on CT (Hounsfield units); evaluate a "
                        "model trained on photographs (ldct train pix2pix_photos)", data)
    changes: dict[str, Any] = {"dose_range": None}  # evaluation uses discrete dose levels
    trained_kind = ((meta.get("recipe") or {}).get("data") or {}).get("kind")
    if trained_kind == "unpaired":
        changes.update(kind="auto", ld_root=None, nd_root=None)  # e.g. CycleGAN: scored on paired data
    elif trained_kind in ("simulated", "paired_dirs", "manifest"):
        changes["kind"] = "auto"  # the data given decides: real low dose when it holds some, else simulated
    if doses:
        changes["doses"] = [float(d) for d in doses]
    cfg = run_data_config(meta, data, model_path, **changes)
    out_dir = default_out_dir(out, run_dir, model_path, split)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else (run_dir / "cache" if run_dir else out_dir / "cache")

    # who to evaluate
    say("finding data, reading headers")
    full, src = eval_dataset(cfg, cache_dir=cache_dir, doses=list(doses) if doses else None)
    patients, run_split = choose_part(src.patient_ids, split=split, run_dir=run_dir, recipe_split=cfg.split,
                                      data=data)
    ds = SliceDataset(full.store, [r for r in full.records if r.patient_id in set(patients)], doses=full.doses,
                      scale=full.scale, channels=full.channels, window=full.window)
    if len(ds) == 0:
        raise LdctError("no slices to evaluate at the requested doses", data)
    trained_on = sorted(set(patients) & set(run_split.train)) if run_split else []

    net = meta.get("network") or {}
    name = model_name(meta)
    w = meta.get("hu_window") or [cfg.hu_window.lo, cfg.hu_window.hi]
    say(f"scoring {name} and baselines (low-dose slices simulated on first use)")
    results = evaluate(method, ds, name=name, window=Window(float(w[0]), float(w[1]), "net"), baselines=baselines,
                       device=device, tile=tile, max_slices=max_slices, bm3d_max_slices=bm3d_max_slices,
                       progress=progress)
    results.meta.update({
        "checkpoint": str(model_path), "run_dir": str(run_dir) if run_dir else None, "step": meta.get("step"),
        "network": net, "data": str(data), "data_kind": src.kind, "split": split, "patients": patients,
        "patients_in_training_set": trained_on, "doses": ds.doses,
        "net_window_hu": [float(w[0]), float(w[1])],
    })
    if trained_on:
        results.meta.setdefault("warnings", []).append(
            f"evaluated patients {', '.join(trained_on)} were in the model's training set")
    say("writing tables and figures")
    write_results(results, out_dir, figures=figures)
    return results, out_dir
