"""Gather what a report shows from a training run folder or an evaluation folder.

- **evaluation folder** (``ldct evaluate`` output: ``summary.json`` of kind ``ldct-evaluation``,
  ``per_slice.csv``, ``samples.npz``): the per-dose metric table, metric-vs-dose plots and the viewer.
  When it belongs to a run, that run's training curves are added.
- **run folder** (``ldct train`` output: ``config.yaml``, ``logs/csv/metrics.csv``, ``checkpoints/``):
  loss and validation curves, the checkpoint's validation metrics, and every evaluation folder inside
  it (``eval_*``). Without one, the latest sample grid the training wrote is shown and the notes say
  how to add an evaluation.

Every file is read as untrusted: a truncated or corrupt file, a CSV without its ``method``/``dose``
columns or with a non-numeric dose, JSON values of the wrong type, YAML aliases, or a checkpoint pointer
that leads out of the run folder is one :class:`LdctError` naming the file. NaN metric values are
legitimate (a metric that could not be measured) and are shown as a dash.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from ldct.errors import LdctError
from ldct.report.data import Figure, MetricTable, ReportData
from ldct.report.figures import metric_vs_dose_figure, nps_figure, training_figures
from ldct.report.samples import read_samples

#: summary columns of the main per-dose table: (key, header, +1 higher is better / -1 lower is better)
MAIN_COLUMNS = (
    ("psnr_soft_tissue", "PSNR soft dB", 1),
    ("psnr_gain_soft_tissue", "gain soft dB", 1),
    ("ssim_soft_tissue", "SSIM soft", 1),
    ("rmse_soft_tissue", "RMSE soft HU", -1),
    ("psnr_full", "PSNR full dB", 1),
    ("ssim_full", "SSIM full", 1),
    ("rmse_full", "RMSE full HU", -1),
    ("noise_std_hu", "noise std HU", 0),
    ("residual_std_hu", "residual std HU", -1),
    ("nps_mean_f", "NPS mean f (c/mm)", 0),
    ("structure_score", "structure removed", 0),
    ("hu_shift_fat", "HU shift fat", 0),
    ("hu_shift_soft", "HU shift soft tissue", 0),
    ("hu_shift_enhanced", "HU shift enhanced", 0),
)
PLOT_METRICS = (("psnr_soft_tissue", "PSNR soft tissue (dB)"), ("ssim_soft_tissue", "SSIM soft tissue"),
                ("noise_std_hu", "noise std (HU)"), ("nps_mean_f", "NPS mean frequency (cycles/mm)"),
                ("structure_score", "structure removed (score)"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad UTF-8 or JSON
        raise LdctError(f"unreadable ({exc})", path) from None
    return data if isinstance(data, dict) else {}


#: columns every per-slice / per-image CSV row has
CSV_COLUMNS = ("method", "dose")


def _read_csv(path: Path, required: tuple[str, ...] = CSV_COLUMNS) -> list[dict[str, Any]]:
    """Rows of an evaluation CSV, numbers as floats (LdctError for a truncated or corrupt file)."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LdctError(f"unreadable CSV ({exc})", path) from None
    missing = [c for c in required if c not in columns]
    if rows and missing:
        raise LdctError(f"CSV lacks the column(s) {', '.join(missing)} (columns: {', '.join(columns)[:200]})", path)
    for i, r in enumerate(rows):
        if None in r or None in r.values():
            raise LdctError(f"row {i + 2} does not have the header's {len(columns)} fields (a truncated or corrupt "
                            "file)", path)
        for k, v in r.items():
            try:
                r[k] = float(v) if k not in ("method", "patient_id", "kernel", "source", "patients") else v
            except (TypeError, ValueError):
                pass
        if "dose" in required and not (isinstance(r["dose"], float) and math.isfinite(r["dose"])):
            raise LdctError(f"row {i + 2} has dose {r['dose']!r}, not a number", path)
    return rows


