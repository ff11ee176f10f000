"""Resumable state that is not in the networks: random-number generators and the data order.

Everything here is stored as tensors and primitive containers, so ``train_state.pt`` loads with
``torch.load(weights_only=True)`` (no unpickling of arbitrary objects).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


def capture_rng() -> dict[str, torch.Tensor]:
    """This process's Python, NumPy, torch (CPU and CUDA) generator states, as tensors."""
    version, py_state, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    out = {
        "python": torch.tensor([version, *py_state], dtype=torch.int64),
        "python_gauss": torch.tensor([0.0 if gauss is None else 1.0, gauss or 0.0], dtype=torch.float64),
        "numpy_keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_meta": torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
        "numpy_cached": torch.tensor([np_cached], dtype=torch.float64),
        "torch": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def restore_rng(state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"].tolist()
    has_gauss, gauss = state["python_gauss"].tolist()
    random.setstate((int(py[0]), tuple(int(v) for v in py[1:]), gauss if has_gauss else None))
    pos, np_has_gauss = state["numpy_meta"].tolist()
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(pos), int(np_has_gauss),
         float(state["numpy_cached"].item()))
    )
    torch.random.set_rng_state(state["torch"].cpu().to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu().to(torch.uint8))


def gather_rng(rng: dict[str, torch.Tensor], fabric: Any) -> list[dict[str, torch.Tensor]]:
    """Every process's RNG state, on every process (for exact multi-process resume)."""
    world = fabric.world_size
    if world == 1:
        return [rng]
    import torch.distributed as dist

    out: list[dict[str, torch.Tensor]] = [{} for _ in range(world)]
    for key in sorted(rng):
        t = rng[key].to(fabric.device)
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t)
        for r in range(world):
            out[r][key] = parts[r].cpu()
    return out


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` whose order depends only on (seed, epoch) and that can start mid-epoch.

    With one process it is a seeded shuffle. ``skip`` batches' worth of indices are dropped from the
    start of the current epoch on resume, so the data order continues where the checkpoint left it.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int, batch_size: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.skip_batches = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start = self.skip_batches * self.batch_size
        self.skip_batches = 0  # only the first epoch after a resume is shortened
        return iter(indices[start:])

    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size


def sampler_state(epoch: int, batch_in_epoch: int) -> dict[str, Any]:
    return {"epoch": int(epoch), "batch_in_epoch": int(batch_in_epoch)}
