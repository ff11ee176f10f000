"""A small real denoiser for the inference/denoise/report tests, trained once per test session.

DnCNN (5 layers, 16 channels, receptive-field radius 5 px) trained for 60 steps with the supervised method on patches of real
Mayo L067 slices (two smooth-kernel slices) with correlated Gaussian noise added (std ~40 HU), then
saved as an exported ldct model folder (``weights.safetensors`` + ``meta.json``) with the engine's
own ``make_meta``/``save_weights``. It denoises for real, so tests can assert that noise goes down.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

MAYO_TRAIN = ("L067_FD_3mm_smooth_0040.raw", "L067_FD_3mm_smooth_0070.raw")
NOISE_HU = 40.0
_CACHE: dict[str, Path] = {}


def mayo_slice(shared_data: Path, name: str) -> np.ndarray:
    """(512, 512) float32 HU of one raw Mayo slice (HU = value - 1024)."""
    raw = np.fromfile(shared_data / "mayo_L067_fd_raw" / name, dtype="<u2").reshape(512, 512)
    return raw.astype(np.float32) - 1024.0


def correlated_noise(shape: tuple[int, ...], std: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise smoothed in-plane (CT-like correlated texture) rescaled to ``std`` HU."""
    n = rng.normal(size=shape)
    n = ndi.gaussian_filter(n, (0,) * (len(shape) - 2) + (0.7, 0.7))
    return (n / n.std() * std).astype(np.float32)


def train_small_model(shared_data: Path, out_dir: Path, steps: int = 60, seed: int = 0) -> Path:
    """Train and export the test model to ``out_dir`` (a model folder); returns ``out_dir``."""
    from ldct.engine.checkpoint import make_meta
    from ldct.hu import hu_to_net
    from ldct.methods.supervised import Supervised
    from ldct.models.files import MODEL_KIND, save_weights

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    slices = np.stack([mayo_slice(shared_data, n) for n in MAYO_TRAIN])
    args = {"net": {"name": "dncnn", "depth": 5, "width": 16, "batch_norm": False}, "loss": "l1", "lr": 3e-3,
            "scheduler": None}
    method = Supervised(**args)
    method.train(True)
    p, b = 32, 8
    for step in range(steps):
        ks = rng.integers(0, len(slices), b)
        ys, xs = rng.integers(96, 512 - 96 - p, b), rng.integers(64, 512 - 64 - p, b)
        nd = np.stack([slices[k, y : y + p, x : x + p] for k, y, x in zip(ks, ys, xs)])[:, None]
        ld = nd + correlated_noise(nd.shape, NOISE_HU, rng)
        batch = {"ld": hu_to_net(torch.from_numpy(ld)), "nd": hu_to_net(torch.from_numpy(nd))}
        method.training_step(batch, step)
    method.train(False)
    recipe = {"method": "supervised", "args": args, "data": {"hu_window": [-1000.0, 1000.0], "doses": [0.25]}}
    meta = make_meta(method, recipe, step=steps, kind=MODEL_KIND,
                     data_summary={"description": "test model: Mayo L067 smooth slices + correlated noise"})
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v for k, v in method.weights().items() if k.startswith("net.")}
    save_weights(out_dir / "weights.safetensors", weights, meta)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    return out_dir


def trained_model(shared_data: Path, root: Path) -> Path:
    """The session's test model folder (trained on first use)."""
    if "model" not in _CACHE:
        _CACHE["model"] = train_small_model(shared_data, root / "test_model")
    return _CACHE["model"]
