"""Helpers for the distillation tests: simulated low-dose slices of real CT, body-biased crops, and a
tiny teacher / student trained with the real methods on a real (CPU) Fabric."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldct.engine.checkpoint import make_meta, save_checkpoint
from ldct.engine.config import validate_method_args
from ldct.hu import hu_to_net
from ldct.methods.base import METHODS

#: a teacher that learns to reconstruct in ~150 steps of 32x32 crops on a CPU: full-resolution latent
TINY_RESNET = {"name": "resnet", "width": 16, "num_blocks": 1}
TEST_DOSES = (0.1, 0.7)


def fabric() -> Any:
    from lightning.fabric import Fabric

    return Fabric(accelerator="cpu", devices=1)


def simulate(hu: np.ndarray, doses: tuple[float, ...], spacing_mm: float, seed: int) -> dict[float, np.ndarray]:
    """(z, y, x) HU -> {dose: the project's projection-domain low-dose simulation (HU)} (one calibration
    and one forward projection for all doses)."""
    from ldct.simulate import simulate_doses

    res = simulate_doses(hu, list(doses), pixel_spacing_mm=spacing_mm, mode="projection", seed=seed)
    return {float(d): np.asarray(v, dtype=np.float32) for d, v in res.low_dose.items()}


class Pairs:
    """Normal-dose slices (z, y, x) HU and their simulated low dose per dose level."""

    def __init__(self, nd: np.ndarray, ld: dict[float, np.ndarray]):
        self.nd, self.ld = nd, ld
        # crop corners whose centre lies inside the body (> -500 HU) on every slice
        self.body = [np.argwhere(s > -500) for s in nd]

    def crops(self, n: int, size: int, rng: np.random.Generator, doses: list[float]) -> dict[str, torch.Tensor]:
        """A batch of n crops (n, 1, size, size) in network range; each crop draws its dose from ``doses``."""
        nds, lds, ds = [], [], []
        h, w = self.nd.shape[1:]
        for _ in range(n):
            k = int(rng.integers(len(self.nd)))
            cy, cx = self.body[k][int(rng.integers(len(self.body[k])))]
            y = int(np.clip(cy - size // 2, 0, h - size))
            x = int(np.clip(cx - size // 2, 0, w - size))
            d = float(doses[int(rng.integers(len(doses)))])
            nds.append(self.nd[k, y : y + size, x : x + size])
            lds.append(self.ld[d][k, y : y + size, x : x + size] if d < 1.0 else nds[-1])
            ds.append(d)
        return {"ld": torch.from_numpy(hu_to_net(np.stack(lds)[:, None])),
                "nd": torch.from_numpy(hu_to_net(np.stack(nds)[:, None])),
                "dose": torch.tensor(ds, dtype=torch.float32)}


def build(method: str, args: dict[str, Any]) -> Any:
    """A method built exactly as the engine builds it from a recipe, set up on a CPU Fabric."""
    m = METHODS.get(method)(**validate_method_args(method, args))
    m.setup(fabric())
    m.train(True)
    return m


def train(method: Any, pairs: Pairs, steps: int, *, size: int, doses: list[float], seed: int,
          batch: int = 8) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for step in range(steps):
        out = method.training_step(pairs.crops(batch, size, rng, doses), step)
    return out


def save_run(run_dir: Path, method: Any, method_name: str, args: dict[str, Any], step: int) -> Path:
    """Write a checkpoint as the engine does (resolved recipe in the metadata); returns the run folder."""
    recipe = {"method": method_name, "args": validate_method_args(method_name, args),
              "data": {"hu_window": [-1000.0, 1000.0]}, "train": {}}
    save_checkpoint(run_dir, method, make_meta(method, recipe, step=step), {"step": step})
    return run_dir


def weights_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    module = getattr(module, "module", module)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@functools.cache
def simulated_abdomen(shared_data: Path) -> tuple[Any, Pairs]:
    """The abdomen series (Volume) and 6 of its slices with low dose simulated at 10 % and 70 % (computed
    once per test session: both distillation test files use it)."""
    from ldct.io import read_volume

    vol = read_volume(shared_data / "abdomen_dicom")
    nd = vol.data[0:18:3]
    return vol, Pairs(nd, simulate(nd, TEST_DOSES, vol.spacing[1], seed=1))
