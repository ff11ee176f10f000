"""Training throughput of every registered CNN denoiser: patches/s for forward + backward + Adam step.

    OMP_NUM_THREADS=2 python bench/train_throughput.py                 # CPU (2 threads) and GPU if present
    python bench/train_throughput.py --networks nafnet unet --batch 16 --size 64 --min-time 10
    python bench/train_throughput.py --set nafnet:width=16 --set unet:width=32

Published sizes (the constructor defaults) unless ``--set NET:key=value`` overrides a keyword argument.
Each measurement runs one warm-up step, then steps until ``--min-time`` seconds have passed (at least
``--min-steps``). "patches/s" is wall-clock; "patches/cpu-s" divides by the CPU time of this process
(all its threads), which stays meaningful on a shared, oversubscribed machine (with 1 thread it is the
idle-machine speed). Speed is a benchmark figure, never a test assertion.
"""

from __future__ import annotations

import argparse
import ast
import time

import torch
import torch.nn.functional as F

import ldct.models  # noqa: F401  (registers the networks)
from ldct.models.registry import NETWORKS

DEFAULT_NETWORKS = ["redcnn", "unet", "resnet", "autoencoder", "nafnet", "dncnn"]


def parse_sets(items: list[str]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for item in items:
        net, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        if not net or not key or not value:
            raise SystemExit(f"--set wants NET:key=value, got {item!r}")
        try:
            parsed: object = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out.setdefault(net, {})[key] = parsed
    return out


def measure(
    name: str, kwargs: dict, device: torch.device, batch: int, size: int, min_time: float, min_steps: int
) -> tuple[float, float, int]:
    """-> (patches/s wall, patches per CPU-second of this process, parameter count)."""
    torch.manual_seed(0)
    net = NETWORKS.build(name, **kwargs).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, size, size, device=device) * 2 - 1
    t = (x + 0.05 * torch.randn_like(x)).clamp(-1, 1)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.l1_loss(net(x), t).backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up (allocations, cuDNN autotune)
    sync()
    steps, start, cpu0 = 0, time.perf_counter(), time.process_time()
    while steps < min_steps or time.perf_counter() - start < min_time:
        step()
        steps += 1
        sync()
    dt = (time.perf_counter() - start) / steps
    cpu = (time.process_time() - cpu0) / steps
    return batch / dt, batch / cpu, sum(p.numel() for p in net.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=DEFAULT_NETWORKS)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument(
        "--devices", nargs="+", default=None, help="cpu, cuda (default: cpu, and cuda if present)"
    )
    ap.add_argument("--min-time", type=float, default=5.0, help="seconds measured per network and device")
    ap.add_argument("--min-steps", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="NET:key=value")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    sets = parse_sets(args.sets)
    print(
        f"# forward+backward+Adam, batch {args.batch} of {args.size}x{args.size}x1, torch {torch.__version__}"
    )
    for dev in devices:
        device = torch.device(dev)
        label = f"cpu ({args.threads} threads)" if dev == "cpu" else torch.cuda.get_device_name(device)
        print(f"\n## {label}")
        print(f"{'network':<12} {'params':>10} {'patches/s':>10} {'patches/cpu-s':>14}  kwargs")
        for name in args.networks:
            kw = sets.get(name, {})
            ps, pc, n = measure(name, kw, device, args.batch, args.size, args.min_time, args.min_steps)
            print(
                f"{name:<12} {n / 1e6:>9.2f}M {ps:>10.2f} {pc:>14.2f}  {kw or 'published defaults'}",
                flush=True,
            )


if __name__ == "__main__":
    main()
