"""Torch datasets over slice records: training patches, whole slices for evaluation, unpaired patches,
low-dose-only patches (self-supervised training).

Items are dicts. Image tensors are in network range (``ldct.hu.hu_to_net`` with the data window), shaped
(C, h, w) for ``"ld"`` and (C, H, W) for ``"nd"`` (``H = h * downsample``); ``"dose"`` is a float32 scalar;
metadata travels along: ``patient_id`` (str), ``slice_index`` (int), ``kernel`` (str, '' if unknown),
``z_mm`` (float).

Randomness is a pure function of (seed, epoch, index): call :meth:`PatchDataset.set_epoch` each epoch
for new patches; a resumed run that restores the epoch sees the same patches again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ldct.data.config import SAMPLE_BY
from ldct.data.patches import apply_crop, augment_pair, body_mask, check_size, sample_crop
from ldct.data.store import SliceRecord, SliceStore
from ldct.errors import LdctError
from ldct.hu import DEFAULT_NET_WINDOW, Window, hu_to_net


def _meta(rec: SliceRecord) -> dict[str, Any]:
    return {"patient_id": rec.patient_id, "slice_index": int(rec.slice_index), "kernel": rec.kernel or "",
            "z_mm": float(rec.z_mm)}


class PatchDataset(Dataset):
    """Random body-biased training patches from paired or simulated slices.

    Each item draws a slice (uniformly over slices, or with ``sample_by="patient"`` a patient uniformly and
    then one of its slices, so a long series does not outweigh the other patients), a dose (one of
    ``doses``, or uniform in ``dose_range`` with ``fresh_noise``), a crop of ``patch_size`` with at least
    ``body_fraction`` body pixels when possible, and (with ``augment``) one of the 8 flips/rotations applied
    to both images.
    """

    def __init__(self, store: SliceStore, records: list[SliceRecord], *, doses: list[float],
                 patch_size: int = 64, scale: int = 1, channels: int = 1, window: Window = DEFAULT_NET_WINDOW,
                 augment: bool = True, body_fraction: float = 0.3, body_threshold_hu: float = -500.0,
                 length: int = 200000, seed: int = 0, fresh_noise: bool = False,
                 dose_range: tuple[float, float] | None = None, sample_by: str = "slice"):
        if not records:
            raise LdctError("no training slices (check data.split and data.include/exclude)")
        self.store, self.records, self.doses = store, records, list(doses)
        self.patch_size, self.scale, self.channels, self.window = patch_size, scale, channels, window
        self.augment, self.body_fraction, self.body_threshold = augment, body_fraction, body_threshold_hu
        self.length, self.seed, self.fresh_noise, self.dose_range = length, seed, fresh_noise, dose_range
        self.epoch = 0
        if sample_by not in SAMPLE_BY:
            raise ValueError(f"sample_by must be one of {SAMPLE_BY}, got {sample_by!r}")
        self.sample_by = sample_by
        by_patient: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            by_patient.setdefault(r.patient_id, []).append(i)
        self._patients = list(by_patient.values())

    def __len__(self) -> int:
        return self.length

    def _record(self, rng: np.random.Generator) -> SliceRecord:
        if self.sample_by == "patient":
            slices = self._patients[int(rng.integers(len(self._patients)))]
            return self.records[slices[int(rng.integers(len(slices)))]]
        return self.records[int(rng.integers(len(self.records)))]

    def set_epoch(self, epoch: int) -> None:
        """New random patches for each epoch (deterministic given seed, epoch and index)."""
        self.epoch = int(epoch)

    def _dose(self, rng: np.random.Generator) -> float:
        if self.fresh_noise and self.dose_range is not None:
            return float(rng.uniform(*self.dose_range))
        return float(self.doses[int(rng.integers(len(self.doses)))])

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        rec = self._record(rng)
        dose = self._dose(rng)
        nd = self.store.nd(rec, self.channels)
        check_size(nd.shape, self.patch_size, rec.source)
        ld = self.store.ld(rec, dose, self.channels, rng if self.fresh_noise else None)
        crop = sample_crop(body_mask(nd, self.body_threshold), self.patch_size, rng,
                           min_body=self.body_fraction, scale=self.scale)
        nd_p, ld_p = apply_crop(nd, ld, crop, self.scale)
        if self.augment:
            ld_p, nd_p = augment_pair(ld_p, nd_p, rng)
        return {"ld": torch.from_numpy(hu_to_net(ld_p, self.window)),
                "nd": torch.from_numpy(hu_to_net(nd_p, self.window)),
                "dose": torch.tensor(dose, dtype=torch.float32), "body_fraction": float(crop.body_fraction),
                **_meta(rec)}


class MixedPatchDataset(Dataset):
    """Training patches drawn from several :class:`PatchDataset` sources (``data.mix``): item ``i`` comes
    from source ``k`` with probability ``weights[k]`` (a pure function of seed, epoch and index), and is that
    source's item ``i``. Items carry ``source`` (the source's index, 0 = the main data)."""

    def __init__(self, sources: list[PatchDataset], weights: list[float], *, seed: int = 0):
        if len(sources) != len(weights) or not sources:
            raise ValueError("one weight per source")
        w = np.asarray(weights, dtype=np.float64)
        if (w <= 0).any():
            raise ValueError(f"weights must be positive, got {weights}")
        self.sources, self.weights, self.seed, self.epoch = list(sources), w / w.sum(), seed, 0

    @property
    def records(self) -> list[SliceRecord]:
        return [r for s in self.sources for r in s.records]

    def __len__(self) -> int:
        return len(self.sources[0])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for s in self.sources:
            s.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index), 1])  # 1: not the sources' own stream
        k = int(rng.choice(len(self.sources), p=self.weights))
        return {**self.sources[k][index], "source": k}


class SliceDataset(Dataset):
    """Whole slices for validation and evaluation: every (slice, dose) pair, in a fixed order.

    Low dose is the cached (fixed-seed) simulation or the pair on disk, so every evaluation of a run sees
    the same noisy inputs. :meth:`get_hu` gives the arrays in HU for metrics.
    """

    def __init__(self, store: SliceStore, records: list[SliceRecord], *, doses: list[float], scale: int = 1,
                 channels: int = 1, window: Window = DEFAULT_NET_WINDOW):
        self.store, self.records, self.doses = store, records, list(doses)
        self.scale, self.channels, self.window = scale, channels, window
        self.items = [(r, d) for d in self.doses for r in records if not r.ld or d in r.ld]

    def __len__(self) -> int:
        return len(self.items)

    def get_hu(self, index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """(ld (C, h, w) HU, nd (C, H, W) HU, metadata with ``dose`` and ``source``)."""
        rec, dose = self.items[index]
        nd = self.store.nd(rec, self.channels)
        ld = self.store.ld(rec, dose, self.channels)
        return ld, nd, {**_meta(rec), "dose": float(dose), "source": rec.source,
                        "pixel_spacing_mm": rec.pixel_spacing_mm}

    def __getitem__(self, index: int) -> dict[str, Any]:
        ld, nd, meta = self.get_hu(index)
        meta.pop("source")
        return {"ld": torch.from_numpy(hu_to_net(ld, self.window)),
                "nd": torch.from_numpy(hu_to_net(nd, self.window)),
                **meta, "dose": torch.tensor(meta["dose"], dtype=torch.float32)}

    def subset(self, max_per_dose: int | None) -> SliceDataset:
        """At most ``max_per_dose`` slices per dose, evenly spaced over the records (for quick validation)."""
        if max_per_dose is None or len(self.records) <= max_per_dose:
            return self
        idx = np.unique(np.linspace(0, len(self.records) - 1, max_per_dose).round().astype(int))
        return SliceDataset(self.store, [self.records[i] for i in idx], doses=self.doses, scale=self.scale,
                            channels=self.channels, window=self.window)


class UnpairedPatchDataset(Dataset):
    """Patches of low-dose images and of unrelated normal-dose images (for CycleGAN-style methods).

    ``ld_records`` point at low-dose slices (their ``nd`` location is the low-dose image itself) of dose
    ``ld_dose``; each item pairs a random low-dose patch with a random normal-dose patch, cropped and
    augmented independently.
    """

    def __init__(self, ld_store: SliceStore, ld_records: list[SliceRecord], nd_store: SliceStore,
                 nd_records: list[SliceRecord], *, ld_dose: float = 0.25, patch_size: int = 64, channels: int = 1,
                 window: Window = DEFAULT_NET_WINDOW, augment: bool = True, body_fraction: float = 0.3,
                 body_threshold_hu: float = -500.0, length: int = 200000, seed: int = 0):
        if not ld_records or not nd_records:
            raise LdctError("unpaired training needs low-dose and normal-dose slices in the training patients")
        self.ld_store, self.ld_records, self.nd_store, self.nd_records = ld_store, ld_records, nd_store, nd_records
        self.ld_dose, self.patch_size, self.channels, self.window = ld_dose, patch_size, channels, window
        self.augment, self.body_fraction, self.body_threshold = augment, body_fraction, body_threshold_hu
        self.length, self.seed, self.epoch = length, seed, 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _patch(self, store: SliceStore, rec: SliceRecord, rng: np.random.Generator) -> np.ndarray:
        img = store.nd(rec, self.channels)
        check_size(img.shape, self.patch_size, rec.source)
        crop = sample_crop(body_mask(img, self.body_threshold), self.patch_size, rng, min_body=self.body_fraction)
        p, _ = apply_crop(img, img, crop)
        if self.augment:
            p, _ = augment_pair(p, p, rng)
        return np.ascontiguousarray(p)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        ld_rec = self.ld_records[int(rng.integers(len(self.ld_records)))]
        nd_rec = self.nd_records[int(rng.integers(len(self.nd_records)))]
        ld = self._patch(self.ld_store, ld_rec, rng)
        nd = self._patch(self.nd_store, nd_rec, rng)
        return {"ld": torch.from_numpy(hu_to_net(ld, self.window)), "nd": torch.from_numpy(hu_to_net(nd, self.window)),
                "dose": torch.tensor(self.ld_dose, dtype=torch.float32), **_meta(ld_rec),
                "nd_patient_id": nd_rec.patient_id}


class LowDosePatchDataset(PatchDataset):
    """Patches of low-dose slices alone, for self-supervised training (``data.kind: lowdose``).

    The records' ``nd`` location is the low-dose image itself. Items are ``{"ld": (C, h, w), "dose"}`` plus
    metadata; with ``adjacent`` also ``"ld_adj"``: the same crop of the mean of the previous and next slices
    (the one neighbour at either end of the series), with the same flip/rotation (Noise2Noise from
    neighbouring slices of a thin series: shared anatomy, independent noise). Slices, crops and augmentation are drawn as in :class:`PatchDataset`.
    """

    def __init__(self, store: SliceStore, records: list[SliceRecord], *, dose: float = 0.25,
                 adjacent: bool = False, **kw: Any):
        kw.pop("doses", None)
        super().__init__(store, records, doses=[dose], **kw)
        self.adjacent = bool(adjacent)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        rec = self._record(rng)
        img = self.store.nd(rec, self.channels)
        check_size(img.shape, self.patch_size, rec.source)
        crop = sample_crop(body_mask(img, self.body_threshold), self.patch_size, rng, min_body=self.body_fraction)
        if self.adjacent:
            prev, nxt = rec.neighbours or (rec.nd, rec.nd)
            options = [loc for loc in (prev, nxt) if loc != rec.nd] or [rec.nd]
            others = [self.store.read(loc) for loc in options]
            if any(o.shape[-2:] != img.shape[-2:] for o in others):
                raise LdctError("adjacent slices differ in size", rec.source)
            # the mean of both neighbours: its expectation is the slice's own anatomy to second order in z
            # (linear interpolation), with half the noise power of one neighbour
            other = np.mean(others, axis=0, dtype=np.float32)[None]
            p, q = apply_crop(img, other, crop)
        else:
            p, q = apply_crop(img, img, crop)
        if self.augment:
            p, q = augment_pair(p, q, rng)
        item = {"ld": torch.from_numpy(hu_to_net(np.ascontiguousarray(p), self.window)),
                "dose": torch.tensor(self.doses[0], dtype=torch.float32), "body_fraction": float(crop.body_fraction),
                **_meta(rec)}
        if self.adjacent:
            item["ld_adj"] = torch.from_numpy(hu_to_net(np.ascontiguousarray(q), self.window))
        return item
