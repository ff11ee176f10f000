"""`ldct denoise` speed and memory: the inference pipeline against a plain PyTorch loop, same network, same run.

Usage::

    OMP_NUM_THREADS=2 python bench/denoise.py                     # bundled default (if installed) + RED-CNN
    python bench/denoise.py --models default redcnn runs/x --slices 8 --memory-slices 200

For each model (``default``/a name/a path as ``--model`` takes it, ``redcnn`` = the published RED-CNN,
10 layers of 96 channels, or ``small`` = a 5x16 DnCNN, both with random weights: speed does not depend on them) it prints, per device (CPU with
``--threads`` threads; CUDA too when present, fp32 and bf16):

- slices/s of :meth:`ldct.Denoiser.denoise_array` on 512x512 slices (real CT: the bundled sample scan,
  repeated to ``--slices``), and of a plain loop ``net_to_hu(net(hu_to_net(x)))`` over the same batches;
  the **overhead ratio** = plain slices/s / pipeline slices/s (target <= 1.2);
- seconds per slice, and for CUDA the projected time of a 512-slice volume;
- on the CPU, the same :meth:`~ldct.Denoiser.denoise_array` on ONNX Runtime (``Denoiser.use_backend``) against
  PyTorch: slices/s of both, the speed-up, the largest HU difference, the export time (once per model).

Then, in a fresh subprocess per model, the **peak resident memory** (VmHWM, reset before inference) of denoising a
``--memory-slices`` volume (default 200 slices of 512x512: 210 MB of float32 in, 210 MB out) with
:meth:`ldct.Denoiser.denoise_array`, against the memory held before inference starts. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def sample_volume(n: int) -> np.ndarray:
    """(n, 512, 512) float32 HU: the bundled sample scan's slices, repeated."""
    from ldct.commands.sample import sample_dir
    from ldct.io import read_volume

    vol = read_volume(sample_dir()).data
    reps = -(-n // vol.shape[0])
    return np.ascontiguousarray(np.concatenate([vol] * reps)[:n], dtype=np.float32)


def load(spec: str):
    """(name, denoiser, dose) for a model spec; 'redcnn' = published RED-CNN and 'small' = a 5-layer
    16-channel DnCNN, both with random weights (speed and memory do not depend on them)."""
    from ldct import Denoiser
    from ldct.hu import DEFAULT_NET_WINDOW

    if spec in ("redcnn", "small"):
        from ldct.models.specs import build_network

        torch.manual_seed(0)
        if spec == "redcnn":
            return "RED-CNN (96 ch, random init)", Denoiser(build_network({"name": "redcnn"}),
                                                             window=DEFAULT_NET_WINDOW), None
        net = build_network({"name": "dncnn", "depth": 5, "width": 16, "batch_norm": False})
        return "small DnCNN (5x16, random init)", Denoiser(net, window=DEFAULT_NET_WINDOW), None
    m = Denoiser.load(spec)
    return m.describe(), m, (0.25 if m.dose_conditioned else None)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_loop(den, vol, *, batch: int, device: str, dose, precision: str) -> np.ndarray:
    """The baseline: batches of slices through the network, HU in and out, nothing else."""
    from ldct.hu import hu_to_net, net_to_hu

    out = np.empty_like(vol)
    window = den.window
    module = den.net.to(device).eval()
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision)
    with torch.inference_mode():
        for i in range(0, len(vol), batch):
            x = torch.from_numpy(vol[i : i + batch]).to(device)[:, None]
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None and device.startswith("cuda")):
                y = module(hu_to_net(x, window)) if dose is None else module(
                    hu_to_net(x, window), torch.full((len(x),), dose, device=device))
            out[i : i + batch] = net_to_hu(y.float(), window)[:, 0].cpu().numpy()
    return out


def pipeline(den, vol, *, batch: int, device: str, dose, precision: str) -> np.ndarray:
    return den.denoise_array(vol, dose, batch_size=batch, device=device, precision=precision,
                             progress=lambda d, t: None)


