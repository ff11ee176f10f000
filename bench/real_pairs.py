"""Real low dose as the judge: score models on real quarter-dose / full-dose pairs, per patient and kernel.

    python bench/real_pairs.py --models default                       # the bundled model
    python bench/real_pairs.py --models default ft=runs/ft_L096+runs/ft_L143+runs/ft_L286 --bm3d

Pairs: ``ROOT/<patient>/{full,quarter}_<...>_<kernel>/`` DICOM series (the AAPM-Mayo layout of
``../shared/real_pairs/mayo``), matched slice by slice by position. For each (patient, kernel) group and
each method the table gives the mean over its slices of:

- PSNR / SSIM / RMSE against the real full dose in the soft-tissue window [-160, 240] HU (data range 400)
  and the full window [-1000, 1000] HU (data range 2000), ``ldct.metrics.compute_metrics``; ``gain`` = PSNR
  soft tissue minus the quarter dose's;
- ``noise``, ``NPS peak``, ``NPS mean f``: the image's own noise std (HU) and NPS peak / mean frequency
  (cycles/mm) in flat soft tissue, without a reference (:func:`texture`), with the full dose's figures in
  the ``full dose`` row: the PSNR-optimal estimate keeps about half the full dose's noise std; a denoiser
  that smooths too much (a plastic look) shows its NPS shifted to low frequencies.

Rows: ``quarter dose``; ``bm3d`` (sigma estimated blind per slice, ``ldct.baselines``); ``bm3d oracle``
(sigma = the quarter dose's true noise std: std(QD - FD) x sqrt(4/3) in soft tissue, since the full dose
keeps a quarter of the quarter dose's noise power); each model. BM3D results are cached in ``--cache``.

A model family ``LABEL=RUN1+RUN2+RUN3`` is scored leave-one-patient-out: each patient is denoised by the
member whose training split did not include it (``data_summary.split.train`` in its metadata); a patient
every member saw is marked ``seen`` and left out of the means. A single model that saw a patient is
marked the same way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PAIRS = ROOT.parent / "shared" / "real_pairs" / "mayo"
WINDOWS = ("soft_tissue", "full")


def find_groups(root: Path) -> list[dict[str, Any]]:
    """[(patient, kernel, full folder, quarter folder)] for every ``full_*`` folder with a ``quarter_*`` twin."""
    groups = []
    for full in sorted(root.glob("*/full*")):
        quarter = full.with_name(full.name.replace("full", "quarter", 1))
        if full.is_dir() and quarter.is_dir():
            kernel = full.name.rsplit("_", 1)[-1]
            groups.append({"patient": full.parent.name, "kernel": kernel, "full": full, "quarter": quarter})
    return groups


def load_pairs(group: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
    """(quarter (z, y, x), full (z, y, x), pixel spacing mm) matched by slice position."""
    from ldct.io import read_volume

    fd, qd = read_volume(group["full"]), read_volume(group["quarter"])
    zf = np.round(np.asarray(fd.positions)[:, 2], 2)
    zq = np.round(np.asarray(qd.positions)[:, 2], 2)
    common = sorted(set(zf.tolist()) & set(zq.tolist()))
    if not common:
        raise SystemExit(f"{group['full']}: no slice position shared with {group['quarter']}")
    fi = [int(np.flatnonzero(zf == z)[0]) for z in common]
    qi = [int(np.flatnonzero(zq == z)[0]) for z in common]
    return qd.data[qi], fd.data[fi], float(fd.spacing[1])


def soft_roi(fd: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    from ldct.metrics.noise import soft_tissue_roi

    return soft_tissue_roi(ndi.gaussian_filter(fd, 2))


def _region(fd: np.ndarray) -> np.ndarray:
    """Flat body soft tissue of the full dose, 8 px inside the body (where NPS ROIs may lie)."""
    from ldct.metrics.noise import flat_region

    return flat_region(fd)


def texture(img: np.ndarray, fd: np.ndarray, spacing: float) -> tuple[float, float, float]:
    """(noise std HU, NPS peak and NPS mean frequency in cycles/mm) of ``img`` itself, without a reference,
    in the full dose's flat soft tissue (``ldct.metrics.task.noise_texture`` guided by the full dose). Anatomy
    left in the ROIs adds low-frequency power to every image alike: a texture indicator for comparing
    methods, not a calibrated NPS."""
    from ldct.metrics.task import noise_texture

    t = noise_texture(img, spacing, guide=fd)
    return t.std_hu, t.nps_peak, t.nps_mean_f


def oracle_sigma(qd: np.ndarray, fd: np.ndarray) -> float:
    """The quarter dose's true noise std: std(QD - FD) x sqrt(4/3) in soft tissue (FD keeps 1/4 of its power)."""
    roi = soft_roi(fd)
    return float(np.std((qd - fd)[roi]) * math.sqrt(4.0 / 3.0))


