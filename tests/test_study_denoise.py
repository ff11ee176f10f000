"""``ldct denoise STUDY_DIR -o OUT``: every eligible series of a study (or a tree of studies), each into its
own derived series; ineligible ones skipped with a reason, a failing one reported without stopping the
others, and a second run resumes (complete series are skipped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from ldct.cli import main
from ldct.io import read_volume
from ldct.metrics import noise_std_hu


def _copy_series(src: list[Path], dst: Path, *, number: int, description: str, study_uid: str | None = None,
                 **changes) -> str:
    dst.mkdir(parents=True)
    uid = generate_uid()
    for i, f in enumerate(src):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = uid, number, description
        ds.SOPInstanceUID = generate_uid()
        if study_uid:
            ds.StudyInstanceUID = study_uid
        for k, v in changes.items():
            if k == "bad_orientation":
                if i == 1:
                    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
                continue
            setattr(ds, k, v)
        ds.save_as(dst / f"{i:03d}.dcm")
    return uid


def _study(sample_dicom: Path, root: Path) -> dict[str, str]:
    files = sorted(sample_dicom.iterdir())[9:12]
    st = generate_uid()  # one study (the sample itself carries no StudyInstanceUID)
    uids = {
        "axial": _copy_series(files, root / "s2", number=2, description="ABD axial", study_uid=st),
        "second": _copy_series(files, root / "s3", number=3, description="ABD soft", study_uid=st),
        "scout": _copy_series(files[:1], root / "s1", number=1, description="topogram", study_uid=st,
                              ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]),
        "derived": _copy_series(files, root / "s9", number=9, description="MPR", study_uid=st,
                                ImageType=["DERIVED", "SECONDARY", "AXIAL"]),
        "mr": _copy_series(files[:2], root / "s5", number=5, description="not ct", Modality="MR", study_uid=st),
        "broken": _copy_series(files, root / "s7", number=7, description="broken", bad_orientation=True,
                               study_uid=st),
    }
    return uids


def test_a_study_is_denoised_series_by_series_and_resumes(sample_dicom, tmp_path, capsys):
    study = tmp_path / "study"
    uids = _study(sample_dicom, study)
    out = tmp_path / "out"
    assert main(["denoise", str(study), "-o", str(out), "--backend", "torch"]) == 2  # one series failed
    text = capsys.readouterr()
    assert "2 series denoised, 0 already done, 3 skipped, 1 failed" in text.out
    assert "localizer" in text.out and "derived or secondary" in text.out and "not CT (Modality MR)" in text.out
    assert "FAILED" in text.err and "orientation" in text.err and "1 series failed" in text.err
    assert sorted(p.name for p in out.iterdir()) == ["0002_ABD_axial", "0003_ABD_soft"]
    for name, key in (("0002_ABD_axial", "axial"), ("0003_ABD_soft", "second")):
        got = read_volume(out / name)
        src = read_volume(study, series=uids[key])
        assert got.shape == src.shape == (3, 512, 512)
        assert np.allclose(got.positions, src.positions) and got.meta["series_uid"] != uids[key]
        ds = pydicom.dcmread(sorted((out / name).iterdir())[0])
        assert "DERIVED" in ds.ImageType and ds.StudyInstanceUID == pydicom.dcmread(
            sorted((study / "s2").iterdir())[0]).StudyInstanceUID
        assert noise_std_hu(got.data) < 0.9 * noise_std_hu(src.data)  # denoised (soft-tissue noise)
    before = {p: p.stat().st_mtime_ns for p in (out / "0002_ABD_axial").iterdir()}
    # a second run: complete series are skipped, the failing one is tried again; a deleted one is redone
    import shutil

    shutil.rmtree(out / "0003_ABD_soft")
    assert main(["denoise", str(study), "-o", str(out), "--backend", "torch"]) == 2
    text = capsys.readouterr().out
    assert "1 series denoised, 1 already done" in text
    assert {p: p.stat().st_mtime_ns for p in (out / "0002_ABD_axial").iterdir()} == before
    # --series still picks one series; a file output for a study is refused with one line
    assert main(["denoise", str(study), "-o", str(tmp_path / "one.npy"), "--series", uids["axial"],
                 "--backend", "torch"]) == 0
    assert main(["denoise", str(study), "-o", str(tmp_path / "all.npy")]) == 2
    assert "several DICOM series" in capsys.readouterr().err


def test_a_tree_of_studies_gets_a_folder_per_study(sample_dicom, tmp_path, capsys):
    files = sorted(sample_dicom.iterdir())[10:12]
    tree = tmp_path / "tree"
    _copy_series(files, tree / "p1" / "a", number=2, description="ax", study_uid=generate_uid())
    _copy_series(files, tree / "p2" / "a", number=2, description="ax", study_uid=generate_uid())
    out = tmp_path / "out"
    assert main(["denoise", str(tree), "-o", str(out), "--backend", "torch"]) == 0
    studies = sorted(out.iterdir())
    assert len(studies) == 2 and all((s / "0002_ax").is_dir() for s in studies)
    assert "2 series denoised" in capsys.readouterr().out
