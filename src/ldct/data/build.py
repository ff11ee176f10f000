"""From a ``data:`` section to train/val/test datasets: :func:`build_datasets`.

1. Find the data (``kind``): a simulation manifest (``manifest.json``, what ``ldct simulate`` writes) or a
   folder of several ``ldct simulate`` outputs (one manifest each, used together), real full/low-dose pairs
   (``paired_dirs``: per-patient folders whose names say full/quarter dose, paired by slice position),
   normal-dose scans with low dose simulated (``simulated``), two unpaired folders, or low-dose scans alone
   (``lowdose``: self-supervised training; normal-dose twins, when present, only score). ``auto`` picks
   manifest if the root is an ``ldct simulate`` output or holds some, paired_dirs if low-dose scans are
   found, else simulated.
2. Split patients (never slices) into train/val/test and write ``run_dir/split.json``.
3. Simulate and cache the low dose of the training and validation slices once (``precompute``), with a
   progress bar; test slices are simulated when first evaluated.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ldct.data.bundle import DataBundle
from ldct.data.config import DataConfig, parse_data_config
from ldct.data.datasets import (
    LowDosePatchDataset,
    MixedPatchDataset,
    PatchDataset,
    SliceDataset,
    UnpairedPatchDataset,
)
from ldct.data.discover import Scan, describe, discover
from ldct.data.patches import check_size
from ldct.data.split import Split, make_split, write_split
from ldct.data.store import MIN_BODY_FRACTION, SliceLoc, SliceRecord, SliceStore
from ldct.errors import LdctError


def _records_from_scans(store: SliceStore, scans: list[Scan], cfg: DataConfig) -> list[SliceRecord]:
    """One record per (strided) slice of each normal-dose scan; registers the volumes with the store."""
    out: list[SliceRecord] = []
    for scan in scans:
        key = scan.key
        store.add_volume(key, scan.load, scan.name)
        info = store.index(key)
        n = info["n"]
        spacing = float(np.mean(info["spacing"][1:]))
        z_mm = info["z_mm"] or [k * info["spacing"][0] for k in range(n)]
        contiguous = scan.contiguous
        body = info.get("body") or [1.0] * n
        for z in range(0, n, cfg.slice_stride):
            if body[z] < MIN_BODY_FRACTION:
                continue  # air only: nothing to denoise or simulate
            prev, nxt = SliceLoc(key, max(z - 1, 0)), SliceLoc(key, min(z + 1, n - 1))
            out.append(SliceRecord(
                patient_id=scan.patient_id, slice_index=z, z_mm=float(z_mm[z]), kernel=scan.kernel or info.get("kernel"),
                nd=SliceLoc(key, z), pixel_spacing_mm=spacing, neighbours=(prev, nxt) if contiguous else None,
                source=str(scan.files[0] if len(scan.files) == 1 else scan.files[0].parent)))
    return out


def _pair_key(name: str) -> str:
    """A scan's name with its dose tokens removed (``L067/full_3mm`` and ``L067/quarter_3mm`` -> same)."""
    from ldct.data.discover import LD_TOKENS, ND_TOKENS

    return ND_TOKENS.sub("*", LD_TOKENS.sub("*", name)).lower()


def _records_paired(store: SliceStore, scans: list[Scan], cfg: DataConfig) -> list[SliceRecord]:
    """Pair each low-dose scan with the normal-dose scan of the same patient (and name), by slice position."""
    nd_scans = [s for s in scans if s.role != "ld"]
    ld_scans = [s for s in scans if s.role == "ld"]
    records: list[SliceRecord] = []
    for nd_scan in nd_scans:
        partners = [s for s in ld_scans if s.patient_id == nd_scan.patient_id]
        if nd_scan.manifest is not None:  # an ldct simulate output: its own low-dose series, every dose
            partners = [s for s in partners if s.manifest == nd_scan.manifest]
        elif len(partners) > 1:
            partners = [s for s in partners if _pair_key(s.name) == _pair_key(nd_scan.name)] or partners[:0]
        if not partners:
            continue
        recs = _records_from_scans(store, [nd_scan], cfg)
        for ld_scan in partners:
            dose = cfg.ld_dose or ld_scan.role_dose or cfg.doses[0]
            store.add_volume(ld_scan.key, ld_scan.load, ld_scan.name)
            info = store.index(ld_scan.key)
            z_ld = np.asarray(info["z_mm"] or [k * info["spacing"][0] for k in range(info["n"])])
            tol = 0.5 * max(float(info["spacing"][0]), 1e-3)
            for r in recs:
                k = int(np.argmin(np.abs(z_ld - r.z_mm)))
                if abs(z_ld[k] - r.z_mm) <= tol:
                    r.ld[dose] = SliceLoc(ld_scan.key, k)
                    r.ld_neighbours[dose] = (SliceLoc(ld_scan.key, max(k - 1, 0)),
                                             SliceLoc(ld_scan.key, min(k + 1, len(z_ld) - 1)))
        records.extend(r for r in recs if r.ld)
    if not records:
        raise LdctError("found low-dose scans but could not pair any with a normal-dose scan of the same "
                        "patient at the same slice positions", cfg.root)
    return records