def _check_summary(summary: dict[str, Any], path: Path) -> dict[str, Any]:
    """The types :func:`eval_tables` and the facts rely on (LdctError naming ``path`` otherwise)."""
    def bad(key: str, want: str) -> LdctError:
        return LdctError(f"{key} must be {want}, got {str(summary[key])[:80]}", path)

    rows = summary.get("summary")
    if rows is not None and not (isinstance(rows, list) and all(isinstance(r, dict) for r in rows)):
        raise bad("summary", "a list of rows")
    for key in ("doses", "data_range"):
        v = summary.get(key)
        if v is not None and not (isinstance(v, list) and all(isinstance(d, (int, float)) and not isinstance(d, bool)
                                                              and math.isfinite(d) for d in v)):
            raise bad(key, "a list of numbers")
    for key in ("patients", "images", "warnings"):
        if summary.get(key) is not None and not isinstance(summary[key], list):
            raise bad(key, "a list")
    if summary.get("windows") is not None and not isinstance(summary["windows"], dict):
        raise bad("windows", "an object")
    if summary.get("run_dir") is not None and not isinstance(summary["run_dir"], str):
        raise bad("run_dir", "a folder name")
    return summary


def is_eval_dir(p: Path) -> bool:
    return (p / "summary.json").is_file() and _read_json(p / "summary.json").get("kind") == "ldct-evaluation"


def is_run_dir(p: Path) -> bool:
    return (p / "checkpoints").is_dir() or ((p / "config.yaml").is_file() and (p / "logs").is_dir())


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _dose(v: Any) -> str:
    d = _num(v)
    return f"{d:g}" if d is not None else str(v)


def _int(v: Any) -> int | None:
    d = _num(v)
    return int(d) if d is not None and math.isfinite(d) else None


PHOTO_COLUMNS = (("psnr", "PSNR dB", 1), ("psnr_gain", "gain dB", 1), ("ssim", "SSIM", 1), ("rmse", "RMSE", -1))


def photo_eval_table(summary: dict[str, Any]) -> MetricTable:
    """The per-method table of a photo evaluation (``data_kind: photos``, ldct.evaluation.photos)."""
    rows = summary.get("summary") or []
    ranges = "/".join(f"{float(r):g}" for r in summary.get("data_range") or [255])
    return MetricTable(
        title="photographs: metrics per method (mean over images)",
        columns=["method", "n"] + [h for _, h, _ in PHOTO_COLUMNS],
        rows=[[str(r.get("method")), _int(r.get("n"))] + [_num(r.get(k)) for k, _, _ in PHOTO_COLUMNS] for r in rows],
        note=(f"Against the clean photographs; noise {summary.get('noise_description', '?')}. PSNR/SSIM with "
              f"data_range {ranges} (the files' full scale), SSIM per colour channel, averaged; RMSE in intensity "
              "units. Gain: PSNR minus the noisy input's on the same images. Bold: best."),
        better={h: b for _, h, b in PHOTO_COLUMNS},
    )


