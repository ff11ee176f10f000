"""``data.kind: photos``: a folder of PNG/JPG photographs (e.g. skin-lesion pictures) with added noise.

Photographs are not CT: there is no HU, no patient id and no dose. Each file is one image; clean/noisy
pairs are made on the fly with the simulator's image-domain mode (:func:`ldct.simulate.image_noise`):

- ``sim.mode``: ``gaussian`` (``x + sigma * n``) or ``poisson-gaussian`` (signal-dependent, ``gain``);
- ``sim.sigma`` (and ``sim.gain``) are in 8-bit intensity units (0..255; multiplied by 257 for 16-bit
  files, so one recipe fits both), the noisy image clipped to the file's range;
- intensities are then mapped to the network range [-1, 1] by :func:`photo_to_net` (the only place);
- ``channels: 3`` gives RGB patches (grey files repeated), ``channels: 1`` grey (the mean of RGB).

The split is **by file** (``data.split`` counts/fractions/lists of file names, paths relative to the data
root without their suffix): a photograph has no patient id, so several photos of one person can land in
different parts; put them in one sub-folder per person and list them explicitly if that matters.
Training gets fresh noise on every patch; there is no validation during training (the HU metrics of the
training loop do not apply to photographs), and ``test`` holds the held-out photos (fixed-seed noise),
which ``ldct evaluate`` scores (:mod:`ldct.evaluation.photos`, via :meth:`PhotoDataset.whole`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ldct.errors import LdctError
from ldct.io.limits import is_regular_file

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
#: defaults of ``data.sim`` for photographs (sigma in 8-bit intensity units)
PHOTO_SIM_DEFAULTS: dict[str, Any] = {"mode": "gaussian", "sigma": 15.0, "gain": 0.0}
PHOTO_SIM_KEYS = ("mode", "sigma", "gain")


def find_photos(root: str | Path, include: list[str] | None = None, exclude: list[str] | None = None) -> dict[str, Path]:
    """{id: path} of the PNG/JPG files under ``root`` (a folder or one file); id = relative path without suffix."""
    import fnmatch

    root = Path(root)
    if not root.exists():
        raise LdctError("data path does not exist", root)
    # regular files only: a named pipe, device or folder named *.png is never opened
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and is_regular_file(p))
    out: dict[str, Path] = {}
    for p in files:
        rel = p.name if root.is_file() else p.relative_to(root).as_posix()
        if include and not any(fnmatch.fnmatch(rel, g) for g in include):
            continue
        if exclude and any(fnmatch.fnmatch(rel, g) for g in exclude):
            continue
        out[rel.rsplit(".", 1)[0]] = p
    if not out:
        raise LdctError(f"no photographs ({', '.join(PHOTO_SUFFIXES)}) found", root)
    return out


def read_intensities(path: str | Path, hint: str = "") -> tuple[np.ndarray, float]:
    """(C, H, W) float32 intensities of a photograph as stored (C = 1 or 3; alpha dropped) and its full scale
    (255 or 65535). A CT image (HU) is an error; ``hint`` is appended to that message."""
    from ldct.io import read_volume

    vol = read_volume(path)
    if vol.is_hu:
        raise LdctError("this image is CT (HU), not a photograph" + hint, path)
    data = np.asarray(vol.data[0], dtype=np.float32)
    img = np.moveaxis(data[..., :3], -1, 0) if data.ndim == 3 else data[None]
    return np.ascontiguousarray(img), float(2 ** int(vol.meta.get("bit_depth") or 8) - 1)


def read_photo(path: str | Path, channels: int = 3) -> tuple[np.ndarray, float]:
    """(C, H, W) float32 intensities of a photograph with ``channels`` channels and its full scale (255 or 65535)."""
    img, scale = read_intensities(path, " (use data.kind simulated)")
    if channels == 3 and img.shape[0] == 1:
        img = np.repeat(img, 3, axis=0)
    elif channels == 1 and img.shape[0] == 3:
        img = img.mean(axis=0, keepdims=True)
    return np.ascontiguousarray(img), scale


def photo_to_net(x: np.ndarray, full_scale: float) -> np.ndarray:
    """Intensities [0, full_scale] -> network range [-1, 1] (float32)."""
    return (np.asarray(x, dtype=np.float32) * (2.0 / full_scale) - 1.0).astype(np.float32)


def add_photo_noise(img: np.ndarray, full_scale: float, sim: dict[str, Any], seed: int) -> np.ndarray:
    """Noisy copy of (C, H, W) intensities with ``sim`` (sigma/gain in 8-bit units, scaled to 16-bit files)."""
    from ldct.simulate import image_noise

    unit = full_scale / 255.0
    return image_noise(img, mode=sim["mode"], sigma=float(sim["sigma"]) * unit, gain=float(sim.get("gain") or 0) * unit,
                       black=0.0, seed=seed, clip=(0.0, full_scale))


class PhotoDataset(Dataset):
    """Clean/noisy photographs: random patches (``patch_size``) for training, whole images otherwise.

    Items: ``{"ld": (C, P, P), "nd": (C, P, P)}`` in [-1, 1], ``"dose"`` 1.0 (photos have no dose),
    ``patient_id`` the file id, ``slice_index`` 0. Patches get fresh noise each time (seeded by
    seed/epoch/index); whole images a fixed noise per file.
    """

    def __init__(self, files: dict[str, Path], *, sim: dict[str, Any], channels: int = 3,
                 patch_size: int | None = 64, augment: bool = True, length: int | None = None, seed: int = 0,
                 keep: int = 64):
        self.ids, self.paths = list(files), [files[k] for k in files]
        self.sim, self.channels, self.patch_size, self.augment = dict(sim), channels, patch_size, augment
        self.length = len(self.ids) if length is None or patch_size is None else length
        self.seed, self.epoch, self._keep = seed, 0, keep
        self._cache: OrderedDict[int, tuple[np.ndarray, float]] = OrderedDict()

    def __len__(self) -> int:
        return self.length if self.ids else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _image(self, k: int) -> tuple[np.ndarray, float]:
        if k not in self._cache:
            img, scale = read_photo(self.paths[k], self.channels)
            if self.patch_size is not None and min(img.shape[1:]) < self.patch_size:
                raise LdctError(f"image {img.shape[1]}x{img.shape[2]} is smaller than data.patch_size="
                                f"{self.patch_size}", self.paths[k])
            self._cache[k] = (img, scale)
            while len(self._cache) > self._keep:
                self._cache.popitem(last=False)
        self._cache.move_to_end(k)
        return self._cache[k]

    def noise_seed(self, k: int) -> int:
        """The fixed noise seed of file ``k`` in whole-image mode (from ``seed`` and the file id)."""
        return int(hashlib.sha1(f"{self.seed}:{self.ids[k]}".encode()).hexdigest()[:8], 16)

    def whole(self, k: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(noisy, clean, full_scale) of file ``k``: whole (C, H, W) intensities, fixed-seed noise (what
        whole-image items hold before :func:`photo_to_net`; ``ldct evaluate`` scores these)."""
        img, scale = self._image(int(k))
        return add_photo_noise(img, scale, self.sim, self.noise_seed(int(k))), img, scale

    def __getitem__(self, index: int) -> dict[str, Any]:
        from ldct.data.patches import augment_pair, uniform_crop

        if self.patch_size is None:  # whole image, fixed noise per file
            k = int(index)
            img, scale = self._image(k)
            seed = self.noise_seed(k)
            clean = img
        else:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            k = int(rng.integers(len(self.ids)))
            img, scale = self._image(k)
            crop = uniform_crop(img.shape[1:], self.patch_size, rng)
            clean = img[:, crop.y:crop.y + crop.size, crop.x:crop.x + crop.size]
            seed = int(rng.integers(2**31 - 1))
        noisy = add_photo_noise(clean, scale, self.sim, seed)
        if self.patch_size is not None and self.augment:
            noisy, clean = augment_pair(noisy, clean, rng)
        return {"ld": torch.from_numpy(photo_to_net(noisy, scale)), "nd": torch.from_numpy(photo_to_net(clean, scale)),
                "dose": torch.tensor(1.0), "patient_id": self.ids[k], "slice_index": 0, "kernel": "", "z_mm": 0.0}


