"""Datasets built from a data folder: paired folders, simulated low dose, manifests; split recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ldct.data import build_datasets
from ldct.errors import LdctError
from ldct.hu import hu_to_net
from ldct.io import read_volume


def make_pairs(shared_data: Path, root: Path, noise_hu: float = 40.0) -> Path:
    """Three real patients as full-dose / quarter-dose .npy volumes (quarter = full + white noise)."""
    rng = np.random.default_rng(0)
    vols = {
        "P1": read_volume(shared_data / "volumes" / "abdomen_3mm.nii.gz").data[50:54],  # (4, 101, 122)
        "P2": read_volume(shared_data / "volumes" / "chest_1p5mm.nii.gz").data[40:44, :, 20:200],
        "P3": read_volume(shared_data / "chest_dicom").data[10:13, 100:420:2, 100:420:2],  # (3, 160, 160)
    }
    for pid, nd in vols.items():
        for role, data in (("full_dose", nd), ("quarter_dose", nd + rng.normal(0, noise_hu, nd.shape))):
            (root / pid / role).mkdir(parents=True)
            np.save(root / pid / role / "ct.npy", data.astype(np.float32))
    return root


@pytest.fixture(scope="module")
def pairs(shared_data, tmp_path_factory):
    return make_pairs(shared_data, tmp_path_factory.mktemp("pairs"))


def test_paired_folders(pairs, tmp_path):
    cfg = {"root": str(pairs), "patch_size": 32, "split": {"test": ["P3"], "val": ["P2"]}, "samples_per_epoch": 64}
    b = build_datasets(cfg, run_dir=tmp_path, seed=1)
    assert b.summary["kind"] == "paired_dirs" and b.summary["eval_doses"] == [0.25]
    assert b.split["train"] == ["P1"] and b.split["val"] == ["P2"] and b.split["test"] == ["P3"]
    saved = json.loads((tmp_path / "split.json").read_text())
    assert saved["test"] == ["P3"] and saved["patients"]["P1"]["slices"] == 4
    item = b.train[5]
    assert item["ld"].shape == item["nd"].shape == (1, 32, 32) and item["ld"].dtype == torch.float32
    assert item["patient_id"] == "P1" and float(item["dose"]) == 0.25
    assert -1.0 <= float(item["nd"].min()) and float(item["nd"].max()) <= 1.0
    # the pair is aligned: ld - nd is the added white noise (std 40 HU = 0.04 in network range)
    diff = (item["ld"] - item["nd"]).numpy()
    assert 0.025 < diff.std() < 0.055 and abs(diff.mean()) < 0.02
    again = b.train[5]
    assert torch.equal(again["ld"], item["ld"])  # deterministic given (seed, epoch, index)
    b.train.set_epoch(1)
    assert not torch.equal(b.train[5]["nd"], item["nd"])
    # whole test slices in HU, and in network range through __getitem__
    _, nd, meta = b.test.get_hu(0)
    assert nd.shape == (1, 160, 160) and meta["patient_id"] == "P3" and meta["dose"] == 0.25
    src = np.load(pairs / "P3" / "full_dose" / "ct.npy")[meta["slice_index"]]
    np.testing.assert_array_equal(nd[0], src)
    np.testing.assert_allclose(b.test[0]["nd"].numpy()[0], hu_to_net(src), atol=1e-6)
    assert len(b.val) == 4 and len(b.test) == 3


def test_patch_larger_than_image_names_the_file(pairs, tmp_path):
    with pytest.raises(LdctError, match="smaller than data.patch_size=128") as e:
        build_datasets({"root": str(pairs), "patch_size": 128, "split": {"val": 0, "test": 0}}, run_dir=tmp_path)
    assert "full_dose" in str(e.value)


def test_missing_data_and_split_errors(pairs, tmp_path):
    with pytest.raises(LdctError, match="does not exist"):
        build_datasets({"root": str(tmp_path / "nope")}, run_dir=tmp_path)
    with pytest.raises(LdctError, match="unknown patient id"):
        build_datasets({"root": str(pairs), "split": {"test": ["P9"]}}, run_dir=tmp_path)
    with pytest.raises(LdctError, match="'P1' is in both"):
        build_datasets({"root": str(pairs), "split": {"test": ["P1"], "val": ["P1"]}}, run_dir=tmp_path)


@pytest.fixture(scope="module")
def abdomen(shared_data, tmp_path_factory):
    """A shared cache for the simulated-data tests (the NIfTI abdomen: small 101x122 slices at 3 mm)."""
    return {"root": str(shared_data / "volumes" / "abdomen_3mm.nii.gz"), "slice_stride": 25, "patch_size": 32,
            "split": {"val": 0, "test": 0}, "cache_dir": str(tmp_path_factory.mktemp("cache"))}


def test_simulated_low_dose_is_cached_and_scales_with_dose(abdomen, tmp_path):
    from ldct.metrics.noise import noise_std_hu

    cfg = {**abdomen, "doses": [0.25, 0.5]}
    b = build_datasets(cfg, run_dir=tmp_path / "a", seed=0, progress=False)
    assert b.summary["kind"] == "simulated" and b.summary["slices"]["train"] == 5
    store, recs = b.train.store, b.train.records
    sims = sorted((Path(abdomen["cache_dir"]) / "sim").rglob("*.npy"))
    assert len(sims) == 2 * 5  # every training slice at both doses, simulated up front
    ratios = []
    for r in recs:
        nd = store.nd(r)[0]
        n25 = noise_std_hu(store.ld(r, 0.25)[0], nd)
        n50 = noise_std_hu(store.ld(r, 0.5)[0], nd)
        ratios.append(n25 / n50)
    # added noise std grows as sqrt(1/d - 1): sqrt(3 / 1) = 1.73 from half to quarter dose
    assert 1.5 < np.median(ratios) < 2.0
    # a second build reads the same noisy slices from the cache (and a new run seed changes only patches)
    b2 = build_datasets(cfg, run_dir=tmp_path / "b", seed=5, progress=False)
    np.testing.assert_array_equal(b2.train.store.ld(recs[2], 0.25), store.ld(recs[2], 0.25))
    assert not torch.equal(b2.train[0]["nd"], b.train[0]["nd"])


def test_fresh_noise_super_resolution_and_neighbours(abdomen, tmp_path):
    cfg = {**abdomen, "cache": False, "sim": {"mode": "gaussian"}, "downsample": 2, "channels": 3,
           "dose_range": [0.1, 0.5]}
    before = len(list(Path(abdomen["cache_dir"]).rglob("sim/**/*.npy")))
    b = build_datasets(cfg, run_dir=tmp_path, seed=0, progress=False)
    a, c = b.train[3], b.train[4]
    assert b.summary["fresh_noise"] and len(list(Path(abdomen["cache_dir"]).rglob("sim/**/*.npy"))) == before
    rec = b.train.records[0]
    draws = [b.train.store.ld(rec, 0.3, 1, np.random.default_rng(k)) for k in (1, 2)]
    assert not np.array_equal(*draws)  # fresh noise: a new realisation every draw
    assert a["nd"].shape == (3, 32, 32) and a["ld"].shape == (3, 16, 16)
    assert 0.1 <= float(a["dose"]) <= 0.5 and float(a["dose"]) != float(c["dose"])
    # the low-resolution input is the 2x2 area average of the (noisy) target region: strongly correlated
    nd_small = a["nd"].numpy().reshape(3, 16, 2, 16, 2).mean(axis=(2, 4))
    assert np.corrcoef(nd_small.ravel(), a["ld"].numpy().ravel())[0, 1] > 0.8
    # neighbouring slices differ from the centre slice (2.5D input)
    assert not torch.equal(a["nd"][0], a["nd"][1])


def test_manifest_written_by_ldct_simulate(shared_data, tmp_path):
    from ldct.cli import main
    from ldct.data.build import eval_dataset

    src = shared_data / "volumes" / "abdomen_3mm.nii.gz"
    assert main(["simulate", str(src), "-d", "0.25", "-d", "0.5", "-o", str(tmp_path / "sim"), "--mode", "gaussian",
                 "--seed", "3"]) == 0
    b = build_datasets({"root": str(tmp_path / "sim"), "patch_size": 32, "split": {"val": 0, "test": 0},
                        "doses": [0.5]}, run_dir=tmp_path / "run", progress=False)
    assert b.summary["kind"] == "manifest" and b.summary["train_doses"] == [0.25, 0.5]
    assert b.split["train"] == ["abdomen_3mm"] and b.summary["slices"]["train"] > 100
    assert not (tmp_path / "run" / "cache" / "sim").exists()  # nothing simulated: pairs come from disk
    ds, _ = eval_dataset({"root": str(tmp_path / "sim"), "doses": [0.5]}, cache_dir=tmp_path / "run" / "cache")
    assert ds.doses == [0.5]
    ld, nd, meta = ds.get_hu(40)
    k = meta["slice_index"]
    np.testing.assert_array_equal(ld[0], read_volume(tmp_path / "sim" / "ld_0.5.nii.gz").data[k])
    np.testing.assert_array_equal(nd[0], read_volume(src).data[k])
    item = b.train[0]
    assert float(item["dose"]) in (0.25, 0.5) and item["ld"].shape == (1, 32, 32)


def test_unpaired_folders_under_the_data_root(pairs, tmp_path):
    """``kind: unpaired`` needs no roots in the recipe: ``--data ROOT`` holds ld/ and nd/ (or ld_root /
    nd_root relative to ROOT); a missing folder is one error naming it."""
    import shutil

    from ldct.data.config import parse_data_config

    assert parse_data_config({"kind": "unpaired"}).ld_root is None  # checked where the paths are resolved
    root = tmp_path / "unpaired"
    for role, pid, src in (("ld", "P1", "quarter_dose"), ("nd", "P2", "full_dose")):
        (root / role / pid).mkdir(parents=True)
        shutil.copy(pairs / pid / src / "ct.npy", root / role / pid / "ct.npy")
    cfg = {"root": str(root), "kind": "unpaired", "patch_size": 32, "split": {"val": 0, "test": 0},
           "samples_per_epoch": 8}
    b = build_datasets(cfg, run_dir=tmp_path / "a", progress=False)
    item = b.train[0]
    assert item["ld"].shape == item["nd"].shape == (1, 32, 32)
    assert {Path(r.source).parent.name for r in b.train.ld_records} == {"P1"}
    assert {Path(r.source).parent.name for r in b.train.nd_records} == {"P2"}
    (root / "low").mkdir()
    (root / "ld").rename(root / "low" / "ld")
    b = build_datasets({**cfg, "ld_root": "low/ld"}, run_dir=tmp_path / "b", progress=False)  # relative to root
    assert all(Path(r.source).parts[-4:-1] == ("low", "ld", "P1") for r in b.train.ld_records)
    with pytest.raises(LdctError, match="unpaired low-dose folder not found") as e:
        build_datasets(cfg, run_dir=tmp_path / "c", progress=False)
    assert str(root / "ld") in str(e.value)
    with pytest.raises(LdctError, match=r"normal-dose folder not found \(data.nd_root\)"):
        build_datasets({**cfg, "ld_root": "low/ld", "nd_root": "nope"}, run_dir=tmp_path / "d", progress=False)


def test_super_resolution_of_slices_not_a_multiple_of_the_factor(shared_data, abdomen, tmp_path):
    """The NIfTI abdomen's 101x122 slices at x4: the normal dose is cropped to 100x120 (bottom/right),
    the low dose is 25x30, so a x4 network's output matches the target in validation and evaluation."""
    from ldct.data.build import eval_dataset

    cfg = {**abdomen, "downsample": 4, "sim": {"mode": "gaussian"}, "split": {"val": 0, "test": 0}}
    ds, _ = eval_dataset(cfg, cache_dir=abdomen["cache_dir"])
    vol = read_volume(shared_data / "volumes" / "abdomen_3mm.nii.gz").data
    assert vol.shape[1:] == (101, 122)
    ld, nd, meta = ds.get_hu(0)
    assert nd.shape == (1, 100, 120) and ld.shape == (1, 25, 30)
    np.testing.assert_array_equal(nd[0], vol[meta["slice_index"], :100, :120])
    item = ds[0]
    up = torch.nn.functional.interpolate(item["ld"][None], scale_factor=4, mode="bicubic")
    assert up.shape[1:] == item["nd"].shape
    # the low dose is the 4x4 area average of the (noisy) normal dose: strongly correlated
    small = nd[0].reshape(25, 4, 30, 4).mean(axis=(1, 3))
    assert np.corrcoef(small.ravel(), ld[0].ravel())[0, 1] > 0.9