def eval_tables(summary: dict[str, Any]) -> list[MetricTable]:
    """The per-dose table (main columns) and a table of every metric."""
    rows = summary.get("summary") or []
    if not rows:
        return []
    if summary.get("data_kind") == "photos":
        return [photo_eval_table(summary)]
    windows = summary.get("windows") or {}
    wnote = "; ".join(f"{k}: {v}" for k, v in windows.items())
    cols = [(k, h, b) for k, h, b in MAIN_COLUMNS if any(k in r for r in rows)]
    main = MetricTable(
        title="per-dose metrics (mean over slices)",
        columns=["dose", "method", "n"] + [h for _, h, _ in cols],
        rows=[[_dose(r.get("dose")), str(r.get("method")), _int(r.get("n"))] + [_num(r.get(k)) for k, _, _ in cols]
              for r in rows],
        note=("PSNR/SSIM/RMSE against the normal dose, both clipped to the named HU window with data_range = "
              f"window width ({wnote}). Gain: PSNR minus the low-dose input's on the same slices. Bold: best "
              "per dose among the rows scored on the same slices (the most common n; BM3D on fewer slices is not "
              "compared). Noise std: soft-tissue ROI in the body. NPS mean f: noise grain (cycles/mm) in the normal "
              "dose's flat soft tissue (much lower than the normal dose's = a plastic look). Structure removed: the "
              "residual (input - output) against the normal dose's edges, ~0 when only noise was removed."),
        better={h: b for _, h, b in cols if b},
        group_by="dose",
    )
    skip = {"dose", "method", "n", "patients"}
    every = sorted({k for r in rows for k in r if k not in skip})
    full = MetricTable(title="every metric", columns=["dose", "method"] + every,
                       rows=[[_dose(r.get("dose")), str(r.get("method"))] + [_num(r.get(k)) for k in every]
                             for r in rows], collapsed=True)
    return [main, full]


def _eval_into(data: ReportData, ev: Path, label: str = "") -> None:
    summary = _check_summary(_read_json(ev / "summary.json"), ev / "summary.json")
    prefix = f"{label}: " if label else ""
    for t in eval_tables(summary):
        t.title = prefix + t.title
        data.tables.append(t)
    facts = [("model", summary.get("model")), ("checkpoint", summary.get("checkpoint")),
             ("step", summary.get("step")), ("data", summary.get("data")), ("split", summary.get("split")),
             ("patients", ", ".join(map(str, summary.get("patients") or []))),
             ("doses", ", ".join(f"{float(d):g}" for d in summary.get("doses") or [])),
             ("photographs", ", ".join(map(str, summary.get("images") or []))),
             ("noise", summary.get("noise_description")),
             ("network HU window", summary.get("net_window_hu"))]
    data.facts.extend((prefix + k, str(v)) for k, v in facts if v not in (None, "", []))
    data.notes.extend(prefix + str(w) for w in summary.get("warnings") or [])
    fig = metric_vs_dose_figure(_read_csv(ev / "per_slice.csv"), list(PLOT_METRICS))
    if fig is not None:
        fig.title = prefix + fig.title
        data.figures.append(fig)
    curves = summary.get("nps_curves")
    nps = nps_figure(curves) if isinstance(curves, list) else None
    if nps is not None:
        nps.title = prefix + nps.title
        data.figures.append(nps)
    if (ev / "samples.npz").is_file():
        for case in read_samples(ev / "samples.npz"):
            case.name = prefix + case.name
            data.cases.append(case)


def _run_facts(data: ReportData, run: Path) -> None:
    from ldct.engine.logging import read_history

    cfg = run / "config.yaml"
    if cfg.is_file():
        from ldct.engine.config import parse_yaml

        try:
            recipe = parse_yaml(cfg.read_text(encoding="utf-8"), cfg) or {}
        except (OSError, UnicodeDecodeError) as exc:
            raise LdctError(f"unreadable run config ({exc})", cfg) from None
        if not (isinstance(recipe, dict) and all(isinstance(recipe.get(k) or {}, dict) for k in ("args", "train", "data"))):
            raise LdctError("not a run config (a mapping with method, args, data and train)", cfg)
        args = recipe.get("args") or {}
        net = args.get("net") or args.get("G") or args.get("generator") or {}
        data.facts.append(("method", str(recipe.get("method"))))
        if isinstance(net, dict) and net.get("name"):
            data.facts.append(("network", ", ".join(f"{k}={v}" for k, v in net.items())))
        train = recipe.get("train") or {}
        if train:
            data.facts.append(("training", ", ".join(f"{k}={train[k]}" for k in ("max_steps", "batch_size",
                                                                                  "patch_size") if k in train)))
        dsec = recipe.get("data") or {}
        if dsec:
            data.facts.append(("training data", ", ".join(f"{k}={dsec[k]}" for k in ("root", "kind", "doses",
                                                                                       "hu_window") if k in dsec)))
    for which in ("best", "last"):
        meta = _checkpoint_meta(run, which)
        if meta:
            data.facts.append((f"{which} checkpoint", f"step {meta.get('step')}"))
    history_csv = run / "logs" / "csv" / "metrics.csv"
    try:
        history = read_history(history_csv)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LdctError(f"unreadable training log ({exc})", history_csv) from None
    data.figures.extend(training_figures(history))