def timed_pair(fa, fb, device: str, repeats: int) -> tuple[float, float]:
    """Best wall times of ``fa`` and ``fb``: one warm-up call each, then ``repeats`` alternating calls
    (so that neither side profits from a warmer machine)."""
    best = [float("inf"), float("inf")]
    for k in range(repeats + 1):
        for i, fn in enumerate((fa, fb)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if k > 0:
                best[i] = min(best[i], time.perf_counter() - t0)
    return best[0], best[1]


def bench_speed(spec: str, args: argparse.Namespace, vol: np.ndarray) -> list[dict]:
    name, den, dose = load(spec)
    channels = den.channels
    rows = []
    devices = [("cpu", "32")]
    if torch.cuda.is_available():
        devices += [("cuda", "32"), ("cuda", "bf16")]
    for device, precision in devices:
        n = args.slices if device == "cpu" else args.gpu_slices
        v = vol[:n] if len(vol) >= n else sample_volume(n)
        kw = {"batch": args.batch_size if device == "cpu" else args.gpu_batch_size, "device": device,
              "dose": dose, "precision": precision}
        reps = args.repeats if device == "cpu" else max(args.repeats, 3)
        if channels != 1:
            print(f"{name}: {channels}-channel (2.5D) model, no plain-loop baseline", flush=True)
        t_pipe, t_plain = timed_pair(
            lambda v=v, kw=kw: pipeline(den, v, **kw),
            (lambda v=v, kw=kw: plain_loop(den, v, **kw)) if channels == 1 else (lambda: None),
            device, reps)
        t_plain = t_plain if channels == 1 else float("nan")
        row = {"model": name, "device": device, "precision": precision, "slices": n, "batch": kw["batch"],
               "pipeline_slices_per_s": n / t_pipe, "plain_slices_per_s": n / t_plain,
               "overhead_ratio": t_pipe / t_plain, "s_per_slice": t_pipe / n}
        if device == "cuda":
            row["projected_512_slices_s"] = 512 * t_pipe / n
            row["cuda_peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
        rows.append(row)
        print(json.dumps(row), flush=True)
        if device == "cpu" and not args.no_onnx:
            rows.append(bench_backends(name, den, v, kw, reps))
    return rows


def bench_backends(name: str, den, v: np.ndarray, kw: dict, reps: int) -> dict:
    """The same denoising on ONNX Runtime and on PyTorch (CPU), alternating; the export (once per model, then
    cached) is timed apart. What ``ldct denoise --backend auto`` is chosen by."""
    from ldct.errors import LdctError

    t0 = time.perf_counter()
    try:
        ort = den.use_backend("onnxruntime")
    except LdctError as exc:
        row = {"model": name, "device": "cpu", "backend": "onnxruntime", "error": exc.message}
        print(json.dumps(row), flush=True)
        return row
    t_export = time.perf_counter() - t0
    t_ort, t_torch = timed_pair(lambda: pipeline(ort, v, **kw), lambda: pipeline(den, v, **kw), "cpu", reps)
    diff = float(np.abs(pipeline(ort, v[:1], **kw) - pipeline(den, v[:1], **kw)).max())
    row = {"model": name, "device": "cpu", "slices": len(v), "batch": kw["batch"],
           "onnxruntime_slices_per_s": len(v) / t_ort, "torch_slices_per_s": len(v) / t_torch,
           "onnxruntime_speedup": t_torch / t_ort, "export_or_cache_load_s": t_export, "max_abs_diff_hu": diff}
    print(json.dumps(row), flush=True)
    return row


def _status_mb(field: str) -> float:
    """VmRSS / VmHWM (peak RSS) of this process from /proc (MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024
    return float("nan")


def memory_child(spec: str, n: int, batch: int, device: str, threads: int) -> None:
    torch.set_num_threads(threads)
    name, den, dose = load(spec)
    vol = sample_volume(n)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (Linux >= 4.0)
    before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    out = den.denoise_array(vol, dose, batch_size=batch, device=device)
    dt = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    print(json.dumps({"model": name, "slices": n, "batch": batch, "device": device,
                      "volume_mb": vol.nbytes / 1e6, "output_mb": out.nbytes / 1e6,
                      "rss_before_inference_mb": before, "peak_rss_mb": peak,
                      "inference_peak_increase_mb": peak - before, "seconds": dt}))


def bench_memory(spec: str, args: argparse.Namespace) -> dict | None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cmd = [sys.executable, __file__, "--memory-child", spec, str(args.memory_slices), str(args.batch_size), device,
           str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if res.returncode != 0:
        print(f"memory run of {spec} failed: {res.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    row = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, help="default: bundled 'default' (if installed) + redcnn")
    p.add_argument("--slices", type=int, default=2, help="512x512 slices timed on CPU")
    p.add_argument("--gpu-slices", type=int, default=64, help="512x512 slices timed on CUDA")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--gpu-batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--memory-slices", type=int, default=200)
    p.add_argument("--memory-models", nargs="*", default=None,
                   help="models for the peak-memory run (default: the same as --models, without redcnn on CPU - "
                        "a 200-slice full RED-CNN takes ~20 min on 2 cores - or 'small' when none is left)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    p.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        spec, n, batch, device, threads = args.memory_child
        memory_child(spec, int(n), int(batch), device, int(threads))
        return
    torch.set_num_threads(args.threads)
    from ldct.model_zoo import bundled_dir

    has_default = (bundled_dir() / "default.safetensors").is_file()
    models = args.models or (["default"] if has_default else []) + ["redcnn"]
    print(f"torch {torch.__version__}, {args.threads} CPU threads, CUDA: "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}", flush=True)
    if not has_default and args.models is None:
        print("no bundled default model installed: timing RED-CNN only", flush=True)
    vol = sample_volume(max(args.slices, 1))
    rows = [r for m in models for r in bench_speed(m, args, vol)]
    mem_models = args.memory_models
    if mem_models is None:
        mem_models = [m for m in models if m != "redcnn" or torch.cuda.is_available()] or ["small"]
    mem = [r for m in mem_models if (r := bench_memory(m, args))]

    print("\nspeed (512x512 slices):")
    print(f"{'model':44s} {'device':6s} {'prec':5s} {'pipeline sl/s':>13s} {'plain sl/s':>11s} {'overhead':>9s}"
          f" {'s/slice':>8s}")
    for r in (r for r in rows if "pipeline_slices_per_s" in r):
        print(f"{r['model'][:44]:44s} {r['device']:6s} {r['precision']:5s} {r['pipeline_slices_per_s']:13.3f} "
              f"{r['plain_slices_per_s']:11.3f} {r['overhead_ratio']:8.3f}x {r['s_per_slice']:8.3f}"
              + (f"  512 slices: {r['projected_512_slices_s']:.1f} s" if "projected_512_slices_s" in r else ""))
    backends = [r for r in rows if "onnxruntime_slices_per_s" in r or "error" in r]
    if backends:
        print("\nbackends on the CPU (same Denoiser.denoise_array; ldct denoise --backend auto picks ONNX Runtime):")
        print(f"{'model':44s} {'torch sl/s':>10s} {'ORT sl/s':>9s} {'speed-up':>9s} {'max |diff| HU':>13s}"
              f" {'export s':>9s}")
        for r in backends:
            if "error" in r:
                print(f"{r['model'][:44]:44s} ONNX Runtime unavailable: {r['error']}")
                continue
            print(f"{r['model'][:44]:44s} {r['torch_slices_per_s']:10.3f} {r['onnxruntime_slices_per_s']:9.3f} "
                  f"{r['onnxruntime_speedup']:8.2f}x {r['max_abs_diff_hu']:13.4f} {r['export_or_cache_load_s']:9.1f}")
    if mem:
        print(f"\npeak memory (VmHWM), {args.memory_slices} slices of 512x512:")
        for r in mem:
            print(f"{r['model'][:44]:44s} volume {r['volume_mb']:.0f} MB + output {r['output_mb']:.0f} MB; "
                  f"RSS before inference {r['rss_before_inference_mb']:.0f} MB, peak {r['peak_rss_mb']:.0f} MB "
                  f"(+{r['inference_peak_increase_mb']:.0f} MB), {r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