def _records_manifest(store: SliceStore, root: Path, cfg: DataConfig,
                      scans: list[Scan] | None = None) -> tuple[list[SliceRecord], dict, list[str]]:
    """Slice records of the simulated pairs on disk: of the manifest at ``root`` (``scans`` None), else of
    every ``ldct simulate`` output among ``scans`` (patient ids and include/exclude as discovered)."""
    from ldct.data.discover import scan_path
    from ldct.data.manifest import read_manifest
    from ldct.io import read_volume

    keep: dict[Path, Scan] | None = None
    if scans is None:
        mans = [read_manifest(root)]
    else:
        paths = sorted({s.manifest for s in scans if s.manifest is not None})
        if not paths:
            raise LdctError("no simulation manifest here (expected manifest.json written by `ldct simulate`, "
                            "in this folder or in its subfolders)", root)
        mans = [read_manifest(p) for p in paths]
        keep = {scan_path(s): s for s in scans if s.manifest is not None}
    by_slice: dict[tuple, SliceRecord] = {}
    for man in mans:
        for rec in man["records"]:
            pid = str(rec["patient_id"])
            if keep is not None:  # a record whose series data.include/exclude left out is not used
                nd_scan, ld_scan = keep.get(Path(rec["nd"]).resolve()), keep.get(Path(rec["ld"]).resolve())
                if nd_scan is None or ld_scan is None:
                    continue
                pid = nd_scan.patient_id
            locs = {}
            for side in ("nd", "ld"):
                p = Path(rec[side])
                key = hashlib.sha1(f"{p.resolve()}:{p.stat().st_mtime_ns}".encode()).hexdigest()[:16]
                store.add_volume(key, lambda p=p: read_volume(p), str(p))
                n = store.index(key)["n"]
                locs[side] = SliceLoc(key, int(rec["slice_index"]) if n > 1 else 0)
            ident = (pid, rec.get("series_uid"), int(rec["slice_index"]), locs["nd"])
            r = by_slice.get(ident)
            if r is None:
                spacing = float(np.mean(store.index(locs["nd"].volume)["spacing"][1:]))
                r = by_slice[ident] = SliceRecord(
                    patient_id=pid, slice_index=int(rec["slice_index"]),
                    z_mm=float(rec.get("z_mm") or 0.0), kernel=rec.get("kernel"), nd=locs["nd"],
                    pixel_spacing_mm=spacing, source=str(rec["nd"]))
            r.ld[round(float(rec["dose"]), 6)] = locs["ld"]
    records = list(by_slice.values())
    if not records:
        raise LdctError("the ldct simulate outputs here hold no slice that data.include/exclude keep", root)
    warnings = _common_doses(records, mans, root)
    params = [m["parameters"] for m in mans]
    summary = dict(mans[0]) if len(mans) == 1 else {
        "kind": mans[0]["kind"], "outputs": [m["root"] for m in mans],
        "parameters": params[0] if all(p == params[0] for p in params)
        else {os.path.relpath(m["root"], root.resolve()): m["parameters"] for m in mans}}
    return records, summary, warnings


