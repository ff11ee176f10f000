"""The GAN comparison of docs/gans.md end to end: RED-CNN (L2) and four GANs trained briefly on one data root
with one patient held out, scored on that patient with the low-dose input, plus noise-texture columns.

    OMP_NUM_THREADS=1 python bench/gan_table.py --data ../shared/data --out runs/gan_bench

Runs (``ldct.engine.loop.train``, i.e. what ``ldct train RECIPE --data DATA --out OUT/NAME --set ...`` does;
the exact command lines are written to ``OUT/commands.sh``), all at one simulated dose (default 25 %), with
``data.split={test: [HELD_OUT], val: 1}`` and the CPU sizes of ``METHODS`` (the recipes keep the published
sizes):

- ``redcnn``: RED-CNN (recipe ``redcnn``, MSE), the L2-trained CNN the GANs are compared with;
- ``wgan_gp``, ``pix2pix``, ``srgan_x4`` (x4 low resolution -> normal dose) on the same paired data;
- ``cyclegan``: unpaired. ``OUT/unpaired/ld`` and ``OUT/unpaired/nd`` are written first from the *training*
  patients of the paired runs: per scan, the (strided) slices alternate between the two folders, even ones
  as their simulated low dose (the very images the paired runs train on: same simulator, cache and seed),
  odd ones as normal dose, so no slice appears in both and the two sets cover the same anatomy.

Every run uses one simulation cache (``--cache``, shareable with other runs: the key hashes volume, slice,
dose, noise seed and simulator settings), so the low dose is simulated once. Training uses every
``--stride``-th slice (``data.slice_stride``) and validates on the validation patient every steps/5 (logged
only: the *last* checkpoint is scored); scoring uses every slice of the held-out patient.

Scoring (``ldct.evaluation.evaluate``, what ``ldct evaluate`` runs): each run's last checkpoint on the
held-out patient's slices at the dose (SRGAN: its input area-downsampled x4, with a bicubic low-dose row):
PSNR / SSIM / RMSE in the soft-tissue window [-160, 240] HU (data range 400 HU) and PSNR in the full window
[-1000, 1000] HU (data range 2000 HU), on HU images clipped to the window; noise in flat body soft-tissue ROIs
chosen on the normal dose: ``noise std`` (high-pass std of the image itself, no reference) and ``residual
std`` (std of image - normal dose). Texture (``ldct.metrics.noise.noise_power_spectrum``, 32x32 ROIs inside
body soft tissue of the normal dose, same ROIs for every row, 2nd-order detrended, flatter half kept): the
NPS-weighted mean frequency (cycles/mm), the noise magnitude sqrt(integral NPS) (HU) and the NPS shape
distance to the normal dose (total-variation distance of the area-normalised 2D NPS: 0 = same texture,
1 = disjoint spectra).

Finished runs are reused (delete ``OUT/NAME`` to retrain; a cut run is resumed); wall times are kept in
``OUT/NAME/bench_time.json``. Output: ``OUT/table.md``, ``OUT/table.json``, ``OUT/commands.sh`` and
``OUT/eval/NAME/`` (per-slice CSV, summary, figures of ``ldct evaluate``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np

#: name -> recipe, row label, data ("paired" | "unpaired"), CPU-size overrides, default steps and batch
METHODS: dict[str, dict[str, Any]] = {
    "redcnn": {"recipe": "redcnn", "label": "RED-CNN, MSE (the L2 CNN)", "data": "paired", "steps": 1500, "batch": 8,
               "set": ["args.net.channels=32"], "size": "32 ch"},
    "wgan_gp": {"recipe": "wgan_gp", "label": "WGAN-GP", "data": "paired", "steps": 300, "batch": 8,
                "set": ["args.critic.channels=32", "args.critic.hidden=256"],
                "size": "generator 32 ch x 8, critic 32 ch, n_critic 5"},
    "pix2pix": {"recipe": "pix2pix", "label": "pix2pix", "data": "paired", "steps": 800, "batch": 8,
                "set": ["args.generator.width=16", "args.generator.depth=3", "args.discriminator.channels=32"],
                "size": "U-Net 16 ch depth 3, PatchGAN 32 ch"},
    "cyclegan": {"recipe": "cyclegan", "label": "CycleGAN, unpaired", "data": "unpaired", "steps": 3000, "batch": 4,
                 "set": ["args.generator.width=16", "args.generator.num_blocks=4", "args.discriminator.channels=32"],
                 "size": "ResNet 16 ch x 4 blocks, PatchGAN 32 ch"},
    "srgan_x4": {"recipe": "srgan_x4", "label": "SRGAN x4", "data": "paired", "steps": 600, "batch": 8,
                 "set": ["args.generator.channels=32", "args.generator.num_blocks=4", "args.discriminator.channels=32",
                         "args.discriminator.hidden=256", "args.pretrain_steps=200"],
                 "size": "SRResNet 32 ch x 4 blocks, D 32 ch, 200 pre-training steps"},
}
GANS = ("wgan_gp", "pix2pix", "cyclegan", "srgan_x4")


# ----------------------------------------------------------------------------------------------- training
def _overrides(name: str, args: argparse.Namespace, steps: int) -> list[str]:
    spec = METHODS[name]
    common = [f"data.cache_dir={args.cache}", f"data.patch_size={args.patch}",
              f"train.batch_size={spec['batch']}", f"train.val_every={max(steps // 5, 1)}", "train.sample_every=0",
              f"train.ckpt_every={max(steps // 2, 1)}", "train.log_every=10"]
    if spec["data"] == "paired":
        data = [f"data.split={{test: [{args.held_out}], val: 1}}", f"data.doses=[{args.dose:g}]",
                "data.dose_range=null", f"data.slice_stride={args.stride}"]
    else:  # the folders already hold alternate (strided) slices; every patient trains
        data = [f"data.ld_dose={args.dose:g}", "data.slice_stride=1"]
    extra = [s.split(":", 1)[1] for s in args.set if s.split(":", 1)[0] == name]
    extra += [s for s in args.set if s.split(":", 1)[0] not in METHODS]
    return data + common + spec["set"] + extra


def _command(name: str, data: Path, run: Path, steps: int, overrides: list[str]) -> str:
    parts = ["ldct", "train", METHODS[name]["recipe"], "--data", str(data), "--out", str(run), "--max-steps",
             str(steps)]
    for o in overrides:
        parts += ["--set", o]
    return " ".join(shlex.quote(p) for p in parts)


def _train(name: str, data: Path, run: Path, steps: int, overrides: list[str]) -> dict[str, Any]:
    """Train (or reuse / resume) one run; returns {"steps", "wall_s"} (wall time summed over resumes)."""
    from ldct.engine.checkpoint import last_step
    from ldct.engine.config import load_recipe
    from ldct.engine.loop import train

    tfile = run / "bench_time.json"
    timing = json.loads(tfile.read_text()) if tfile.is_file() else {"wall_s": 0.0}
    done = last_step(run)
    if done >= steps:
        print(f"  reuse {run} (step {done}, {timing['wall_s']:.0f} s)", flush=True)
        return {**timing, "steps": done}
    recipe = load_recipe(METHODS[name]["recipe"], overrides)
    t0 = time.perf_counter()
    train(recipe, data=data, out=run, max_steps=steps, resume=done >= 0)
    timing = {"wall_s": timing["wall_s"] + time.perf_counter() - t0, "steps": steps}
    tfile.write_text(json.dumps(timing))
    print(f"  trained {name} -> {run}: {steps} steps in {timing['wall_s']:.0f} s", flush=True)
    return timing


def make_unpaired(out: Path, data: Path, args: argparse.Namespace) -> Path:
    """Write ``out/ld`` and ``out/nd`` (one .npy (z, y, x) HU volume per training scan) from the training
    patients of the paired runs: alternate strided slices, even ones as simulated low dose, odd ones as
    normal dose."""
    from ldct.data.build import build_datasets
    from ldct.engine.config import load_recipe

    if (out / "done.json").is_file():
        return out
    recipe = load_recipe("redcnn", _overrides("redcnn", args, 1))  # the paired runs' data section
    section = {**recipe["data"], "root": str(data)}
    bundle = build_datasets(section, run_dir=None, progress=True)
    store = bundle.train.store
    by_vol: dict[str, list[Any]] = {}
    for rec in bundle.records["train"]:
        by_vol.setdefault(rec.nd.volume, []).append(rec)
    info: dict[str, Any] = {"dose": args.dose, "stride": args.stride, "patients": bundle.split["train"], "scans": {}}
    for side in ("ld", "nd"):
        (out / side).mkdir(parents=True, exist_ok=True)
    for vol, recs in by_vol.items():
        recs.sort(key=lambda r: r.slice_index)
        ld = [store.ld(r, args.dose)[0] for r in recs[0::2]]
        nd = [store.nd(r)[0] for r in recs[1::2]]
        if not ld or not nd:
            continue
        stem = f"{recs[0].patient_id}_{vol[:6]}_slices"  # ends in letters: one volume, not a slice group
        np.save(out / "ld" / f"{stem}.npy", np.stack(ld).astype(np.float32))
        np.save(out / "nd" / f"{stem}.npy", np.stack(nd).astype(np.float32))
        info["scans"][stem] = {"patient": recs[0].patient_id, "ld_slices": [r.slice_index for r in recs[0::2]],
                               "nd_slices": [r.slice_index for r in recs[1::2]]}
    (out / "done.json").write_text(json.dumps(info, indent=1))
    print(f"  unpaired sets in {out}: " + ", ".join(f"{k} ld {len(v['ld_slices'])} / nd {len(v['nd_slices'])}"
                                                   for k, v in info["scans"].items()), flush=True)
    return out


# ----------------------------------------------------------------------------------------------- scoring
def _eval_dataset(meta: dict[str, Any], data: Path, run: Path, args: argparse.Namespace):
    """The held-out patient's whole slices at the dose, as ``ldct evaluate`` builds them from a run's recipe
    (every slice; unpaired recipes are scored on the paired data)."""
    from ldct.data.build import eval_dataset
    from ldct.evaluation.run import run_data_config

    changes = {"doses": [args.dose], "cache_dir": str(args.cache), "dose_range": None}
    if ((meta.get("recipe") or {}).get("data") or {}).get("kind") == "unpaired":
        changes.update(kind="auto", ld_root=None, nd_root=None, ld_dose=None)
    cfg = run_data_config(meta, data, run, **changes)
    ds, _ = eval_dataset(cfg, cache_dir=args.cache, patients=[args.held_out], doses=[args.dose])
    return ds


def _score(name: str, run: Path, data: Path, args: argparse.Namespace, out: Path) -> tuple[Any, dict]:
    from ldct import Denoiser
    from ldct.evaluation import evaluate
    from ldct.evaluation.report import write_results

    den = Denoiser.load(run, prefer="last")
    meta = dict(den.meta)
    ds = _eval_dataset(meta, data, run, args)
    n = min(len(ds), args.max_slices or len(ds))
    res = evaluate(den, ds, name=METHODS[name]["label"], baselines=["low-dose"], max_slices=args.max_slices,
                   keep_samples=n)
    res.meta.update({"run_dir": str(run), "step": meta.get("step"), "patients": [args.held_out]})
    write_results(res, out / "eval" / name)
    meta["pixel_spacing_mm"] = float(ds.records[0].pixel_spacing_mm)
    return res, meta


def _texture(images: list[np.ndarray], nd: list[np.ndarray], spacing: float, ref_nps: np.ndarray | None):
    from scipy import ndimage as ndi

    from ldct.metrics.noise import SOFT_TISSUE_HU, body_mask, noise_power_spectrum

    x, r = np.stack(images), np.stack(nd)
    src = np.stack([ndi.gaussian_filter(s.astype(np.float64), 2) for s in r])
    region = np.stack([ndi.binary_erosion(b, iterations=8) for b in body_mask(src)])
    region &= (src >= SOFT_TISSUE_HU[0]) & (src <= SOFT_TISSUE_HU[1])
    nps = noise_power_spectrum(x, pixel_spacing_mm=spacing, roi_size=32, region=region)
    p = nps.nps2d / nps.nps2d.sum()
    dist = 0.5 * float(np.abs(p - ref_nps).sum()) if ref_nps is not None else 0.0
    return {"nps_f_mean": nps.mean_frequency, "nps_noise_hu": float(np.sqrt(nps.variance)), "nps_dist": dist,
            "nps_rois": nps.n_rois}, p


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(os.path.abspath(args.out))
    data = Path(os.path.abspath(args.data))
    args.cache = Path(os.path.abspath(args.cache)) if args.cache else out / "cache"
    out.mkdir(parents=True, exist_ok=True)
    steps = {k: v["steps"] for k, v in METHODS.items()}
    for s in args.steps:
        k, v = s.split("=", 1)
        for key in (METHODS if k == "all" else [k]):
            steps[key] = int(v)
    commands, timing = [], {}
    for name in args.methods:
        spec = METHODS[name]
        print(f"{name}", flush=True)
        src = make_unpaired(out / "unpaired", data, args) if spec["data"] == "unpaired" else data
        ov = _overrides(name, args, steps[name])
        commands.append(_command(name, src, out / name, steps[name], ov))
        timing[name] = _train(name, src, out / name, steps[name], ov)
    t_train = sum(t["wall_s"] for t in timing.values())
    (out / "commands.sh").write_text("#!/bin/bash\n# written by bench/gan_table.py\n" + "\n".join(commands) + "\n")

    rows: dict[str, dict[str, Any]] = {}
    ref_nps = {}
    spacing = None
    t0 = time.perf_counter()
    for name in args.methods:
        res, meta = _score(name, out / name, data, args, out)
        dose = float(args.dose)
        samples = res.samples[dose]
        nd = [s["nd"] for s in samples]
        if spacing is None:
            spacing = float(meta.get("pixel_spacing_mm") or args.spacing)
        summ = {r["method"]: r for r in res.summary}
        base_name = next(k for k in summ if k.startswith("low-dose"))
        if "normal dose" not in rows:
            tex, ref_nps["nd"] = _texture(nd, nd, spacing, None)
            b = summ[base_name]
            rows["normal dose"] = {"psnr_soft_tissue": math.inf, "ssim_soft_tissue": 1.0, "rmse_soft_tissue": 0.0,
                                   "psnr_full": math.inf, "noise_std_hu": b["noise_std_nd_hu"], "residual_std_hu": 0.0,
                                   "n": b["n"], **tex}
        sr = base_name != "low-dose"
        label = f"low dose {round(dose * 100)} %" + (", x4 area-downsampled, bicubic" if sr else "")
        if label not in rows:
            tex, _ = _texture([s["ld"] for s in samples], nd, spacing, ref_nps["nd"])
            rows[label] = {**summ[base_name], **tex}
        elif abs(rows[label]["psnr_soft_tissue"] - summ[base_name]["psnr_soft_tissue"]) > 1e-6:
            print(f"  warning: {name}: its low-dose input differs from the other runs' "
                  f"({summ[base_name]['psnr_soft_tissue']:.3f} vs {rows[label]['psnr_soft_tissue']:.3f} dB)")
        tex, _ = _texture([s["out"] for s in samples], nd, spacing, ref_nps["nd"])
        rows[METHODS[name]["label"]] = {**summ[METHODS[name]["label"]], **tex, "key": name,
                                        "step": meta.get("step"), "train_wall_s": timing[name]["wall_s"],
                                        "batch": METHODS[name]["batch"], "size": METHODS[name]["size"],
                                        "beats_low_dose": bool(summ[METHODS[name]["label"]]["psnr_soft_tissue"]
                                                               > summ[base_name]["psnr_soft_tissue"]),
                                        "input_row": label}
        print(f"  scored {name}: {rows[METHODS[name]['label']]['psnr_soft_tissue']:.2f} dB "
              f"(input {summ[base_name]['psnr_soft_tissue']:.2f} dB)", flush=True)
    t_eval = time.perf_counter() - t0
    info = {"data": str(data), "held_out": args.held_out, "dose": args.dose, "stride": args.stride,
            "patch": args.patch, "spacing_mm": spacing, "train_s": t_train, "eval_s": t_eval,
            "commands": commands}
    md = _markdown(rows, info)
    (out / "table.md").write_text(md)
    (out / "table.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1, default=_json))
    print(md)
    return rows


def _json(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


def _markdown(rows: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    nd = rows["normal dose"]
    lines = [
        (f"Held-out patient {info['held_out']}, {round(info['dose'] * 100)} % dose simulated in the projection "
        f"domain; {nd['n']} slices; PSNR/SSIM/RMSE in the soft-tissue window [-160, 240] HU (data range 400 HU), "
        f"PSNR full in [-1000, 1000] HU (data range 2000 HU); noise in flat body soft-tissue ROIs of the normal dose; "
        f"NPS of each image (32x32 ROIs, pixel {info['spacing_mm']:.2f} mm). Training {info['train_s'] / 60:.1f} min, "
         f"scoring {info['eval_s'] / 60:.1f} min."), "",
        ("| model (steps x batch, training wall time) | PSNR dB | gain dB | SSIM | RMSE HU | PSNR full dB | "
         "noise std HU | residual std HU | NPS mean freq. cycles/mm | NPS noise HU | NPS shape dist. to ND |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)

    for name, r in rows.items():
        label = name if "key" not in r else (f"{name} ({r['size']}; {r['step']}"
                                             f" x {r['batch']}, {r['train_wall_s'] / 60:.1f} min)")
        gain = r.get("psnr_gain_soft_tissue") if "key" in r else (0.0 if name.startswith("low dose") else None)
        lines.append(f"| {label} | {f(r['psnr_soft_tissue'], '{:.2f}')} | {f(gain, '{:+.2f}')} | "
                     f"{f(r['ssim_soft_tissue'], '{:.3f}')} | {f(r['rmse_soft_tissue'], '{:.1f}')} | "
                     f"{f(r['psnr_full'], '{:.2f}')} | {f(r['noise_std_hu'], '{:.1f}')} | "
                     f"{f(r['residual_std_hu'], '{:.1f}')} | {r['nps_f_mean']:.3f} | {r['nps_noise_hu']:.1f} | "
                     f"{r['nps_dist']:.3f} |")
    lines.append("")
    red = next((r for r in rows.values() if r.get("key") == "redcnn"), None)
    for r in rows.values():
        if "key" not in r:
            continue
        inp = rows[r["input_row"]]
        gain = r["psnr_soft_tissue"] - inp["psnr_soft_tissue"]
        line = (f"- {r['key']}: {'beats' if r['beats_low_dose'] else 'does NOT beat'} its input ({gain:+.2f} dB"
                f"{', negligible' if abs(gain) < 0.1 else ''})")
        if red is not None and r["key"] in GANS:
            def closer(k: str, r: dict[str, Any] = r) -> str:
                return "closer" if abs(r[k] - nd[k]) < abs(red[k] - nd[k]) else "further"

            line += (f"; texture vs RED-CNN (normal dose): NPS mean frequency {closer('nps_f_mean')} "
                     f"({r['nps_f_mean']:.3f} vs {red['nps_f_mean']:.3f} ({nd['nps_f_mean']:.3f}) cycles/mm), "
                     f"NPS noise {closer('nps_noise_hu')} ({r['nps_noise_hu']:.1f} vs {red['nps_noise_hu']:.1f} "
                     f"({nd['nps_noise_hu']:.1f}) HU), NPS shape distance "
                     f"{'closer' if r['nps_dist'] < red['nps_dist'] else 'further'} "
                     f"({r['nps_dist']:.3f} vs {red['nps_dist']:.3f})")
            if r["input_row"] != red["input_row"]:
                line += f" (input: {r['input_row']}, not RED-CNN's)"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data root (normal-dose CT of several patients)")
    p.add_argument("--out", required=True, help="benchmark folder (runs, unpaired/, eval/, table.md, table.json)")
    p.add_argument("--held-out", default="L067", help="test patient (default L067)")
    p.add_argument("--dose", type=float, default=0.25, help="simulated dose fraction (default 0.25)")
    p.add_argument("--cache", default=None, help="simulation cache shared by all runs (default OUT/cache)")
    p.add_argument("--stride", type=int, default=2, help="train on every N-th slice (data.slice_stride, default 2)")
    p.add_argument("--patch", type=int, default=64, help="training patch size (default 64)")
    p.add_argument("--max-slices", type=int, default=None, help="score at most N held-out slices (default all)")
    p.add_argument("--spacing", type=float, default=0.7, help="pixel spacing (mm) if the data does not say")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                   help=f"subset of: {', '.join(METHODS)}")
    p.add_argument("--steps", action="append", default=[], metavar="NAME=N",
                   help="training steps of one method (or all=N); defaults: "
                        + ", ".join(f"{k} {v['steps']}" for k, v in METHODS.items()))
    p.add_argument("--set", action="append", default=[], metavar="[NAME:]KEY=VALUE",
                   help="recipe override for every run, or for one method with a NAME: prefix (repeatable)")
    run(p.parse_args())


if __name__ == "__main__":
    main()
