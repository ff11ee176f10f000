"""``ldct info`` / ``convert`` / ``preview`` through the real CLI entry point."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from ldct.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_info_json_contract(shared_data, capsys):
    rc, out, err = run(capsys, "info", shared_data / "chest_dicom", "--json")
    assert rc == 0 and err == ""
    info = json.loads(out)  # exactly one JSON object on stdout
    assert info["shape"] == [30, 512, 512]
    assert info["spacing_mm"] == pytest.approx([8.0, 0.646484375, 0.646484375])
    assert info["modality"] == "CT" and info["series_uid"].endswith("216610983")
    assert info["hu_min"] == -1024 and 1000 < info["hu_max"] < 3100
    assert info["kernel"] == "B40f" and info["kvp"] == 120 and info["warnings"] == []


def test_info_reports_tilt_and_spacing(shared_data, capsys):
    rc, out, _ = run(capsys, "info", shared_data / "head_dicom_tilted")
    assert rc == 0
    assert "gantry tilt" in out and "uneven slice spacing" in out and "1.08 .. 7.00 mm" in out
    rc, out, _ = run(capsys, "info", shared_data / "head_dicom_tilted", "--json")
    info = json.loads(out)
    assert info["gantry_tilt_deg"] == pytest.approx(18.5, abs=0.05) and info["uneven_spacing"] is True
    assert any("gantry tilt" in w for w in info["warnings"])


def test_info_raw_with_options(shared_data, capsys):
    raw = shared_data / "mayo_L067_fd_raw" / "L067_FD_3mm_smooth_0040.raw"
    rc, out, _ = run(
        capsys,
        "info",
        raw,
        "--raw-shape",
        "512,512",
        "--raw-offset",
        "-1024",
        "--raw-spacing",
        "3,0.7,0.7",
        "--json",
    )
    info = json.loads(out)
    assert rc == 0 and info["shape"] == [1, 512, 512] and info["spacing_mm"] == [3.0, 0.7, 0.7]
    assert info["hu_min"] >= -1024 and info["source_format"] == "raw"


def test_convert_and_preview(shared_data, tmp_path, capsys):
    nii = tmp_path / "chest.nii.gz"
    rc, out, _ = run(capsys, "convert", shared_data / "chest_dicom", nii)
    assert rc == 0 and out.strip() == str(nii)
    rc, out, _ = run(capsys, "info", nii, "--json")
    assert json.loads(out)["shape"] == [30, 512, 512]
    series = tmp_path / "series"
    rc, _, _ = run(capsys, "convert", nii, series, "--description", "from nifti")
    assert rc == 0 and len(list(series.iterdir())) == 30
    rc, out, _ = run(capsys, "info", series, "--json")
    back = json.loads(out)
    assert back["series_description"].startswith("from nifti") and back["hu_min"] == -1024
    # preview: preset and explicit window give the same picture; --slice picks the slice
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert (
        run(capsys, "preview", shared_data / "chest_dicom", "-o", a, "--window", "lung", "--slice", "3")[0]
        == 0
    )
    assert (
        run(capsys, "preview", shared_data / "chest_dicom", "-o", b, "--window=-600,1500", "--slice", "3")[0]
        == 0
    )
    pa, pb = np.asarray(Image.open(a)), np.asarray(Image.open(b))
    assert pa.shape == (512, 512) and pa.dtype == np.uint8
    np.testing.assert_array_equal(pa, pb)
    c = tmp_path / "c.png"
    assert (
        run(capsys, "preview", shared_data / "chest_dicom", "-o", c, "--window", "lung", "--slice", "20")[0]
        == 0
    )
    assert not np.array_equal(np.asarray(Image.open(c)), pa)
    # an existing output is not replaced without --overwrite
    rc, _, err = run(capsys, "preview", shared_data / "chest_dicom", "-o", a)
    assert rc == 2 and "already exists" in err


def test_console_script(shared_data):
    exe = shutil.which("ldct")
    assert exe, "console script 'ldct' is not installed"
    res = subprocess.run(
        [exe, "info", str(shared_data / "volumes" / "abdomen_3mm.nii.gz"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["shape"] == [112, 101, 122] and info["spacing_mm"] == pytest.approx([3.0, 3.0, 3.0])