def _common_doses(records: list[SliceRecord], mans: list[dict], root: Path) -> list[str]:
    """Keep the doses every slice has (training draws a dose, then a slice); say what was left out."""
    union = set().union(*(r.ld for r in records))
    common = set.intersection(*(set(r.ld) for r in records))
    if common == union:
        return []
    if not common:
        have = "; ".join(f"{Path(m['root']).name}: {', '.join(sorted(m['low_dose']))}" for m in mans)
        raise LdctError(f"the ldct simulate outputs share no dose ({have}): simulate them at a common dose", root)
    for r in records:
        for d in set(r.ld) - common:
            del r.ld[d]
    gone = ", ".join(f"{d:g}" for d in sorted(union - common))
    used = ", ".join(f"{d:g}" for d in sorted(common))
    return [f"dose(s) {gone} left out: not simulated for every slice (training uses {used})"]


def _detect_kind(cfg: DataConfig, root: Path, scans: list[Scan] | None) -> str:
    if cfg.kind != "auto":
        return cfg.kind
    if (root / "manifest.json").is_file() or root.name == "manifest.json":
        return "manifest"
    if scans and any(s.manifest is not None for s in scans):  # a folder of ldct simulate outputs
        return "manifest"
    if cfg.ld_root and cfg.nd_root:
        return "unpaired"
    if scans and any(s.role == "ld" for s in scans) and any(s.role != "ld" for s in scans):
        return "paired_dirs"
    return "simulated"


def _discover(root: Path | str, cfg: DataConfig) -> list[Scan]:
    return discover(root, include=cfg.include, exclude=cfg.exclude, raw=cfg.raw, patient_regex=cfg.patient_regex,
                    patient_map=cfg.patient_map)


@dataclass
class Sources:
    """Everything found under a data root: slice records (and their store), and how they were found."""

    kind: str
    store: SliceStore
    records: list[SliceRecord]
    warnings: list[str]
    scans: list[Scan] | None = None
    manifest: dict | None = None
    ld_store: SliceStore | None = None
    ld_records: list[SliceRecord] | None = None
    #: ``lowdose``: real low-dose / normal-dose pairs found beside the low-dose scans (validation and test only)
    pair_records: list[SliceRecord] | None = None

    @property
    def patient_ids(self) -> list[str]:
        return sorted({r.patient_id for r in self.records} | {r.patient_id for r in (self.ld_records or [])})

    @property
    def doses(self) -> list[float] | None:
        """Dose levels on disk (manifest / real pairs); None when low dose is simulated."""
        if self.kind in ("manifest", "paired_dirs"):
            return sorted({d for r in self.records for d in r.ld})
        return None


def load_records(cfg: DataConfig, cache_dir: str | Path) -> Sources:
    """Find the data of ``cfg.root`` (or ``ld_root``/``nd_root``) and make one record per slice."""
    root = Path(cfg.root) if cfg.root else Path(cfg.nd_root)  # type: ignore[arg-type]
    if not root.exists():
        raise LdctError("data path does not exist", root)
    store = SliceStore(cache_dir, sim=cfg.sim, seed=cfg.seed, downsample=cfg.downsample)
    warnings: list[str] = []
    scans: list[Scan] | None = None
    kind = cfg.kind
    # the root is one ldct simulate output (its folder or its manifest.json)
    own = (root.name == "manifest.json" and root.is_file()) or (root / "manifest.json").is_file()
    if kind in ("auto", "simulated", "paired_dirs", "manifest", "lowdose") and not (kind in ("auto", "manifest") and own):
        scans = _discover(root, cfg)
    kind = _detect_kind(cfg, root, scans)
    if kind == "manifest":
        records, manifest, more = _records_manifest(store, root, cfg, None if own else scans)
        warnings += more
        outside = [s.name for s in scans or [] if s.manifest is None]
        if outside:
            warnings.append(f"scans outside the ldct simulate outputs left out: {', '.join(outside)} (set "
                            "data.kind: simulated to simulate from every normal-dose scan instead)")
        return Sources(kind, store, records, warnings, scans, manifest=manifest)
    if kind == "paired_dirs":
        return Sources(kind, store, _records_paired(store, scans or _discover(root, cfg), cfg), warnings, scans)
    if kind == "simulated":
        assert scans is not None
        skipped = [s.name for s in scans if s.role == "ld"]
        if skipped:
            warnings.append(f"low-dose scans left out of the normal-dose pool: {', '.join(skipped)}")
        return Sources(kind, store, _records_from_scans(store, [s for s in scans if s.role != "ld"], cfg),
                       warnings, scans)
    if kind == "lowdose":
        return _lowdose_sources(cfg, store, scans or [], warnings, root)
    if kind == "unpaired":
        if cfg.downsample != 1:
            raise LdctError("data.downsample > 1 is not supported for unpaired data", root)
        ld_root, nd_root = unpaired_roots(cfg)
        ld_store = SliceStore(cache_dir, sim=cfg.sim, seed=cfg.seed)
        ld_records = _records_from_scans(ld_store, _discover(ld_root, cfg), cfg)
        nd_scans = _discover(nd_root, cfg)
        return Sources(kind, store, _records_from_scans(store, nd_scans, cfg), warnings, nd_scans,
                       ld_store=ld_store, ld_records=ld_records)
    raise LdctError(f"unknown data.kind {kind!r}")  # pragma: no cover - validated in config


