"""What ``ldct evaluate RUN_DIR_OR_CHECKPOINT --data DATA`` does: :func:`evaluate_run`.

1. Load the model (:meth:`ldct.Denoiser.load`: the denoising network alone).
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

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ldct.errors import LdctError
from ldct.evaluation.core import EvalResults, evaluate
from ldct.evaluation.report import write_results
from ldct.evaluation.runs import (  # noqa: F401  (public names of this module before the split)
    SPLITS,
    choose_part,
    default_out_dir,
    find_run_dir,
    model_name,
    run_data_config,
)


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
    from ldct.denoiser import Denoiser

    if split not in SPLITS:
        raise LdctError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    data = Path(data)
    if not data.exists():
        raise LdctError("data not found (no such file or folder)", data)
    from ldct.model_zoo import ModelInfo, find_model

    found = find_model(str(model_path))  # a model name (bundled or user-installed) or a path
    model_path = found.weights if isinstance(found, ModelInfo) else Path(model_path)
    den = Denoiser.load(model_path)
    meta = den.meta
    run_dir = find_run_dir(model_path)
    from ldct.model_zoo import data_kind_of

    if data_kind_of(meta) == "photos":  # photographs with image-domain noise: ldct.evaluation.photos
        from ldct.evaluation.photos import evaluate_photo_run

        return evaluate_photo_run(den, meta, model_path, data, run_dir=run_dir, out=out, doses=doses,
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
    elif trained_kind == "lowdose":
        changes.update(kind="auto", adjacent=False)  # self-supervised: scored on paired data
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
    w = [den.window.lo, den.window.hi]
    say(f"scoring {name} and baselines (low-dose slices simulated on first use)")
    results = evaluate(den, ds, name=name, baselines=baselines,
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
