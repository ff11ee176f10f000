"""Small real data for the engine tests: crops of real Mayo L067 slices with CT-like correlated noise.

Training items are random 32x32 patches (a pure function of seed, epoch and index, like
``ldct.data.PatchDataset``); validation items are fixed 96x96 crops with fixed noise. Also writes the
same crops as a paired-folder dataset (``P1/full.npy`` + ``P1/quarter.npy`` ...) that ``ldct train
--data`` reads through the real ``ldct.data`` pipeline.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.utils.data import Dataset

from ldct.hu import hu_to_net

NOISE_HU = 40.0
CORR_PX = 0.4


def mayo_slices(shared_data: Path, names: list[str] | None = None) -> np.ndarray:
    """(n, 512, 512) float32 HU of raw Mayo slices (HU = value - 1024)."""
    folder = shared_data / "mayo_L067_fd_raw"
    files = sorted(folder.iterdir()) if names is None else [folder / n for n in names]
    return np.stack([np.fromfile(f, dtype="<u2").reshape(512, 512).astype(np.float32) - 1024.0 for f in files])


def ct_noise(shape: tuple[int, ...], rng: np.random.Generator, std: float = NOISE_HU,
             corr_px: float = CORR_PX) -> np.ndarray:
    """Gaussian noise smoothed in-plane by ``corr_px`` (slightly correlated), rescaled to ``std`` HU."""
    n = ndi.gaussian_filter(rng.normal(size=shape), (0,) * (len(shape) - 2) + (corr_px, corr_px))
    return (n / n.std() * std).astype(np.float32)


class PatchPairs(Dataset):
    """Random (ld, nd) patches inside the body region of the given slices, noise drawn per item."""

    def __init__(self, hu: np.ndarray, patch: int = 32, length: int = 64, seed: int = 0, nan_from_epoch: int = -1):
        self.hu, self.patch, self.length, self.seed = hu, patch, length, seed
        self.epoch = 0
        self.nan_from_epoch = nan_from_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        k = int(rng.integers(len(self.hu)))
        y, x = (int(v) for v in rng.integers(160, 352 - self.patch, 2))
        nd = self.hu[k, y : y + self.patch, x : x + self.patch]
        ld = nd + ct_noise(nd.shape, rng)
        if 0 <= self.nan_from_epoch <= self.epoch:  # a corrupt input file, as real data sometimes has
            ld = np.full_like(ld, np.nan)
        return {"ld": torch.from_numpy(hu_to_net(ld))[None], "nd": torch.from_numpy(hu_to_net(nd))[None],
                "dose": torch.tensor(0.25)}


class SlicePairs(Dataset):
    """Fixed validation crops (96x96) with fixed noise."""

    def __init__(self, hu: np.ndarray, size: int = 96):
        rng = np.random.default_rng(123)
        self.nd = hu[:, 200 : 200 + size, 200 : 200 + size]
        self.ld = self.nd + ct_noise(self.nd.shape, rng)

    def __len__(self) -> int:
        return len(self.nd)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"ld": torch.from_numpy(hu_to_net(self.ld[i]))[None], "nd": torch.from_numpy(hu_to_net(self.nd[i]))[None],
                "dose": torch.tensor(0.25)}


def bundle(shared_data: Path, *, nan_from_epoch: int = -1, length: int = 64) -> SimpleNamespace:
    """Train on 4 sharp-kernel slices, validate on 2 smooth-kernel slices (same patient: engine tests
    only; patient-level splits are the data package's job and are tested there)."""
    hu = mayo_slices(shared_data)
    return SimpleNamespace(
        train=PatchPairs(hu[:4], length=length, nan_from_epoch=nan_from_epoch),
        val=SlicePairs(hu[7:9]),
        split={"train": ["L067-sharp"], "val": ["L067-smooth"]},
        summary={"source": "mayo_L067_fd_raw crops + correlated Gaussian noise (std 40 HU)"},
    )


def tiny_recipe(**train: Any) -> dict[str, Any]:
    """A resolved supervised recipe with a tiny NAFNet (width 8, one block per level)."""
    from ldct.engine.config import validate_recipe

    t = {"max_steps": 40, "batch_size": 8, "val_every": 20, "ckpt_every": 10, "sample_every": 40, "log_every": 5,
         "keep_checkpoints": 2, "accelerator": "cpu", **train}
    return validate_recipe({
        "method": "supervised",
        "args": {"net": {"name": "nafnet", "width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1,
                         "dec_blk_nums": [1, 1]}, "lr": 3e-3, "loss": "l1"},
        "data": {"patch_size": 32},
        "train": t,
    })


def write_paired_folders(shared_data: Path, root: Path, size: int = 128) -> Path:
    """Three 'patients' (crops of different real slices), each ``full.npy`` + ``quarter.npy`` (2 slices)."""
    hu = mayo_slices(shared_data)
    rng = np.random.default_rng(0)
    for i, pid in enumerate(("P1", "P2", "P3")):
        nd = np.ascontiguousarray(hu[2 * i : 2 * i + 2, 160 : 160 + size, 160 : 160 + size])
        (root / pid).mkdir(parents=True, exist_ok=True)
        np.save(root / pid / "full.npy", nd)
        np.save(root / pid / "quarter.npy", nd + ct_noise(nd.shape, rng))
    return root
