"""Low-contrast detectability (the FDA LCD method on real anatomy): does a denoiser keep the d' the low dose had?

    python bench/detectability.py [--scan src/ldct/sample_data/abdomen_dicom] [--doses 0.1 0.25 0.5]
                                  [--models default] [--slices 20] [--json out.json]

1. Backgrounds: the normal-dose slices of a scan no model here trained on (default: the bundled sample,
   the held-out patient of the default model). In each slice up to 8 disk centres in flat soft tissue
   (``ldct.metrics.noise.flat_region``), 40 px apart.
2. For each condition (diameter x contrast) the disks are inserted at every centre of a slice *before*
   the dose is simulated (``ldct.metrics.task.insert_disk``, partial-volume edges); a signal-absent copy
   gets its own noise. The projection-domain simulator (calibrated to the scan, as for training) makes
   each dose from one projection.
3. Each method denoises every present and absent image; ROIs of 33 px around the centres, minus the
   normal-dose background (the anatomy known exactly, as the uniform phantom of the FDA method makes it),
   give the channelized Hotelling observer's d' (Laguerre-Gauss channels, width 1.5 x the disk radius;
   ``ldct.metrics.task.cho_dprime``) per dose, condition and method. What remains in the ROIs is the
   method's noise and whatever it does to the anatomy and to the disk.

A denoiser must not lose detectability the low-dose input had: the table prints d' and the ratio to the
input's, and the task transfer function's MTF50 of the disks' edge at that contrast (``ttf_disk`` on the
ESF averaged over all signal-present ROIs; disks of radius >= 4 px). d' is estimated on the ROIs themselves (resubstitution, 6 channels, ~160 ROIs per class): its
sampling error is ~5-8 %.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ROI = 33


def centres(nd: np.ndarray, n: int = 8, gap: int = 40, margin: int = 20) -> list[tuple[int, int]]:
    from ldct.metrics.noise import flat_region

    region = flat_region(nd, erode_px=10)
    region[:margin], region[-margin:], region[:, :margin], region[:, -margin:] = False, False, False, False
    ys, xs = np.nonzero(region)
    order = np.random.default_rng(0).permutation(len(ys))
    out: list[tuple[int, int]] = []
    for k in order:
        y, x = int(ys[k]), int(xs[k])
        if all((y - a) ** 2 + (x - b) ** 2 >= gap * gap for a, b in out):
            out.append((y, x))
            if len(out) == n:
                break
    return out


def rois(img: np.ndarray, cs: list[tuple[int, int]]) -> np.ndarray:
    h = ROI // 2
    return np.stack([img[y - h: y + h + 1, x - h: x + h + 1] for y, x in cs])


def _mtf(v: float | None) -> str:
    if v is None:
        return "-"  # disk under 4 px radius: too small for an edge spread function
    return f"{v:.3f}" if np.isfinite(v) else "above Nyquist"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scan", type=Path, default=ROOT / "src" / "ldct" / "sample_data" / "abdomen_dicom")
    ap.add_argument("--doses", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    ap.add_argument("--models", nargs="*", default=["default"])
    ap.add_argument("--sizes-mm", type=float, nargs="+", default=[5.0, 10.0])
    ap.add_argument("--contrasts-hu", type=float, nargs="+", default=[7.0, 14.0])
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from ldct import Denoiser
    from ldct.io import read_volume
    from ldct.metrics.task import cho_dprime, insert_disk, ttf_disk
    from ldct.simulate import Simulator

    vol = read_volume(args.scan)
    spacing = float(np.mean(vol.spacing[1:]))
    nd = vol.data[np.unique(np.linspace(0, vol.shape[0] - 1, min(args.slices, vol.shape[0])).round().astype(int))]
    sim = Simulator({"mode": "projection", "filter": "auto"})
    calib = sim.calibrate(vol.data, spacing)
    models = {m: Denoiser.load(m) for m in args.models}
    conds = [(s, c) for s in args.sizes_mm for c in args.contrasts_hu]
    t0 = time.time()
    # samples[(dose, method, cond)] = {"present": [...], "absent": [...]}
    samples: dict[tuple, dict[str, list]] = {}
    for k, bg in enumerate(nd):
        cs = centres(bg)
        if len(cs) < 3:
            continue
        images = {"absent": bg}
        for cond in conds:
            img = bg
            for y, x in cs:
                img = insert_disk(img, (float(y), float(x)), cond[0] / 2 / spacing, cond[1])
            images[cond] = img
        for j, (name, img) in enumerate(images.items()):
            low = sim.simulate(img, args.doses, spacing, seed=1000 * k + j, calibration=calib)
            for dose, ld in low.items():
                outs = {"low-dose input": ld, **{m: den.denoise_array(ld) for m, den in models.items()}}
                for method, out in outs.items():
                    r = rois(out - bg, cs)  # the anatomy known exactly: ROIs of (image - background)
                    for cond in conds:
                        if name == "absent" or name == cond:
                            key = (dose, method, cond)
                            samples.setdefault(key, {"present": [], "absent": []})[
                                "absent" if name == "absent" else "present"].append(r)
        print(f"slice {k + 1}/{len(nd)}: {len(cs)} disk positions ({time.time() - t0:.0f} s)", flush=True)

    rows = []
    for (dose, method, cond), s in sorted(samples.items(), key=lambda kv: (kv[0][0], str(kv[0][2]), kv[0][1])):
        p, a = np.concatenate(s["present"]), np.concatenate(s["absent"])
        radius = cond[0] / 2 / spacing
        d = cho_dprime(p, a, radius_px=radius)
        # the TTF of the disks' edge at this contrast: the ESF averaged over every signal-present ROI
        mtf50 = ttf_disk(p, (ROI // 2, ROI // 2), radius, spacing).mtf50 if radius >= 4 else None
        rows.append({"dose": dose, "method": method, "diameter_mm": cond[0], "contrast_hu": cond[1], "dprime": d,
                     "mtf50": mtf50, "rois_per_class": len(p)})
    base = {(r["dose"], r["diameter_mm"], r["contrast_hu"]): r["dprime"] for r in rows if r["method"] == "low-dose input"}
    print(f"\nCHO d' (Laguerre-Gauss, 6 channels), {args.scan.name}, pixel {spacing:.3f} mm; ratio = d' / the "
          "low-dose input's\n")
    print("| dose | disk | method | d' | ratio | TTF MTF50 (c/mm) | ROIs per class |\n|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["dprime"] / base[(r["dose"], r["diameter_mm"], r["contrast_hu"])]
        r["ratio_to_input"] = ratio
        print(f"| {r['dose']:g} | {r['diameter_mm']:g} mm, {r['contrast_hu']:g} HU | {r['method']} | "
              f"{r['dprime']:.2f} | {ratio:.2f} | {_mtf(r['mtf50'])} | {r['rois_per_class']} |")
    print(f"\n{time.time() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
