"""The GAN methods under DDP (2 CPU processes, gloo): different data on each process, identical weights
afterwards, so every phase's gradients (critic with gradient penalty, frozen-D generator step, pools)
are averaged across processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_gan_methods_keep_processes_in_sync(tmp_path):
    script = Path(__file__).with_name("helpers_gan_ddp.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("wgan_gp", "srgan", "pix2pix", "cyclegan"):
        assert f"{name} ranks agree" in proc.stdout, proc.stdout + proc.stderr[-2000:]