def bm3d_cached(qd: np.ndarray, sigma: float | None, cache: Path) -> np.ndarray:
    from ldct.baselines import bm3d_hu

    h = hashlib.sha1(qd.tobytes() + repr(None if sigma is None else round(sigma, 4)).encode()).hexdigest()[:20]
    f = cache / f"bm3d_{h}.npy"
    if f.is_file():
        return np.load(f)
    out = bm3d_hu(qd, sigma_hu=sigma)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(f)
    return out


class Family:
    """One model, or several trained leaving out different patients (scored leave-one-patient-out)."""

    def __init__(self, label: str, specs: list[str], self_ensemble: bool = False):
        from ldct import Denoiser

        self.label, self.self_ensemble = label, self_ensemble
        self.members = [Denoiser.load(s) for s in specs]
        self.seen = [set(((m.meta.get("data_summary") or {}).get("split") or {}).get("train") or [])
                     for m in self.members]

    def for_patient(self, patient: str) -> tuple[Any, bool]:
        for m, seen in zip(self.members, self.seen, strict=True):
            if patient not in seen:
                return m, False
        return self.members[0], True

    def __call__(self, patient: str, qd: np.ndarray) -> tuple[np.ndarray, bool]:
        m, seen = self.for_patient(patient)
        dose = 0.25 if m.dose_conditioned else None

        def run(x: np.ndarray) -> np.ndarray:
            return m.denoise_array(np.ascontiguousarray(x), dose, batch_size=2)

        if not self.self_ensemble:
            return run(qd), seen
        acc = np.zeros(qd.shape, np.float64)  # 8 flips/rotations, each undone, averaged
        for k in range(4):
            for flip in (False, True):
                x = np.rot90(qd, k, axes=(1, 2))
                x = x[:, :, ::-1] if flip else x
                y = run(x)
                y = y[:, :, ::-1] if flip else y
                acc += np.rot90(y, -k, axes=(1, 2))
        return (acc / 8).astype(np.float32), seen