def _lowdose_sources(cfg: DataConfig, store: SliceStore, scans: list[Scan], warnings: list[str],
                     root: Path) -> Sources:
    """``kind: lowdose``: one record per slice of every low-dose scan (the scan itself is what the network sees:
    ``rec.nd`` points at it); scans named as low dose (quarter, ld, ...) when some are, else every scan.
    Normal-dose twins of named low-dose scans are kept apart as scoring pairs (never trained on)."""
    if cfg.downsample != 1:
        raise LdctError("data.downsample > 1 is not supported for low-dose-only data", root)
    if not scans:
        raise LdctError("no CT scans found for data.kind lowdose", root)
    named = [s for s in scans if s.role == "ld"]
    ld_scans = named or scans
    records = _records_from_scans(store, ld_scans, cfg)
    if cfg.adjacent:
        flat = [r.source for r in records if r.neighbours is None]
        if flat:
            raise LdctError("data.adjacent needs contiguous slices (a thin series, every slice): "
                            f"{len(flat)} slices have no neighbours, e.g. {flat[0]}", root)
        if cfg.slice_stride != 1:
            raise LdctError("data.adjacent needs data.slice_stride: 1 (neighbours are the next slices)", root)
    pairs: list[SliceRecord] = []
    if named and len(named) < len(scans):
        try:
            pairs = _records_paired(store, scans, cfg)
        except LdctError as exc:
            warnings.append(f"normal-dose scans not used for scoring: {exc.message}")
        else:
            warnings.append(f"{len(scans) - len(named)} normal-dose scan(s) used only to score validation/test "
                            "patients, never for training")
    return Sources("lowdose", store, records, warnings, scans, pair_records=pairs)


def unpaired_roots(cfg: DataConfig) -> tuple[Path, Path]:
    """The (low-dose, normal-dose) folders of ``kind: unpaired`` data.

    Convention: ``ROOT/ld`` and ``ROOT/nd`` under the data root (``ldct train --data ROOT``);
    ``data.ld_root``/``data.nd_root`` override them, relative paths being taken from ROOT (from the
    working directory when there is no root). A missing folder raises one LdctError naming it.
    """
    base = Path(cfg.root) if cfg.root else None
    out = []
    for given, default, what in ((cfg.ld_root, "ld", "low-dose"), (cfg.nd_root, "nd", "normal-dose")):
        if given is None and base is None:
            raise LdctError(f"unpaired data needs a {what} folder: pass --data ROOT holding ld/ and nd/ "
                            f"(or set data.{default}_root)")
        p = Path(given) if given is not None else Path(default)
        p = base / p if base is not None and not p.is_absolute() else p
        if not p.is_dir():
            hint = (f"data.{default}_root" if given is not None
                    else f"the data root must hold ld/ and nd/ folders, or set data.{default}_root")
            raise LdctError(f"unpaired {what} folder not found ({hint})", p)
        out.append(p)
    return out[0], out[1]