def _checkpoint_meta(run: Path, which: str) -> dict[str, Any]:
    from ldct.models.files import pointer_target  # refuses pointers that lead out of checkpoints/

    target = pointer_target(run / "checkpoints", which)
    if target is None or not (target / "meta.json").is_file():
        return {}
    meta = _read_json(target / "meta.json")
    if not isinstance(meta.get("metrics") or {}, dict):
        raise LdctError("metrics must be an object", target / "meta.json")
    return meta


def validation_table(metrics: dict[str, Any], step: Any) -> MetricTable | None:
    """Validation scalars ``val/[input_]<metric>_<window>`` as one row per window."""
    rows: dict[str, dict[str, float | None]] = {}
    names = ("psnr", "ssim", "rmse", "mse")
    for key, value in metrics.items():
        k = key.split("/", 1)[-1]
        src = "input" if k.startswith("input_") else "model"
        k = k.removeprefix("input_")
        metric, _, window = k.partition("_")
        if metric in names and window:
            rows.setdefault(window, {})[f"{metric} ({'low dose' if src == 'input' else 'model'})"] = _num(value)
    if not rows:
        return None
    cols = [f"{m} ({s})" for m in names for s in ("model", "low dose") if any(f"{m} ({s})" in r for r in
                                                                            rows.values())]
    return MetricTable(
        title=f"validation metrics at the best checkpoint (step {step})", columns=["window"] + cols,
        rows=[[w] + [r.get(c) for c in cols] for w, r in rows.items()],
        note="computed during training on the validation patients (simulated low dose)")


def _run_tables(data: ReportData, run: Path) -> None:
    meta = _checkpoint_meta(run, "best") or _checkpoint_meta(run, "last")
    table = validation_table(meta.get("metrics") or {}, meta.get("step")) if meta else None
    if table is not None:
        data.tables.append(table)


def collect(path: str | Path) -> ReportData:
    """Build :class:`ReportData` from a run folder or an evaluation folder (LdctError otherwise)."""
    p = Path(path)
    if not p.is_dir():
        raise LdctError("not a folder: pass a training run folder or an evaluation folder", p)
    data = ReportData(title=f"ldct report: {p.resolve().name}", source=str(p.resolve()))
    if is_eval_dir(p):
        run = _check_summary(_read_json(p / "summary.json"), p / "summary.json").get("run_dir")
        _eval_into(data, p)
        if run and is_run_dir(Path(run)):
            _run_facts(data, Path(run))
            _run_tables(data, Path(run))
        return data
    if is_run_dir(p):
        _run_facts(data, p)
        evals = sorted(q for q in p.iterdir() if q.is_dir() and is_eval_dir(q))
        for ev in evals:
            _eval_into(data, ev, label=ev.name if len(evals) > 1 else "")
        if not evals:
            data.notes.append(f"no evaluation in this run yet: `ldct evaluate {p} --data DATA` adds the per-dose "
                              "metric table and the image viewer")
            samples = sorted((p / "figures" / "samples").glob("*.png"))
            if samples:
                data.figures.append(Figure(f"training samples ({samples[-1].stem})", samples[-1].read_bytes(),
                                           "low dose | output | normal dose | difference"))
        _run_tables(data, p)
        return data
    raise LdctError("neither a training run folder (config.yaml, checkpoints/) nor an evaluation folder "
                    "(summary.json from `ldct evaluate`)", p)