def score(img: np.ndarray, fd: np.ndarray, spacing: float, qd: np.ndarray | None = None) -> dict[str, float]:
    from ldct.metrics import compute_metrics
    from ldct.metrics.task import structure_score

    rows = [compute_metrics(i, f, list(WINDOWS)) for i, f in zip(img, fd, strict=True)]
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    tex = [texture(i, f, spacing) for i, f in zip(img, fd, strict=True)]
    out["noise_hu"] = float(np.nanmean([t[0] for t in tex]))
    out["nps_peak"] = float(np.nanmean([t[1] for t in tex]))
    out["nps_mean_f"] = float(np.nanmean([t[2] for t in tex]))
    # anatomy removed: the residual (quarter dose - output) against the full dose's edges (~0: noise only)
    out["structure"] = (float(np.nanmean([structure_score(q - i, f) for q, i, f in zip(qd, img, fd, strict=True)]))
                        if qd is not None else math.nan)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_PAIRS)
    ap.add_argument("--models", nargs="*", default=["default"],
                    help="bundled names, run folders or model paths; LABEL=A+B+C scores a leave-one-patient-out family")
    ap.add_argument("--self-ensemble", action="store_true", help="also score each model with 8-fold flips/rotations")
    ap.add_argument("--bm3d", action="store_true", help="add BM3D rows (blind and oracle sigma; ~25 s per slice)")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "ldct-bench")
    ap.add_argument("--json", type=Path, default=None, help="also write every row here")
    args = ap.parse_args()

    families = []
    for spec in args.models:
        label, _, paths = spec.partition("=") if "=" in spec else (spec, "", spec)
        families.append(Family(label, paths.split("+")))
        if args.self_ensemble:
            families.append(Family(f"{label} x8", paths.split("+"), self_ensemble=True))

    rows: list[dict[str, Any]] = []
    for g in find_groups(args.root):
        qd, fd, spacing = load_pairs(g)
        ident = {"patient": g["patient"], "kernel": g["kernel"], "n": len(fd)}
        base = score(qd, fd, spacing)
        fd_tex = np.array([texture(f, f, spacing) for f in fd])
        rows.append({**ident, "method": "full dose", "noise_hu": float(np.nanmean(fd_tex[:, 0])),
                     "nps_peak": float(np.nanmean(fd_tex[:, 1])), "nps_mean_f": float(np.nanmean(fd_tex[:, 2]))})
        rows.append({**ident, "method": "quarter dose", **base, "gain": 0.0, "seconds": 0.0})
        methods: list[tuple[str, Any]] = []
        if args.bm3d:
            sig = float(np.mean([oracle_sigma(q, f) for q, f in zip(qd, fd, strict=True)]))
            methods += [("bm3d", lambda: (bm3d_cached(qd, None, args.cache), False)),
                        (f"bm3d oracle (sigma {sig:.0f} HU)", lambda s=sig: (bm3d_cached(qd, s, args.cache), False))]
        for fam in families:
            methods.append((fam.label, lambda f=fam: f(g["patient"], qd)))
        for name, fn in methods:
            t0 = time.perf_counter()
            out, seen = fn()
            sec = (time.perf_counter() - t0) / len(fd)
            m = score(out, fd, spacing, qd)
            rows.append({**ident, "method": name.split(" (sigma")[0], "detail": name, **m,
                         "gain": m["psnr_soft_tissue"] - base["psnr_soft_tissue"], "seconds": sec, "seen": seen})
        print(f"{g['patient']} {g['kernel']}: {len(fd)} pairs scored", flush=True)

    print_tables(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def print_tables(rows: list[dict[str, Any]]) -> None:
    groups = list(dict.fromkeys((r["patient"], r["kernel"]) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "full dose"))
    print("\nGain in PSNR over the real quarter dose (dB), soft-tissue window [-160, 240] HU, data range 400;")
    print("mean over the slices of each patient/kernel; '(seen)' = the model trained on that patient.\n")
    head = " | ".join(f"{p} {k}" for p, k in groups)
    print(f"| method | {head} | mean (unseen) |")
    print("|---" * (len(groups) + 2) + "|")
    for m in methods:
        cells, vals = [], []
        for p, k in groups:
            r = next((r for r in rows if r["method"] == m and r["patient"] == p and r["kernel"] == k), None)
            if r is None:
                cells.append("-")
                continue
            cells.append(f"{r['gain']:+.2f}" + (" (seen)" if r.get("seen") else ""))
            if not r.get("seen"):
                vals.extend([r["gain"]] * r["n"])  # slice-weighted mean
        mean = f"{np.mean(vals):+.2f}" if vals else "-"
        print(f"| {m} | {' | '.join(cells)} | {mean} |")
    print("\nPer group: PSNR/SSIM/RMSE soft tissue [-160, 240] HU and full [-1000, 1000] HU; noise std (HU, "
          "no reference) and NPS peak (cycles/mm) in flat soft tissue; seconds per 512x512 slice (2-core CPU).\n")
    print("| patient | kernel | n | method | PSNR soft | SSIM soft | RMSE soft | PSNR full | SSIM full | noise HU "
          "| NPS peak | NPS mean f | structure | s/slice |")
    print("|---" * 14 + "|")
    for r in rows:
        def f(key: str, fmt: str) -> str:
            v = r.get(key)
            return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

        print(f"| {r['patient']} | {r['kernel']} | {r['n']} | {r['method']}{' (seen)' if r.get('seen') else ''} | "
              f"{f('psnr_soft_tissue', '.2f')} | {f('ssim_soft_tissue', '.4f')} | {f('rmse_soft_tissue', '.1f')} | "
              f"{f('psnr_full', '.2f')} | {f('ssim_full', '.4f')} | {f('noise_hu', '.1f')} | {f('nps_peak', '.3f')} | "
              f"{f('nps_mean_f', '.3f')} | {f('structure', '+.2f')} | "
              f"{f('seconds', '.2f')} |")


if __name__ == "__main__":
    main()
