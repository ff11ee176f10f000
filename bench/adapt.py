"""``ldct denoise --adapt`` on real low dose: a model adapted per series to each real quarter-dose scan
(self-supervised, the full dose never used), scored against the real full dose.

    python bench/adapt.py [--root ../shared/real_pairs/mayo] [--model default] [--steps 200] [--lr 2e-4 5e-5]

For each patient/kernel group (one series) and each learning rate: the gain in PSNR over the quarter dose
(soft-tissue window [-160, 240] HU, data range 400) without and with adaptation, the seconds spent adapting,
the self-supervised error before/after, the scan's noise correlation between neighbouring pixels, and the
remaining noise std / NPS mean frequency (``ldct.metrics.task.noise_texture`` in the full dose's flat tissue).
A scan whose noise is too correlated is not adapted (``ldct.infer.adapt.MAX_NOISE_CORRELATION``); ``--force``
adapts it anyway, to show why.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_pairs import DEFAULT_PAIRS, find_groups, load_pairs, texture  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_PAIRS)
    ap.add_argument("--model", default="default")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, nargs="+", default=[2e-4])
    ap.add_argument("--force", action="store_true", help="adapt scans with correlated noise too")
    args = ap.parse_args()

    import ldct.infer.adapt as ad
    from ldct import Denoiser
    from ldct.metrics import compute_metrics

    def psnr(img: np.ndarray, fd: np.ndarray) -> float:
        return float(np.mean([compute_metrics(i, f, ["soft_tissue"])["psnr_soft_tissue"] for i, f in zip(img, fd)]))

    print("| group | n | noise corr. | model | lr | gain dB | adapt s | error before -> after | noise HU | NPS mean f |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for g in find_groups(args.root):
        qd, fd, sp = load_pairs(g)
        qd = qd.astype(np.float32)
        den = Denoiser.load(args.model)
        base = psnr(qd, fd)
        out0 = den.denoise_array(qd)
        corr = ad.scan_noise_correlation(qd)
        tex = np.nanmean([texture(o, f, sp) for o, f in zip(out0, fd)], axis=0)
        name = f"{g['patient']} {g['kernel']}"
        print(f"| {name} | {len(qd)} | {corr:.2f} | {args.model} | - | {psnr(out0, fd) - base:+.2f} | - | - | "
              f"{tex[0]:.1f} | {tex[2]:.3f} |", flush=True)
        for lr in args.lr:
            t0 = time.perf_counter()
            a, rep = ad.adapt(den, qd, steps=args.steps, seed=0, lr=lr,
                              max_correlation=1.0 if args.force else ad.MAX_NOISE_CORRELATION)
            sec = time.perf_counter() - t0
            out = a.denoise_array(qd)
            tex = np.nanmean([texture(o, f, sp) for o, f in zip(out, fd)], axis=0)
            err = "not adapted" if rep.skipped else f"{rep.loss_before:.5f} -> {rep.loss_after:.5f}"
            print(f"| {name} | {len(qd)} | {corr:.2f} | adapted {args.steps} | {lr:g} | {psnr(out, fd) - base:+.2f} | "
                  f"{sec:.0f} | {err} | {tex[0]:.1f} | {tex[2]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
