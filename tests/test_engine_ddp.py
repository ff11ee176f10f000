"""`ldct train --devices 2` on CPU: two DDP processes (gloo), stopped by SIGTERM, resumed to the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch
from helpers_engine import write_paired_folders

from ldct.engine.checkpoint import load_checkpoint, load_train_state

TINY = ["--set", "args.net={name: nafnet, width: 8, enc_blk_nums: [1, 1], middle_blk_num: 1, dec_blk_nums: [1, 1]}",
        "--set", "data.patch_size=32", "--set", "data.samples_per_epoch=64", "--set", "data.split={val: 1, test: 0}",
        "--set", "train.batch_size=4", "--set", "train.val_every=0", "--set", "train.sample_every=0",
        "--set", "train.log_every=2", "--set", "train.ckpt_every=2", "--accelerator", "cpu"]


def _ldct(*args: str) -> list[str]:
    return [sys.executable, "-m", "ldct", "train", "dncnn", *args, *TINY]


def test_two_cpu_processes_ddp_sigterm_and_resume(tmp_path, shared_data):
    data = write_paired_folders(shared_data, tmp_path / "pairs")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_ldct("--data", str(data), "--out", str(run), "--devices", "2", "--max-steps", "2000"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    last = run / "checkpoints" / "last"
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)  # only rank 0 is signalled; the ranks agree to stop together
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "Starting with 2 processes" in out and "distributed_backend=gloo" in out
    assert "interrupted at step" in out and "--resume" in out

    stopped = load_train_state(run / "checkpoints" / last.read_text().strip())
    assert stopped["world_size"] == 2 and len(stopped["rng"]) == 2
    step = stopped["step"]
    assert 2 <= step < 2000
    assert int(stopped["optimizers"]["net"]["state"][0]["step"]) == step

    final = step + 3
    res = subprocess.run(_ldct("--data", str(data), "--out", str(run), "--devices", "2", "--max-steps", str(final),
                               "--resume"), capture_output=True, text=True, env=env, timeout=240, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines() == [str(run.absolute())]  # printed once, by rank 0
    assert f"resumed {run.absolute()} at step {step}" in " ".join(res.stderr.split())
    done = load_train_state(run / "checkpoints" / f"step_{final:07d}")
    assert done["step"] == final and int(done["optimizers"]["net"]["state"][0]["step"]) == final
    method, meta = load_checkpoint(run)
    assert meta["step"] == final and meta["metrics"]["val/psnr_soft_tissue"] > 0  # validated at the end
    assert all(torch.isfinite(v).all() for v in method.weights().values())
    split = json.loads((run / "split.json").read_text())
    assert len(split["val"]) == 1 and not set(split["val"]) & set(split["train"])
