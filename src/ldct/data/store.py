"""Where slices come from: per-slice records, a disk cache, and low dose simulated once per slice.

A :class:`SliceRecord` names one normal-dose slice (which volume, which index, patient, kernel, z) and,
for real or pre-simulated pairs, where its low-dose partner lies for each dose. A :class:`SliceStore`
turns records into HU arrays:

- normal-dose slices are cut from their volume once (the volume is read through ``ldct.io``) and kept as
  ``<cache>/slices/<volume key>/<z>.npy``, so later reads (other epochs, DataLoader workers, other runs
  sharing the cache) load one small file;
- low dose without a partner on disk is made by the recipe's :class:`ldct.simulate.Simulator` (calibrated
  once per volume, the calibration cached beside its slices) and cached as
  ``<cache>/sim/<key>.npy``, the key hashing (volume, slice, dose, seed, simulator parameters), so a slice
  is simulated once per dose; with ``fresh=True`` a new noise realisation is drawn instead (not cached);
- super-resolution pairs downsample the low dose by ``downsample`` (area average) after simulation.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ldct.atomic import atomic_file
from ldct.errors import LdctError
from ldct.volume import Volume

SIM_CACHE_VERSION = 1
#: HU above which a pixel is body (for the per-slice body fraction in index.json)
BODY_HU = -500.0
#: slices with fewer body pixels than this fraction are left out (nothing to denoise, nothing to simulate)
MIN_BODY_FRACTION = 0.01


@dataclass(frozen=True)
class SliceLoc:
    """Slice ``z`` of volume ``volume`` (a key registered with :meth:`SliceStore.add_volume`)."""

    volume: str
    z: int


@dataclass
class SliceRecord:
    """One normal-dose slice and (optionally) its low-dose partners on disk."""

    patient_id: str
    slice_index: int
    z_mm: float
    kernel: str | None
    nd: SliceLoc
    pixel_spacing_mm: float
    ld: dict[float, SliceLoc] = field(default_factory=dict)
    """dose -> low-dose slice on disk (real pairs, manifests); empty = simulate."""
    neighbours: tuple[SliceLoc, SliceLoc] | None = None
    """(previous, next) normal-dose slices for 3-channel (2.5D) input; None = repeat this slice."""
    ld_neighbours: dict[float, tuple[SliceLoc, SliceLoc]] = field(default_factory=dict)
    """dose -> (previous, next) low-dose slices on disk, for 3-channel input."""
    source: str = ""
    """Human-readable origin (file or series folder), for error messages and CSVs."""


class SliceStore:
    """Reads slices of registered volumes (cached per slice on disk) and caches the low dose its
    :class:`~ldct.simulate.Simulator` makes (``self.simulator``)."""

    def __init__(self, cache_dir: str | Path, *, sim: dict[str, Any] | None = None, seed: int = 0,
                 downsample: int = 1, keep_volumes: int = 2):
        from ldct.simulate.simulator import Simulator

        self.cache_dir = Path(cache_dir)
        self.simulator = Simulator(sim)
        self.sim = self.simulator.config
        self.seed = int(seed)
        self.downsample = int(downsample)
        self._loaders: dict[str, Callable[[], Volume]] = {}
        self._names: dict[str, str] = {}
        self._volumes: OrderedDict[str, Volume] = OrderedDict()
        self._keep = keep_volumes
        self._noise: dict[str, dict[str, float]] = {}
        #: doses simulated together on a cache miss (one projection serves them all)
        self.dose_hint: list[float] = []

    # volumes ---------------------------------------------------------------------------------
    def add_volume(self, key: str, loader: Callable[[], Volume], name: str = "") -> None:
        """Register a volume under a stable ``key`` (used in cache paths)."""
        self._loaders[key] = loader
        self._names[key] = name or key

    def volume(self, key: str) -> Volume:
        """The whole volume (read once, a few kept in memory)."""
        if key in self._volumes:
            self._volumes.move_to_end(key)
            return self._volumes[key]
        vol = self._loaders[key]()
        self._volumes[key] = vol
        while len(self._volumes) > self._keep:
            self._volumes.popitem(last=False)
        return vol

    def _slice_path(self, loc: SliceLoc) -> Path:
        return self.cache_dir / "slices" / loc.volume / f"{loc.z:05d}.npy"

    def index(self, key: str) -> dict[str, Any]:
        """{n, shape, spacing, z_mm, kernel} of a registered volume, from the cache or by reading it once."""
        p = self.cache_dir / "slices" / key / "index.json"
        if p.exists():
            try:
                return json.loads(p.read_text())
            except (OSError, ValueError):
                pass
        return self._cut(key)

    def _cut(self, key: str) -> dict[str, Any]:
        """Read a volume, write each slice as .npy and an index.json; returns the index."""
        vol = self.volume(key)
        data = vol.data if vol.data.ndim == 3 else vol.data[..., 0]
        folder = self.cache_dir / "slices" / key
        folder.mkdir(parents=True, exist_ok=True)
        for z in range(data.shape[0]):
            q = self._slice_path(SliceLoc(key, z))
            if not q.exists():
                with atomic_file(q) as tmp:
                    np.save(tmp, np.ascontiguousarray(data[z], dtype=np.float32))
        normal = vol.normal
        z_mm = [float(np.dot(p, normal)) for p in vol.positions] if vol.positions is not None else []
        info = {"n": int(data.shape[0]), "shape": [int(data.shape[1]), int(data.shape[2])],
                "spacing": [float(s) for s in vol.spacing], "z_mm": z_mm,
                "body": [round(float(np.mean(data[z] > BODY_HU)), 4) for z in range(data.shape[0])], "kernel": str(vol.meta["kernel"]) if vol.meta.get("kernel") else None,
                "name": self._names.get(key, key)}
        with atomic_file(folder / "index.json") as tmp:
            tmp.write_text(json.dumps(info))
        return info

    def read(self, loc: SliceLoc) -> np.ndarray:
        """(H, W) float32 HU of one slice; cuts and caches every slice of the volume on first use."""
        p = self._slice_path(loc)
        for _ in range(2):
            if p.exists():
                try:
                    return np.load(p)
                except (OSError, ValueError):
                    p.unlink(missing_ok=True)  # a damaged cache file is rewritten
            self._cut(loc.volume)
        raise IndexError(f"slice {loc.z} not in volume {self._names.get(loc.volume, loc.volume)}")

    # pairs -----------------------------------------------------------------------------------
    def nd(self, rec: SliceRecord, channels: int = 1) -> np.ndarray:
        """(C, H, W) normal dose in HU (C=3: previous, this, next slice).

        For super-resolution pairs H and W are cropped (bottom / right) to multiples of ``downsample``,
        as ``ldct.simulate.downsample`` crops the low dose, so that ``H = h * downsample`` always holds.
        """
        mid = self.read(rec.nd)
        if channels == 1:
            out = mid[None]
        else:
            prev, nxt = rec.neighbours or (rec.nd, rec.nd)
            out = np.stack([self.read(prev) if prev != rec.nd else mid, mid,
                            self.read(nxt) if nxt != rec.nd else mid])
        f = self.downsample
        return out[..., : out.shape[-2] // f * f, : out.shape[-1] // f * f]

    def ld(self, rec: SliceRecord, dose: float, channels: int = 1,
           rng: np.random.Generator | None = None) -> np.ndarray:
        """(C, h, w) low dose in HU at ``dose``: from disk, from the cache, or simulated now.

        With ``rng`` (fresh noise) the slice is simulated with a seed drawn from it and not cached.
        """
        if rec.ld:
            if dose not in rec.ld:
                raise KeyError(f"no low-dose slice at dose {dose} for {rec.source}")
            mid = rec.ld[dose]
            prev, nxt = rec.ld_neighbours.get(dose, (mid, mid))
            locs = [mid] if channels == 1 else [prev, mid, nxt]
            nd_shape = self.read(rec.nd).shape
            out = []
            for loc in locs:
                img = self.read(loc)
                out.append(img if img.shape != nd_shape else self._down(img))  # else already low-res
            return np.stack(out)
        prev, nxt = rec.neighbours or (rec.nd, rec.nd)
        locs = [rec.nd] if channels == 1 else [prev, rec.nd, nxt]
        return np.stack([self._down(self._simulated(loc, dose, rec.pixel_spacing_mm, rng)) for loc in locs])

    def _down(self, img: np.ndarray) -> np.ndarray:
        if self.downsample == 1:
            return img
        from ldct.simulate import downsample

        return np.asarray(downsample(img, self.downsample, method="area"), dtype=np.float32)

    def _sim_path(self, loc: SliceLoc, dose: float) -> Path:
        params = json.dumps({"v": SIM_CACHE_VERSION, "vol": loc.volume, "z": loc.z, "dose": round(dose, 6),
                             "seed": self.seed, "sim": self.simulator.config}, sort_keys=True, default=str)
        key = hashlib.sha1(params.encode()).hexdigest()[:24]
        return self.cache_dir / "sim" / key[:2] / f"{key}.npy"

    def slice_seed(self, loc: SliceLoc) -> int:
        """Noise seed of one slice (the simulator separates doses itself)."""
        text = f"{self.seed}:{loc.volume}:{loc.z}"
        return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)

    def _simulated(self, loc: SliceLoc, dose: float, spacing: float, rng: np.random.Generator | None):
        if rng is not None:
            return self.simulate(loc, [dose], spacing, int(rng.integers(2**31 - 1)))[dose]
        p = self._sim_path(loc, dose)
        if p.exists():
            try:
                return np.load(p)
            except (OSError, ValueError):
                pass
        doses = sorted({dose, *(d for d in self.dose_hint if not self._sim_path(loc, d).exists())})
        out = self.simulate(loc, doses, spacing, self.slice_seed(loc))
        for d, img in out.items():
            q = self._sim_path(loc, d)
            q.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(q) as tmp:
                np.save(tmp, img)
        return out[dose]

    def simulate(self, loc: SliceLoc, doses: list[float], spacing: float, seed: int) -> dict[float, np.ndarray]:
        """Simulated low dose of one slice at several doses (one projection), not cached, with the volume's
        calibration (:meth:`volume_noise`)."""
        name = self._names.get(loc.volume, loc.volume)
        try:
            return self.simulator.simulate(self.read(loc), doses, spacing, seed,
                                           self.volume_noise(loc.volume, spacing))
        except LdctError as exc:
            raise LdctError(f"slice {loc.z}: {exc.message}", name) from None

    def volume_noise(self, key: str, spacing: float) -> dict[str, Any]:
        """The simulator's calibration of a volume (:meth:`ldct.simulate.Simulator.calibrate`), computed once
        and cached in ``slices/<key>/noise_<simulator digest>.json``; {} when the recipe's ``sim`` sets it."""
        sim = self.simulator
        if not sim.needs_calibration:
            return {}
        if key in self._noise:
            return self._noise[key]
        p = self.cache_dir / "slices" / key / f"noise_{sim.digest}.json"
        if p.exists():
            try:
                saved = json.loads(p.read_text())
                self._noise[key] = {sim.level_key: float(saved[sim.level_key])}
                if saved.get("filter"):
                    self._noise[key]["filter"] = str(saved["filter"])
                return self._noise[key]
            except (OSError, ValueError, KeyError):
                pass
        info = self.index(key)
        vol = np.stack([self.read(SliceLoc(key, z)) for z in range(info["n"])])
        try:
            calib = sim.calibrate(vol, spacing)
        except LdctError as exc:
            raise LdctError(exc.message, self._names.get(key, key)) from None
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(p) as tmp:
            tmp.write_text(json.dumps({**calib, "filter": calib.get("filter"), "mode": sim.mode, "sim": sim.config},
                                      default=str))
        self._noise[key] = calib
        return calib

    def is_cached(self, rec: SliceRecord, dose: float) -> bool:
        return bool(rec.ld) or self._sim_path(rec.nd, dose).exists()