def build_photo_datasets(cfg: Any, *, run_dir: Path | None, seed: int = 0) -> Any:
    """The :class:`ldct.data.build.DataBundle` of ``kind: photos`` (split by file, written to split.json)."""
    from ldct.data.bundle import DataBundle
    from ldct.data.split import make_split, write_split

    files = find_photos(cfg.root, cfg.include, cfg.exclude)
    split = make_split(list(files), cfg.split, source=cfg.root)
    parts = {p: {k: files[k] for k in getattr(split, p)} for p in ("train", "val", "test")}
    common = {"sim": cfg.sim, "channels": cfg.channels, "seed": seed}
    train = PhotoDataset(parts["train"], patch_size=cfg.patch_size, augment=cfg.augment,
                         length=cfg.samples_per_epoch, **common)
    scale = train._image(0)[1]  # the first photo is readable and large enough; its full scale
    val = PhotoDataset({}, patch_size=None, **common)
    test = PhotoDataset(parts["test"], patch_size=None, **{**common, "seed": cfg.seed})
    warnings = [("photographs: no validation during training (the HU metrics do not apply); "
                 "held-out files are listed in split.json")]
    summary = {
        "kind": "photos", "root": str(cfg.root), "channels": cfg.channels, "patch_size": cfg.patch_size,
        "sim": cfg.sim, "full_scale": scale, "noise_seed": cfg.seed, "split": split.to_dict(),
        "slices": {p: len(v) for p, v in parts.items()},
        "patients": {k: {"part": split.part_of(k), "slices": 1} for k in files},
        "warnings": warnings,
    }
    if run_dir is not None:
        write_split(split, run_dir, {"data_root": str(cfg.root), "split_by": "file", "patients": summary["patients"]})
    return DataBundle(train, val, test, summary["split"], summary, cfg, split)  # type: ignore[arg-type]
