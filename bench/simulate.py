"""Speed of the low-dose simulator: seconds per 512x512 slice at the default geometry.

    python bench/simulate.py [--device cuda] [--slices 8] [--quick]

Each configuration runs in a fresh process (the allocator settings only act at start-up) and prints
wall-clock and process CPU seconds per slice, best of --repeats. Real Mayo L067 slices from
../shared/data (LDCT_SHARED_DATA) when present, else the bundled sample scan.
Configurations:
  fast         simulate_low_dose at a given i0 (what a training cache / on-the-fly loader pays)
  calibrated   the same with i0=None (flux calibrated to the slices; + one noise FBP)
  batch        --slices slices in one call (slices share the projector's ray geometry)
  exact        variance_downsample=1, view_merge=1 (no shortcuts)
  roundtrip    noiseless full forward projection + ram-lak FBP (the reference projector)
each with glibc defaults, with MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ set, and (``tuned``)
with ldct.simulate.tune_allocator() called in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LDCT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def load_slices(n: int):
    import numpy as np

    files = sorted((DATA / "mayo_L067_fd_raw").glob("*smooth*.raw"))
    if files:
        arr = [np.fromfile(f, "<u2").reshape(512, 512).astype(np.float32) - 1024 for f in files]
        return np.stack([arr[k % len(arr)] for k in range(n)]), 0.68
    from ldct.commands.sample import sample_dir
    from ldct.io import read_volume

    vol = read_volume(sample_dir())
    return vol.data[:n], vol.spacing[2]


def inner(config: str, device: str, slices: int, repeats: int, tuned: bool) -> dict:
    import torch

    from ldct.simulate import default_geometry, fbp, forward_project, simulate_doses, tune_allocator
    from ldct.simulate.physics import hu_to_mu

    if tuned:
        tune_allocator()
    n = slices if config == "batch" else 1
    hu, ps = load_slices(n)
    hu = hu[0] if n == 1 else hu

    def once():
        if config == "roundtrip":
            g = default_geometry(hu.shape[-2:], ps)
            x = torch.as_tensor(hu.reshape(-1, *hu.shape[-2:]), device=device)
            p = forward_project(hu_to_mu(x), g, ps)
            fbp(p, g, hu.shape[-2:], ps, filter="ram-lak").cpu()
            return
        kw = {"pixel_spacing_mm": ps, "seed": 0, "device": device, "i0": None if config == "calibrated" else 2e5}
        if config == "exact":
            kw.update(variance_downsample=1, view_merge=1)
        simulate_doses(hu, [0.25], **kw)

    once()  # warm-up
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        once()
        if device == "cuda":
            torch.cuda.synchronize()
        best_wall = min(best_wall, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    return {"wall_per_slice": best_wall / n, "cpu_per_slice": best_cpu / n, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fast / calibrated / batch only, tuned allocator only")
    ap.add_argument("--configs", default="")
    ap.add_argument("--inner", nargs=2, metavar=("CONFIG", "ALLOC"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inner:
        res = inner(a.inner[0], a.device, a.slices, a.repeats, a.inner[1] == "tuned")
        print(json.dumps(res))
        return
    configs = a.configs.split(",") if a.configs else (
        ["fast", "calibrated", "batch"] if a.quick else ["fast", "calibrated", "batch", "exact", "roundtrip"])
    allocs = ["tuned"] if a.quick else ["default", "env", "tuned"]
    print(f"device={a.device} OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} "
          f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}")
    print(f"{'config':<11} {'allocator':<8} {'wall s/slice':>12} {'cpu s/slice':>12} {'slices/s':>9}")
    for cfg in configs:
        for alloc in allocs:
            env = dict(os.environ)
            if alloc == "env":
                env.update(MALLOC_MMAP_THRESHOLD_=str(32 << 20), MALLOC_TRIM_THRESHOLD_=str(1 << 30))
            cmd = [sys.executable, __file__, "--inner", cfg, alloc, "--device", a.device, "--slices",
                   str(a.slices), "--repeats", str(a.repeats)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if out.returncode:
                print(f"{cfg:<11} {alloc:<8} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{cfg:<11} {alloc:<8} {r['wall_per_slice']:>12.3f} {r['cpu_per_slice']:>12.3f} "
                  f"{1 / r['wall_per_slice']:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