def eval_dataset(cfg: DataConfig | dict[str, Any], *, cache_dir: str | Path, patients: list[str] | None = None,
                 doses: list[float] | None = None) -> tuple[SliceDataset, Sources]:
    """Whole-slice dataset of ``patients`` (None = all) at ``doses`` (default: the data's), for evaluation.

    Every slice of those patients is scored: the training stride ``data.slice_stride`` is not applied here
    (limit the work with ``ldct evaluate --max-slices`` instead, which spreads the slices evenly).
    """
    import dataclasses

    cfg = cfg if isinstance(cfg, DataConfig) else parse_data_config(cfg)
    cfg = dataclasses.replace(cfg, slice_stride=1)
    if cfg.kind == "photos":
        raise LdctError("eval_dataset is for CT; photographs (data.kind photos) are evaluated by "
                        "ldct.evaluation.photos (ldct evaluate with a model trained on photos)", cfg.root)
    src = load_records(cfg, cache_dir)
    if src.kind == "unpaired":
        raise LdctError("cannot evaluate on unpaired data: give paired data (a manifest, full/low-dose "
                        "folders, or normal-dose scans to simulate from)", cfg.root)
    found = src.patient_ids
    if patients is not None:
        missing = [p for p in patients if p not in found]
        if missing:
            raise LdctError(f"patient(s) {', '.join(missing)} not in the data (found: {', '.join(found)})", cfg.root)
    recs = [r for r in src.records if patients is None or r.patient_id in set(patients)]
    on_disk = src.doses
    if doses is None:
        doses = ([d for d in cfg.doses if d in on_disk] or on_disk) if on_disk is not None else cfg.doses
    elif on_disk is not None:
        absent = [d for d in doses if d not in on_disk]
        if absent:
            raise LdctError(f"dose(s) {', '.join(f'{d:g}' for d in absent)} not in the data (on disk: "
                            f"{', '.join(f'{d:g}' for d in on_disk)})", cfg.root)
    src.store.dose_hint = sorted(set(doses))
    return SliceDataset(src.store, recs, doses=list(doses), scale=cfg.downsample, channels=cfg.channels,
                        window=cfg.hu_window), src


