"""The distillation experiment end to end: teachers, the six student variants (+ dose generalisation),
evaluated per dose on held-out patients with the low-dose input and BM3D; prints and writes the table.

    OMP_NUM_THREADS=1 python bench/distill_table.py --data ../shared/data --out runs/distill_final \\
        --teacher-steps 1500 --student-steps 1500 --cpu-sizes --max-slices 8 --bm3d-slices 4 \\
        --set args.lr=1e-3 --set train.val_slices=2 \\
        --set "data.split={test: [abdomen_dicom], val: [QMNx85rKkkg], seed: 0}"

    # the full-size recipes (GPU): --teacher-steps 51200 --student-steps 76800 (100 / 150 epochs)

Steps: (1) one teacher per family (``distill_teacher[_FAMILY]`` recipes), trained on normal dose only;
(2) students ``distill_autoencoder``, ``distill_nafnet``, ``distill_resnet``, ``distill_unet``,
``distill_nafnet_nodose``, ``distill_nafnet_prior`` (all trained on batches drawing doses from 10/25/50/70 %),
and ``distill_nafnet_dosegen`` (trained on 10/25/70 % only); (3) ``ldct evaluate`` on the run's *test*
patients (``split.json``: whole patients, never slices) at every dose; dosegen is scored at 50 % only.
Every dose level comes from the same projection-domain simulator. Finished runs are reused (delete the
folder to retrain), so an interrupted benchmark continues where it stopped.

Output: ``OUT/table.md`` (markdown, soft-tissue and full windows) and ``OUT/table.json`` (every summary
row); the per-run evaluation folders hold per-slice CSVs and sample figures (input | output | normal dose).
Metrics are PSNR / SSIM / RMSE in the named HU windows (soft tissue [-160, 240], full [-1000, 1000]),
computed by ``ldct.metrics`` on HU images clipped to the window (data range = window width).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

DOSES = [0.1, 0.25, 0.5, 0.7]
TEACHERS = {"nafnet": "distill_teacher", "autoencoder": "distill_teacher_autoencoder",
            "resnet": "distill_teacher_resnet", "unet": "distill_teacher_unet"}
#: variant -> (recipe, family, evaluated doses)
STUDENTS = {
    "autoencoder": ("distill_autoencoder", "autoencoder", DOSES),
    "nafnet": ("distill_nafnet", "nafnet", DOSES),
    "resnet": ("distill_resnet", "resnet", DOSES),
    "unet": ("distill_unet", "unet", DOSES),
    "nafnet, no dose (ablation)": ("distill_nafnet_nodose", "nafnet", DOSES),
    "nafnet + anatomy prior": ("distill_nafnet_prior", "nafnet", DOSES),
    "nafnet, trained 10/25/70 %": ("distill_nafnet_dosegen", "nafnet", [0.5]),
}
#: reduced widths for CPU runs (--cpu-sizes); the recipes keep the published / default sizes
CPU_SIZES = {
    "nafnet": {"width": 16, "enc_blk_nums": [1, 1], "middle_blk_num": 2, "dec_blk_nums": [1, 1]},
    "autoencoder": {"channels": [16, 32, 64, 128, 128]},
    "resnet": {"width": 32, "num_blocks": 4},
    "unet": {"width": 16, "depth": 3},
}
WINDOWS = ("soft_tissue", "full")


def _train(recipe_name: str, out: Path, steps: int, overrides: list[str], data: Path) -> Path:
    """Train ``recipe_name`` into ``out`` for ``steps`` steps (reused when already done, resumed when cut)."""
    from ldct.engine.checkpoint import last_step
    from ldct.engine.config import load_recipe
    from ldct.engine.loop import train

    done = last_step(out)
    if done >= steps:
        print(f"  reuse {out} (step {done})", flush=True)
        return out
    recipe = load_recipe(recipe_name, overrides)
    t0 = time.perf_counter()
    train(recipe, data=data, out=out, max_steps=steps, resume=done >= 0)
    print(f"  trained {recipe_name} -> {out} in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def _family_overrides(family: str, cpu_sizes: bool, key: str) -> list[str]:
    if not cpu_sizes:
        return []
    return [f"{key}.{k}={json.dumps(v)}" for k, v in CPU_SIZES[family].items()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ldct.evaluation.run import evaluate_run

    out = Path(args.out).absolute()
    data = Path(args.data).absolute()
    common = [f"train.batch_size={args.batch}", f"data.patch_size={args.patch}", "train.val_every=0",
              "train.sample_every=0", f"train.ckpt_every={max(args.teacher_steps, args.student_steps)}",
              f"data.cache_dir={out / 'cache'}",  # simulated low dose shared by every run
              *args.set]
    families = sorted({fam for v, (_, fam, _) in STUDENTS.items() if v in args.variants})
    teachers = {}
    for fam in families:
        print(f"teacher {fam}", flush=True)
        teachers[fam] = _train(TEACHERS[fam], out / f"teacher_{fam}", args.teacher_steps,
                               common + _family_overrides(fam, args.cpu_sizes, "args.net") + args.teacher_set,
                               data)
    table: dict[str, dict[float, dict[str, float]]] = {}
    baselines: dict[str, dict[float, dict[str, float]]] = {}
    for variant in args.variants:
        recipe, fam, doses = STUDENTS[variant]
        print(f"student {variant}", flush=True)
        run_dir = _train(recipe, out / recipe, args.student_steps,
                         common + [f"args.teacher={teachers[fam]}"] + args.student_set, data)
        want_baselines = ["low-dose", "bm3d"] if doses == DOSES and not baselines else False
        results, _ = evaluate_run(run_dir, data, doses=doses, baselines=want_baselines, split=args.split,
                                  max_slices=args.max_slices, bm3d_max_slices=args.bm3d_slices,
                                  out=run_dir / f"eval_{args.split}")
        model_name = results.meta["model"]
        for row in results.summary:
            target = table.setdefault(variant, {}) if row["method"] == model_name else \
                baselines.setdefault(row["method"], {})
            target[float(row["dose"])] = row
        print(f"  evaluated on {', '.join(results.meta['patients'])}", flush=True)
    rows = {**baselines, **table}
    md = _markdown(rows, args)
    (out / "table.md").write_text(md)
    (out / "table.json").write_text(json.dumps({k: {str(d): r for d, r in v.items()} for k, v in rows.items()},
                                               indent=1, default=str))
    print(md)
    return rows


def _markdown(rows: dict[str, dict[float, dict[str, Any]]], args: argparse.Namespace) -> str:
    head = (f"Distillation benchmark: teachers {args.teacher_steps} steps, students {args.student_steps} steps, "
            f"batch {args.batch}, patch {args.patch}{', CPU sizes' if args.cpu_sizes else ''}; "
            f"{args.split} patients; metrics on HU clipped to the window (data range = its width).")
    lines = [head, ""]
    for w in WINDOWS:
        lines.append(f"**{w} window** — PSNR (dB) / SSIM / RMSE (HU)")
        lines.append("")
        lines.append("| method | " + " | ".join(f"{int(d * 100)} %" for d in DOSES) + " |")
        lines.append("|---|" + "---|" * len(DOSES))
        for name, per_dose in rows.items():
            cells = []
            for d in DOSES:
                r = per_dose.get(d)
                cells.append("—" if r is None else
                             f"{r[f'psnr_{w}']:.2f} / {r[f'ssim_{w}']:.3f} / {r[f'rmse_{w}']:.1f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    n = {name: max((r.get("n", 0) for r in per.values()), default=0) for name, per in rows.items()}
    lines.append("slices per dose: " + ", ".join(f"{k} {v}" for k, v in n.items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data root (normal-dose CT of several patients)")
    p.add_argument("--out", required=True, help="benchmark folder (runs, table.md, table.json)")
    p.add_argument("--teacher-steps", type=int, default=1500)
    p.add_argument("--student-steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--cpu-sizes", action="store_true", help="reduced network widths (see CPU_SIZES)")
    p.add_argument("--split", default="test", help="patients to score: test (default) | val | all")
    p.add_argument("--max-slices", type=int, default=None, help="at most N slices per dose")
    p.add_argument("--bm3d-slices", type=int, default=4, help="BM3D on at most N slices per dose")
    p.add_argument("--variants", nargs="+", default=list(STUDENTS), choices=list(STUDENTS), metavar="VARIANT",
                   help="subset of: " + "; ".join(STUDENTS).replace("%", "%%"))  # argparse formats % in help
    p.add_argument("--teacher-set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override for the teachers only, e.g. args.skips=false (repeatable)")
    p.add_argument("--student-set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override for the students only, e.g. args.blend=dose (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override for every run, e.g. data.split.test=[L067] (repeatable)")
    run(p.parse_args())


if __name__ == "__main__":
    main()
