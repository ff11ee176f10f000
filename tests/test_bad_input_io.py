"""Broken inputs: one line on stderr naming the file and the problem, exit code 2, no traceback,
and the inputs stay byte-for-byte unchanged."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ldct.cli import main


def digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and os.access(p, os.R_OK):
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def check_error(rc: int, err: str, name: str, problem: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("ldct: error: ") and "Traceback" not in err
    assert name in lines[0], f"{name!r} not named in {lines[0]!r}"
    assert problem.lower() in lines[0].lower(), f"{problem!r} not in {lines[0]!r}"


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    chest = sorted((shared_data / "chest_dicom").iterdir())
    head = sorted((shared_data / "head_dicom_tilted").iterdir())
    data = chest[0].read_bytes()
    (root / "truncated_pixels.dcm").write_bytes(data[:200_000])
    (root / "truncated_header.dcm").write_bytes(data[:1500])
    ds = pydicom.dcmread(chest[0])
    ds.Modality = "MR"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    ds.save_as(root / "mr.dcm")
    ds = pydicom.dcmread(chest[1])
    del ds.PixelData
    ds.save_as(root / "no_pixels.dcm")
    two = root / "two_series"
    two.mkdir()
    for f in chest[:2] + head[:2]:
        shutil.copy(f, two / f"{f.parent.name}_{f.name}")
    nan = np.zeros((8, 8), np.float32)
    nan[2, 3] = np.nan
    nan[4, 4] = np.inf
    np.save(root / "nan.npy", nan)
    (root / "wrong_size.raw").write_bytes(b"\0" * (512 * 511 * 2))
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not a scan\n")
    (root / "dir.npy").mkdir()
    nii = (shared_data / "volumes" / "abdomen_3mm.nii.gz").read_bytes()
    (root / "truncated.nii.gz").write_bytes(nii[: len(nii) // 3])
    (root / "garbage.nii.gz").write_bytes(gzip.compress(b"not nifti" * 100))
    (root / "loop").symlink_to(root / "loop")
    (root / "ok.npy").write_bytes((root / "nan.npy").read_bytes())
    np.save(root / "ok.npy", np.full((8, 8), -1000.0, np.float32))
    return root


CASES = [
    # (args with {d} = corpus dir, file named in the message, problem text)
    (["info", "{d}/truncated_pixels.dcm"], "truncated_pixels.dcm", "truncated"),
    (["info", "{d}/truncated_header.dcm"], "truncated_header.dcm", "truncated"),
    (["convert", "{d}/mr.dcm", "{o}/mr.nii.gz"], "mr.dcm", "not CT"),
    (["preview", "{d}/mr.dcm", "-o", "{o}/mr.png"], "mr.dcm", "not CT"),
    (["convert", "{d}/two_series", "{o}/x.nii.gz"], "two_series", "2 series found"),  # info lists them
    (["info", "{d}/two_series", "--series", "7"], "two_series", "no series '7'"),
    (["info", "{d}/no_pixels.dcm"], "no_pixels.dcm", "no PixelData"),
    (["info", "{d}/nan.npy"], "nan.npy", "1 NaN and 1 Inf"),
    (["info", "{d}/wrong_size.raw", "--raw-shape", "512,512"], "wrong_size.raw", "523264 bytes"),
    (["info", "{d}/wrong_size.raw"], "wrong_size.raw", "--raw-shape"),
    (["info", "{d}/empty"], "empty", "empty"),
    (["info", "{d}/does_not_exist.dcm"], "does_not_exist.dcm", "no such file"),
    (["info", "{d}/notes.txt"], "notes.txt", "not a DICOM file"),
    (["info", "{d}/dir.npy"], "dir.npy", "is a directory"),
    (["info", "{d}/truncated.nii.gz"], "truncated.nii.gz", "cannot read NIfTI"),
    (["info", "{d}/garbage.nii.gz"], "garbage.nii.gz", "cannot read NIfTI"),
    (["info", "{d}/loop"], "loop", "cannot access"),
    (["convert", "{d}/ok.npy", "{d}/ok.npy", "--overwrite"], "ok.npy", "refusing to overwrite an input"),
    (["preview", "{d}/ok.npy", "-o", "{o}/p.png", "--window", "wide"], "wide", "bad window"),
    (["info", "{d}/wrong_size.raw", "--raw-shape", "512,x"], "--raw-shape", "bad --raw-shape"),
]


@pytest.mark.parametrize("args,name,problem", CASES, ids=[c[1] + ":" + c[2] for c in CASES])
def test_bad_input(corpus, tmp_path, capsys, args, name, problem):
    before = digest(corpus)
    argv = [a.format(d=corpus, o=tmp_path) for a in args]
    rc = main(argv)
    check_error(rc, capsys.readouterr().err, name, problem)
    assert digest(corpus) == before
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_compressed_without_decoder(shared_data, tmp_path):
    """JPEG 2000 series in a Python where pylibjpeg is not installed and Pillow lacks OpenJPEG."""
    src = tmp_path / "j2k"
    shutil.copytree(shared_data / "abdomen_dicom", src)
    before = digest(src)
    code = (
        "import sys\n"
        "sys.modules['pylibjpeg'] = None; sys.modules['openjpeg'] = None  # not installed\n"
        "import PIL.features\n"
        "_check = PIL.features.check_codec\n"
        "PIL.features.check_codec = lambda c: c != 'jpg_2000' and _check(c)  # Pillow without OpenJPEG\n"
        "from ldct.cli import main\n"
        f"sys.exit(main(['info', {str(src)!r}]))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    check_error(res.returncode, res.stderr, "j2k", "pip install pylibjpeg pylibjpeg-openjpeg")
    assert "JPEG 2000" in res.stderr and res.stdout == ""
    assert digest(src) == before


def test_unreadable_file(shared_data, capsys):
    """A file without read permission. Root reads anything, so as root the check runs with the
    effective user id of 'nobody' (modules it needs are imported first)."""
    d = Path(tempfile.mkdtemp(prefix="ldct_unreadable_"))
    try:
        os.chmod(d, 0o755)
        good, bad = d / "good.npy", d / "secret.npy"
        np.save(good, np.zeros((4, 4), np.float32))
        shutil.copy(good, bad)
        os.chmod(bad, 0)
        assert main(["info", str(good)]) == 0  # warm up every import the command needs
        capsys.readouterr()
        as_root = os.geteuid() == 0
        if as_root:
            os.seteuid(65534)
        try:
            try:
                bad.open("rb").close()
                readable = True
            except PermissionError:
                readable = False
            if readable:
                pytest.skip("this user can read a file with mode 000; cannot test unreadable files here")
            rc = main(["info", str(bad)])
        finally:
            if as_root:
                os.seteuid(0)
        check_error(rc, capsys.readouterr().err, "secret.npy", "permission denied")
    finally:
        shutil.rmtree(d, ignore_errors=True)