def build_datasets(data_cfg: dict[str, Any] | DataConfig, *, run_dir: str | Path | None, seed: int = 0,
                   progress: bool = True) -> DataBundle:
    """Datasets of a run: ``train`` (:class:`PatchDataset`, :class:`MixedPatchDataset` with ``data.mix`` or
    :class:`UnpairedPatchDataset`), ``val`` and ``test`` (:class:`SliceDataset`, whole slices), the patient
    ``split`` (also written to ``run_dir/split.json``) and a JSON-friendly ``summary`` (counts, doses,
    window, cache, warnings).

    ``run_dir`` None (DDP ranks other than 0) writes no split.json and, unless ``data.cache_dir`` is set,
    caches under ``$TMPDIR/ldct-cache/<data root hash>``. ``seed`` drives patch sampling only; the split
    uses ``data.split.seed`` and the simulated noise ``data.seed``, so runs with different seeds are scored
    on the same patients and the same noisy inputs.
    """
    cfg = data_cfg if isinstance(data_cfg, DataConfig) else parse_data_config(data_cfg)
    run_dir = Path(run_dir) if run_dir is not None else None
    if cfg.root is None and not (cfg.ld_root and cfg.nd_root):
        raise LdctError("no data given: pass --data DIR or set data.root in the recipe")
    if cfg.kind == "photos":  # photographs with added noise: no CT, no patients (ldct.data.photos)
        from ldct.data.photos import build_photo_datasets

        return build_photo_datasets(cfg, run_dir=run_dir, seed=seed)
    root = Path(cfg.root) if cfg.root else Path(cfg.nd_root)  # type: ignore[arg-type]
    if not root.exists():
        raise LdctError("data path does not exist", root)
    rank, world = _dist()
    cache_dir = _cache_dir(cfg, run_dir, root, world)
    src = load_records(cfg, cache_dir)                                     # 1. find the data
    split, by_part = _split_records(src, cfg.split, root)                   # 2. split patients
    _check_patches_fit(src.store, by_part["train"], cfg.patch_size)
    on_disk = src.doses
    eval_doses = ([d for d in cfg.doses if d in on_disk] or on_disk) if on_disk is not None else cfg.doses
    train_doses, fresh = _training_doses(cfg, src)
    src.store.dose_hint = sorted(set(train_doses) | set(eval_doses)) if not fresh else list(eval_doses)
    warnings = list(src.warnings)
    if src.kind == "unpaired":                                              # 3. datasets (+ simulate once)
        train, val, test = _unpaired_datasets(cfg, src, split, by_part, eval_doses, seed)
        warnings.append("unpaired data: no paired validation/test slices (evaluate on a paired dataset)")
    elif src.kind == "lowdose":
        train, val, test = _lowdose_datasets(cfg, src, split, by_part, seed)
        if not len(val):
            warnings.append("low-dose-only data: no normal-dose twin to validate on (score with ldct evaluate "
                            "on paired data)")
    else:
        train, val, test = _paired_datasets(cfg, src, by_part, train_doses, eval_doses, fresh, seed,
                                            progress=progress and rank == 0, rank=rank, world=world)
    mixed = _mix_sources(cfg, cache_dir, held_out=set(split.val) | set(split.test), seed=seed,
                         progress=progress and rank == 0, rank=rank, world=world) if cfg.mix else []
    if mixed:                                                               # 4. extra training sources
        train = MixedPatchDataset([train] + [m[0] for m in mixed], [1 - sum(w for _, w in cfg.mix)] +
                                  [w for _, w in cfg.mix], seed=seed)
        for _, _, info in mixed:
            warnings += info.pop("warnings")
    if not split.val:
        warnings.append("no validation patient (data.split.val)")
    if not split.test:
        warnings.append("no test patient (data.split.test)")
    summary = {                                                             # 5. what the run records
        "kind": src.kind, "root": str(root), "cache_dir": str(cache_dir),
        "hu_window": [cfg.hu_window.lo, cfg.hu_window.hi], "patch_size": cfg.patch_size,
        "downsample": cfg.downsample, "channels": cfg.channels, "train_doses": train_doses,
        "eval_doses": eval_doses, "dose_range": list(cfg.dose_range) if cfg.dose_range else None,
        "fresh_noise": fresh, "sim": cfg.sim if src.kind == "simulated" else (src.manifest or {}).get("parameters"),
        "noise_seed": cfg.seed, "split": split.to_dict(),
        "slices": {p: len(v) for p, v in by_part.items()},
        "patients": {pid: {"part": split.part_of(pid), "slices": sum(r.patient_id == pid for r in src.records)}
                     for pid in src.patient_ids},
        "scans": describe(src.scans) if src.scans else [],
        # the training domain (ldct.infer.domain warns when a scan to denoise lies far outside it)
        "pixel_spacing_mm": _spacing_range(by_part["train"] + [r for m in mixed for r in m[0].records]),
        "mix": [m[2] for m in mixed],
        "warnings": warnings,
    }
    if run_dir is not None:
        write_split(split, run_dir, {"data_root": str(root), "patients": summary["patients"]})
    return DataBundle(train, val, test, summary["split"], summary, cfg, split, by_part)


def _cache_dir(cfg: DataConfig, run_dir: Path | None, root: Path, world: int) -> Path:
    """``data.cache_dir``, else ``RUN/cache``, else a temporary folder per data root; under DDP every
    process uses rank 0's."""
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else run_dir / "cache" if run_dir else _tmp_cache(root)
    if world > 1:
        import torch.distributed as dist

        shared = [str(cache_dir)]
        dist.broadcast_object_list(shared, src=0)
        cache_dir = Path(shared[0])
    return cache_dir


def _split_records(src: Sources, split_cfg: dict[str, Any], root: Path) -> tuple[Split, dict[str, list[SliceRecord]]]:
    """The patient split (never slices) and the records of each part."""
    patient_ids = src.patient_ids
    split = make_split(patient_ids, split_cfg)
    held_unknown = [p for p in split.val + split.test if p not in patient_ids]
    if held_unknown:
        raise LdctError(f"split names patients not in the data: {', '.join(held_unknown)}", root)
    by_part = {part: [r for r in src.records if r.patient_id in set(getattr(split, part))]
               for part in ("train", "val", "test")}
    return split, by_part


