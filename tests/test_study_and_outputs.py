"""Data a user actually has: folders of several `ldct simulate` outputs, several inputs to one
`ldct simulate`, and `ldct info` of a study folder holding several series."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ldct.cli import main
from ldct.data import build_datasets
from ldct.data.discover import discover
from ldct.data.manifest import read_manifest
from ldct.io import read_volume

SERIES = {"chest": "chest_dicom", "abdomen": "abdomen_dicom", "head": "head_dicom_tilted"}
PATIENTS = {"chest": "Lung_Dx-A0002", "head": "QMNx85rKkkg", "abdomen": "abdomen"}  # abdomen: no PatientID


def _copy_slices(src: Path, dst: Path, k0: int = 10, n: int = 2) -> Path:
    dst.mkdir(parents=True)
    for f in sorted(p for p in src.iterdir() if p.is_file())[k0:k0 + n]:
        shutil.copy(f, dst / f.name)
    return dst


@pytest.fixture(scope="module")
def outputs(shared_data, tmp_path_factory):
    """Three real DICOM series (2 slices each) simulated by one `ldct simulate` into ROOT/<input name>/."""
    base = tmp_path_factory.mktemp("outputs")
    ins = [str(_copy_slices(shared_data / src, base / "in" / name)) for name, src in SERIES.items()]
    root = base / "root"
    code = main(["simulate", *ins, "--dose", "0.25", "-o", str(root), "--mode", "gaussian", "--seed", "0"])
    assert code == 0
    return root, [Path(p) for p in ins]


def test_several_inputs_each_get_their_own_output_folder(outputs):
    root, _ = outputs
    assert sorted(p.name for p in root.iterdir()) == sorted(SERIES)  # nothing else (no staging left)
    for name in SERIES:
        m = read_manifest(root / name)
        assert Path(m["source"]).name == name and set(m["low_dose"]) == {"0.25"}
        assert len(m["records"]) == 2
        nd, orig = read_volume(m["normal_dose"]), read_volume(root.parent / "in" / name)
        np.testing.assert_allclose(nd.data, orig.data, atol=1.0)
        ld = read_volume(m["low_dose"]["0.25"])
        assert 3 < float(np.std(ld.data - nd.data)) < 60  # noise added, same anatomy


def test_writer_states_what_each_series_is(outputs):
    root, _ = outputs
    nd = pydicom.dcmread(next((root / "chest" / "nd").iterdir()), stop_before_pixels=True)
    ld = pydicom.dcmread(next((root / "chest" / "ld_0.25").iterdir()), stop_before_pixels=True)
    assert list(nd.ImageType)[:1] == list(ld.ImageType)[:1] == ["DERIVED"]
    assert "simulated 25% dose" in ld.DerivationDescription
    assert "simulated" not in nd.DerivationDescription and "normal-dose reference" in nd.DerivationDescription


def test_outputs_are_recognised_by_what_they_are(outputs):
    root, _ = outputs
    scans = discover(root)
    assert len(scans) == 6
    got = sorted((s.name, s.role, s.role_dose) for s in scans)
    assert got == sorted([(f"{n}/nd", "nd", None) for n in SERIES] + [(f"{n}/ld_0.25", "ld", 0.25) for n in SERIES])
    assert {s.patient_id for s in scans} == set(PATIENTS.values())
    assert all(s.manifest == root / s.name.split("/")[0] / "manifest.json" for s in scans)


def test_folder_of_outputs_trains_as_three_patients(outputs, tmp_path):
    root, _ = outputs
    b = build_datasets({"root": str(root), "patch_size": 64}, run_dir=tmp_path / "run", progress=False)
    assert b.summary["kind"] == "manifest" and b.summary["warnings"] == []
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    parts = [split["train"], split["val"], split["test"]]
    assert sorted(p for part in parts for p in part) == sorted(PATIENTS.values()) and all(len(p) == 1 for p in parts)
    assert b.summary["slices"] == {"train": 2, "val": 2, "test": 2}
    assert b.summary["train_doses"] == [0.25] and not b.summary["fresh_noise"]
    # the low dose served is the one simulated on disk, not a new simulation
    item = b.val[0]
    pid = split["val"][0]
    name = next(k for k, v in PATIENTS.items() if v == pid)
    ld_disk = read_volume(read_manifest(root / name)["low_dose"]["0.25"]).data
    assert item["patient_id"] == pid
    assert any(np.allclose(b.val.store.ld(r, 0.25)[0], ld_disk[r.slice_index]) for r in b.val.records)


def test_outputs_beside_other_scans_and_explicit_kinds(outputs, shared_data, tmp_path):
    root, _ = outputs
    mixed = tmp_path / "mixed"
    shutil.copytree(root, mixed / "sims")
    _copy_slices(shared_data / "chest_dicom", mixed / "raw_chest", k0=20)
    b = build_datasets({"root": str(mixed), "patch_size": 64, "split": {"val": 1, "test": 0}}, run_dir=None,
                       progress=False)
    assert b.summary["kind"] == "manifest"
    assert any("raw_chest" in w and "left out" in w for w in b.summary["warnings"])
    # paired_dirs pairs each reference with its own low dose (header roles), simulated uses the references
    p = build_datasets({"root": str(root), "kind": "paired_dirs", "patch_size": 64}, run_dir=None, progress=False)
    assert p.summary["slices"] == {"train": 2, "val": 2, "test": 2} and p.summary["train_doses"] == [0.25]
    s = build_datasets({"root": str(root), "kind": "simulated", "patch_size": 64, "precompute": False,
                        "sim": {"mode": "gaussian"}}, run_dir=None, progress=False)
    assert sorted(r.source.rsplit("/", 1)[-1] for r in s.train.records + s.val.records + s.test.records) == \
        ["nd"] * 6


def test_ldct_series_without_manifest_and_the_word_ldct(outputs, tmp_path):
    root, _ = outputs
    study = tmp_path / "ldct_study"  # the word "ldct" in a path says nothing about dose
    shutil.copytree(root / "head" / "nd", study / "quarter_copy")  # nor do path tokens about ldct's own series
    shutil.copytree(root / "head" / "ld_0.25", study / "series2")
    roles = {s.name: (s.role, s.role_dose) for s in discover(study)}
    assert roles == {"quarter_copy": ("nd", None), "series2": ("ld", 0.25)}
    plain = tmp_path / "ldct_scans" / "chest"
    shutil.copytree(root.parent / "in" / "chest", plain)
    assert [s.role for s in discover(plain.parent)] == [None]


@pytest.mark.parametrize("stem", ["ct", "ct.v2"])  # a dot in the name: the guessed id is still a guess
def test_npy_inputs_of_the_same_name(shared_data, tmp_path, stem):
    raw = sorted((shared_data / "mayo_L067_fd_raw").glob("*.raw"))
    ins = []
    for k, p in enumerate(("P1", "P2", "P3")):
        hu = np.stack([np.fromfile(f, "<u2").reshape(512, 512)[128:384, 128:384].astype(np.float32) - 1024
                       for f in raw[2 * k:2 * k + 2]])
        (tmp_path / p).mkdir()
        np.save(tmp_path / p / f"{stem}.npy", hu)
        ins.append(str(tmp_path / p / f"{stem}.npy"))
    out = tmp_path / "sim"
    assert main(["simulate", *ins, "--dose", "0.5", "-o", str(out), "--mode", "gaussian", "--spacing", "0.7",
                 "--seed", "1"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 3 and all(n.startswith(f"P{k}_") for k, n in zip((1, 2, 3), names)), names
    scans = discover(out)
    assert sorted((s.patient_id, s.role) for s in scans) == sorted(
        [(n, r) for n in names for r in ("ld", "nd")])
    b = build_datasets({"root": str(out), "patch_size": 64}, run_dir=None, progress=False)
    assert b.summary["kind"] == "manifest" and len(b.summary["patients"]) == 3
    assert b.summary["train_doses"] == [0.5]


def test_one_bad_input_fails_before_writing(shared_data, tmp_path, capsys):
    good = tmp_path / "good.npy"
    raw = np.fromfile(shared_data / "mayo_L067_fd_raw" / "L067_FD_3mm_smooth_0150.raw", "<u2")
    np.save(good, raw.reshape(512, 512)[128:384, 128:384].astype(np.float32) - 1024)
    bad = tmp_path / "nan.npy"
    np.save(bad, np.full((64, 64), np.nan, np.float32))
    out = tmp_path / "out"
    args = ["--dose", "0.25", "--spacing", "0.7", "--i0", "1e5"]
    assert main(["simulate", str(good), str(bad), *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ldct: error:") and "nan.npy" in err[0] and "NaN" in err[0]
    assert not out.exists()
    # an existing OUT: a failure while simulating (no soft tissue to measure) leaves it as it was
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    air = tmp_path / "air.npy"
    np.save(air, np.full((2, 64, 64), -1000.0, np.float32))
    assert main(["simulate", str(good), str(air), "--dose", "0.25", "--mode", "gaussian", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ldct: error:") and "air.npy" in err[-1]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    # taken output names, an input given twice, a .npy output: one line each, nothing written
    (out / "good").mkdir()
    (out / "good" / "x").write_text("x")
    for argv, needle in (([str(good), str(air)], "already exists"), ([str(good), str(good)], "given twice")):
        assert main(["simulate", *argv, *args, "-o", str(out)]) == 2
        line = capsys.readouterr().err.strip().splitlines()
        assert len(line) == 1 and needle in line[0]
    assert main(["simulate", str(good), str(air), *args, "-o", str(tmp_path / "o.npy")]) == 2
    assert "output folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["good", "keep.txt"] and not (tmp_path / "o.npy").exists()


def test_several_inputs_into_existing_folder_and_overwrite(shared_data, tmp_path):
    ins = []
    for k, name in enumerate(("a", "b")):
        raw = np.fromfile(sorted((shared_data / "mayo_L067_fd_raw").glob("*.raw"))[k], "<u2")
        np.save(tmp_path / f"{name}.npy", raw.reshape(512, 512)[128:384, 128:384].astype(np.float32) - 1024)
        ins.append(str(tmp_path / f"{name}.npy"))
    out = tmp_path / "out"
    (out / "other").mkdir(parents=True)
    args = ["--dose", "0.25", "--mode", "gaussian", "--spacing", "0.7", "-o", str(out)]
    assert main(["simulate", *ins, *args, "--seed", "1"]) == 0
    first = np.load(out / "a" / "ld_0.25.npy")
    assert main(["simulate", *ins, *args, "--seed", "2", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "other"]
    assert not np.array_equal(np.load(out / "a" / "ld_0.25.npy"), first)


def test_info_lists_every_series_of_a_study(shared_data, tmp_path, capsys):
    study = tmp_path / "study"
    _copy_slices(shared_data / "chest_dicom", study / "chest", n=3)
    _copy_slices(shared_data / "head_dicom_tilted", study / "more" / "head", n=2)
    assert main(["info", str(study)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"2 series in {study}")
    chest = next(line for line in out.splitlines() if "ThoraxRoutine" in line)
    assert "B40f" in chest and "ORIGINAL\\PRIMARY" in chest and " 3 " in chest and "chest" in chest
    assert main(["info", str(study), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list) and len(rows) == 2
    by = {r["folder"]: r for r in rows}
    c, h = by["chest"], by["more/head"]
    assert c["slices"] == 3 and c["kernel"] == "B40f" and c["modality"] == "CT" and c["size"] == [512, 512]
    assert c["image_type"][:2] == ["ORIGINAL", "PRIMARY"] and c["series_number"] == 3
    assert c["spacing_mm"][0] == pytest.approx(8.0, abs=0.5) and c["spacing_mm"][1] == pytest.approx(0.646, abs=1e-3)
    assert h["slices"] == 2 and h["patient_id"] == "QMNx85rKkkg"
    assert [r["index"] for r in rows] == [0, 1]
    # one series (or one picked with --series) is shown as before: one object with the voxel summary
    assert main(["info", str(study / "chest"), "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["shape"] == [3, 512, 512] and one["series_description"].startswith("ThoraxRoutine")
    assert main(["info", str(study), "--series", str(c["index"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [3, 512, 512]


def test_outputs_with_different_doses(shared_data, tmp_path):
    raw = sorted((shared_data / "mayo_L067_fd_raw").glob("*.raw"))
    out = tmp_path / "sims"
    for k, (name, doses) in enumerate((("a", ["0.25", "0.5"]), ("b", ["0.25"]), ("c", ["0.5", "0.25"]))):
        src = tmp_path / f"{name}.npy"
        np.save(src, np.fromfile(raw[k], "<u2").reshape(512, 512)[128:384, 128:384].astype(np.float32) - 1024)
        assert main(["simulate", str(src), "--dose", *doses, "--mode", "gaussian", "--spacing", "0.7",
                     "-o", str(out / name)]) == 0
    b = build_datasets({"root": str(out), "patch_size": 64}, run_dir=None, progress=False)
    assert b.summary["train_doses"] == [0.25] and len(b.summary["patients"]) == 3
    assert any("0.5 left out" in w for w in b.summary["warnings"])
    # data.exclude picks what is used: without b's series only a and c remain, with both doses
    b2 = build_datasets({"root": str(out), "patch_size": 64, "exclude": ["b/*"], "split": {"val": 1, "test": 0}},
                        run_dir=None, progress=False)
    assert b2.summary["train_doses"] == [0.25, 0.5] and sorted(b2.summary["patients"]) == ["a", "c"]
    shutil.rmtree(out / "a")
    shutil.rmtree(out / "c")
    np.save(tmp_path / "d.npy", np.load(tmp_path / "a.npy"))
    assert main(["simulate", str(tmp_path / "d.npy"), "--dose", "0.5", "--mode", "gaussian", "--spacing", "0.7",
                 "-o", str(out / "d")]) == 0
    with pytest.raises(Exception, match="share no dose"):
        build_datasets({"root": str(out), "patch_size": 64}, run_dir=None, progress=False)