def test_evaluation_scores_every_slice_not_the_training_stride(shared_data, abdomen, tmp_path):
    """data.slice_stride thins the training slices; held-out patients are scored on all their body slices."""
    from ldct.data.build import eval_dataset

    cfg = {**abdomen, "sim": {"mode": "gaussian"}}  # slice_stride 25
    train = build_datasets(cfg, run_dir=tmp_path / "a", seed=0, progress=False).train.records
    ds, _ = eval_dataset(cfg, cache_dir=abdomen["cache_dir"])
    z = [r.slice_index for r in ds.records]
    assert all(r.slice_index % 25 == 0 for r in train) and len(train) == 5
    assert z == sorted(z) and len(z) > 100 and set(np.diff(z)) == {1}  # every slice, in order


def test_sample_by_patient_draws_each_training_patient_equally_often(shared_data, tmp_path):
    """A 12-slice and a 2-slice training patient: drawn by slice, the short one gets ~1/7 of the patches; with
    ``sample_by: patient`` about half, and its patches still come from both of its slices."""
    vol = read_volume(shared_data / "volumes" / "abdomen_3mm.nii.gz").data
    root = tmp_path / "uneven"
    for pid, sl in (("LONG", slice(40, 52)), ("SHORT", slice(60, 62)), ("V", slice(70, 71)), ("T", slice(80, 81))):
        for role in ("full_dose", "quarter_dose"):
            (root / pid / role).mkdir(parents=True)
            np.save(root / pid / role / "ct.npy", vol[sl].astype(np.float32))
    share = {}
    for how in ("slice", "patient"):
        cfg = {"root": str(root), "patch_size": 32, "split": {"test": ["T"], "val": ["V"]},
               "samples_per_epoch": 400, "sample_by": how}
        b = build_datasets(cfg, run_dir=tmp_path / how, seed=0)
        items = [b.train[i] for i in range(400)]
        short = [it for it in items if it["patient_id"] == "SHORT"]
        share[how] = len(short) / len(items)
        if how == "patient":
            assert {it["slice_index"] for it in short} == {0, 1}
    assert 0.08 < share["slice"] < 0.22, share
    assert 0.42 < share["patient"] < 0.58, share
    with pytest.raises(LdctError, match="sample_by"):
        build_datasets({"root": str(root), "sample_by": "series"}, run_dir=tmp_path / "bad", seed=0)