def _unpaired_datasets(cfg: DataConfig, src: Sources, split: Split, by_part: dict[str, list[SliceRecord]],
                       eval_doses: list[float], seed: int) -> tuple[Any, SliceDataset, SliceDataset]:
    ld_train = [r for r in (src.ld_records or []) if r.patient_id in set(split.train)]
    train = UnpairedPatchDataset(
        src.ld_store, ld_train, src.store, by_part["train"], ld_dose=cfg.ld_dose or cfg.doses[0],  # type: ignore[arg-type]
        patch_size=cfg.patch_size, channels=cfg.channels, window=cfg.hu_window, augment=cfg.augment,
        body_fraction=cfg.body_fraction, body_threshold_hu=cfg.body_threshold_hu,
        length=cfg.samples_per_epoch, seed=seed)
    return train, SliceDataset(src.store, [], doses=eval_doses), SliceDataset(src.store, [], doses=eval_doses)


def _lowdose_datasets(cfg: DataConfig, src: Sources, split: Split, by_part: dict[str, list[SliceRecord]],
                      seed: int) -> tuple[LowDosePatchDataset, SliceDataset, SliceDataset]:
    """Low-dose training patches of the training patients; validation/test slices from the real pairs of
    the held-out patients, when the data has them."""
    dose = cfg.ld_dose or cfg.doses[0]
    train = LowDosePatchDataset(
        src.store, by_part["train"], dose=dose, adjacent=cfg.adjacent, patch_size=cfg.patch_size,
        channels=cfg.channels, window=cfg.hu_window, augment=cfg.augment, body_fraction=cfg.body_fraction,
        body_threshold_hu=cfg.body_threshold_hu, length=cfg.samples_per_epoch, seed=seed,
        sample_by=cfg.sample_by)
    pairs, store = src.pair_records or [], src.store
    parts = {part: [r for r in pairs if r.patient_id in set(getattr(split, part))] for part in ("val", "test")}
    doses = sorted({d for r in pairs for d in r.ld}) or [dose]
    val = SliceDataset(store, parts["val"], doses=doses, channels=cfg.channels,
                       window=cfg.hu_window).subset(cfg.val_max_slices)
    test = SliceDataset(store, parts["test"], doses=doses, channels=cfg.channels, window=cfg.hu_window)
    return train, val, test


def _paired_datasets(cfg: DataConfig, src: Sources, by_part: dict[str, list[SliceRecord]], train_doses: list[float],
                     eval_doses: list[float], fresh: bool, seed: int, *, progress: bool, rank: int,
                     world: int) -> tuple[PatchDataset, SliceDataset, SliceDataset]:
    """Training patches, validation and test slices; simulated low dose of the training and validation slices
    made once up front (``precompute``; under DDP each process simulates its share)."""
    store = src.store
    train = _patch_dataset(cfg, cfg, store, by_part["train"], train_doses, fresh, seed)
    val = SliceDataset(store, by_part["val"], doses=eval_doses, scale=cfg.downsample, channels=cfg.channels,
                       window=cfg.hu_window).subset(cfg.val_max_slices)
    test = SliceDataset(store, by_part["test"], doses=eval_doses, scale=cfg.downsample, channels=cfg.channels,
                        window=cfg.hu_window)
    if src.kind == "simulated" and cfg.precompute:
        todo = [(r, d) for r in by_part["train"] for d in ([] if fresh else train_doses)]
        todo += list(val.items)
        _precompute_share(store, todo, channels=cfg.channels, progress=progress, rank=rank, world=world)
    return train, val, test


def _check_patches_fit(store: SliceStore, records: list[SliceRecord], patch_size: int) -> None:
    for r in records:
        check_size(tuple(store.index(r.nd.volume)["shape"]), patch_size, r.source)


def _training_doses(cfg: DataConfig, src: Sources) -> tuple[list[float], bool]:
    """(training dose levels, fresh noise): the doses on disk for real or pre-simulated pairs, else the
    recipe's (``doses`` or a grid over ``dose_range``); fresh noise per patch when simulated uncached."""
    on_disk = src.doses
    return (on_disk if on_disk is not None else cfg.train_doses()), (not cfg.cache and src.kind == "simulated")


