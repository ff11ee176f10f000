"""Simulator fidelity against real low dose: ldct's simulated 25 % dose of each real full-dose slice vs the
real quarter dose of the same slice (AAPM-Mayo pairs: Mayo's validated projection-domain noise insertion).

    python bench/sim_fidelity.py [--root ../shared/real_pairs/mayo] [--spacing-unknown]

Both low doses are compared through their added noise, which is pure noise: ``real = QD - FD`` and
``sim = simQD - FD``. Per slice: the std of each in flat body soft tissue (HU) and their ratio, and the NPS
mean frequency (cycles/mm) of each (``ldct.metrics.noise_power_spectrum`` on the difference images), then a
summary per patient and kernel. ``--spacing-unknown`` simulates as if the pixel spacing were not stored
(what a ``.npy`` input gets: 1 mm assumed) to show what a wrong spacing costs.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_pairs import DEFAULT_PAIRS, _region, find_groups, load_pairs, soft_roi  # noqa: E402


def added_noise(ld: np.ndarray, fd: np.ndarray, spacing: float) -> tuple[float, float]:
    """(std HU in flat soft tissue, NPS mean frequency cycles/mm) of ``ld - fd``."""
    from ldct.metrics.noise import noise_power_spectrum

    roi = soft_roi(fd)
    std = float(np.std((ld - fd)[roi])) if roi.any() else math.nan
    try:
        f = noise_power_spectrum(ld, fd, pixel_spacing_mm=spacing, region=_region(fd)).mean_frequency
    except ValueError:
        f = math.nan
    return std, f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_PAIRS)
    ap.add_argument("--dose", type=float, default=0.25)
    ap.add_argument("--spacing-unknown", action="store_true", help="simulate with 1 mm assumed spacing")
    ap.add_argument("--filter", default="auto", help="FBP filter of the added noise (auto: matched to the scan)")
    ap.add_argument("--max-slices", type=int, default=0, help="at most N slices per group (0: all)")
    args = ap.parse_args()
    from ldct.simulate import simulate_low_dose

    print("| patient | kernel | slice | real std HU | sim std HU | sim/real | real NPS mean f | sim NPS mean f |")
    print("|---|---|---|---|---|---|---|---|")
    summary = []
    for g in find_groups(args.root):
        qd, fd, spacing = load_pairs(g)
        sim_spacing = 1.0 if args.spacing_unknown else spacing
        ratios, fr, fs = [], [], []
        if args.max_slices:
            qd, fd = qd[: args.max_slices], fd[: args.max_slices]
        for k, (q, f) in enumerate(zip(qd, fd, strict=True)):
            s = simulate_low_dose(f, args.dose, pixel_spacing_mm=sim_spacing, filter=args.filter, seed=k)
            rs, rf = added_noise(q, f, spacing)
            ss, sf = added_noise(s, f, spacing)
            ratios.append(ss / rs)
            fr.append(rf)
            fs.append(sf)
            print(f"| {g['patient']} | {g['kernel']} | {k} | {rs:.1f} | {ss:.1f} | {ss / rs:.2f} | {rf:.3f} | "
                  f"{sf:.3f} |", flush=True)
        summary.append((g["patient"], g["kernel"], len(fd), spacing, ratios, fr, fs))
    print(f"\nSummary (simulated {args.dose:g} dose vs real, added-noise std ratio sim/real; "
          f"{'spacing assumed 1 mm' if args.spacing_unknown else 'pixel spacing from DICOM'}):\n")
    print("| patient | kernel | n | pixel mm | std ratio mean | min | max | NPS mean f real | sim |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p, kern, n, sp, r, fr, fs in summary:
        print(f"| {p} | {kern} | {n} | {sp:.3f} | {np.mean(r):.2f} | {np.min(r):.2f} | {np.max(r):.2f} | "
              f"{np.nanmean(fr):.3f} | {np.nanmean(fs):.3f} |")
    allr = np.concatenate([s[4] for s in summary])
    print(f"\nall {len(allr)} pairs: ratio mean {allr.mean():.2f}, within 10 %: {(np.abs(allr - 1) <= 0.10).sum()}"
          f"/{len(allr)}")


if __name__ == "__main__":
    main()