def _patch_dataset(cfg: DataConfig, sampling: DataConfig, store: SliceStore, records: list[SliceRecord],
                   doses: list[float], fresh: bool, seed: int) -> PatchDataset:
    """Training patches of ``records``: their size, window and augmentation from the run's ``cfg``, how
    slices, crops and doses are drawn from ``sampling`` (the run's own, or a ``data.mix`` source's)."""
    return PatchDataset(
        store, records, doses=doses, patch_size=cfg.patch_size, scale=cfg.downsample, channels=cfg.channels,
        window=cfg.hu_window, augment=cfg.augment, body_fraction=sampling.body_fraction,
        body_threshold_hu=cfg.body_threshold_hu, length=cfg.samples_per_epoch, seed=seed, fresh_noise=fresh,
        dose_range=sampling.dose_range, sample_by=sampling.sample_by)


def _precompute_share(store: SliceStore, todo: list[tuple[SliceRecord, float]], *, channels: int, progress: bool,
                      rank: int, world: int) -> None:
    """Simulate and cache ``todo`` once; under DDP each process takes a share (all doses of a slice in one
    process, one projection) and waits until the cache is complete."""
    owner = {i: k % world for k, i in enumerate(dict.fromkeys(id(r) for r, _ in todo))}
    precompute(store, [(r, d) for r, d in todo if owner[id(r)] == rank], channels=channels, progress=progress)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _mix_sources(cfg: DataConfig, cache_dir: Path, *, held_out: set[str], seed: int, progress: bool,
                 rank: int, world: int) -> list[tuple[PatchDataset, float, dict[str, Any]]]:
    """The training datasets of ``data.mix`` (each with its weight and a summary). Patients the main split
    holds out (val/test) are dropped from every source, so no held-out patient is trained on."""
    out = []
    for i, (sub, weight) in enumerate(cfg.mix):
        src = load_records(sub, cache_dir)
        if src.kind == "unpaired":
            raise LdctError(f"data.mix[{i}]: unpaired data cannot be mixed into paired training", sub.root)
        dropped = sorted({r.patient_id for r in src.records} & held_out)
        recs = [r for r in src.records if r.patient_id not in held_out]
        if not recs:
            raise LdctError(f"data.mix[{i}]: no training slices left (every patient is held out by data.split)",
                            sub.root)
        _check_patches_fit(src.store, recs, cfg.patch_size)
        doses, fresh = _training_doses(sub, src)
        src.store.dose_hint = sorted(set(doses))
        ds = _patch_dataset(cfg, sub, src.store, recs, doses, fresh, seed + 1000 * (i + 1))
        if src.kind == "simulated" and sub.precompute and not fresh:
            _precompute_share(src.store, [(r, d) for r in recs for d in doses], channels=cfg.channels,
                              progress=progress, rank=rank, world=world)
        patients = sorted({r.patient_id for r in recs})
        out.append((ds, weight, {
            "root": str(sub.root), "kind": src.kind, "weight": weight, "doses": doses, "patients": patients,
            "slices": len(recs), "dropped_held_out": dropped,
            "warnings": [f"data.mix[{i}]: {w}" for w in src.warnings]
            + ([f"data.mix[{i}]: held-out patient(s) {', '.join(dropped)} left out of this source"] if dropped else []),
        }))
    return out


def _spacing_range(records: list[SliceRecord]) -> list[float] | None:
    """[min, max] in-plane pixel spacing (mm) of the training slices, None when there are none."""
    px = [float(r.pixel_spacing_mm) for r in records if np.isfinite(r.pixel_spacing_mm) and r.pixel_spacing_mm > 0]
    return [round(min(px), 4), round(max(px), 4)] if px else None


def _dist() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed process group, else (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except (ImportError, RuntimeError):
        pass
    return 0, 1


def _tmp_cache(root: Path) -> Path:
    import tempfile

    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "ldct-cache" / digest


def precompute(store: SliceStore, items: list[tuple[SliceRecord, float]], *, channels: int = 1,
               progress: bool = True) -> int:
    """Simulate (and cache) the low dose of ``(record, dose)`` items not cached yet; returns how many."""
    todo = [(r, d) for r, d in items if not store.is_cached(r, d)]
    if not todo:
        return 0
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), transient=True) as bar:
            task = bar.add_task(f"simulating low dose ({store.sim.get('mode', 'projection')})", total=len(todo))
            for r, d in todo:
                store.ld(r, d, channels)
                bar.advance(task)
    else:
        for r, d in todo:
            store.ld(r, d, channels)
    return len(todo)
