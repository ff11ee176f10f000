"""``ldct simulate``: the command contract, output folders with manifests, user errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from ldct.cli import main
from ldct.data.manifest import read_manifest, write_manifest
from ldct.errors import LdctError
from ldct.io import read_volume, write_volume
from ldct.simulate import downsample, image_noise


@pytest.fixture
def mayo_npy(shared_data, tmp_path):
    raw = np.fromfile(shared_data / "mayo_L067_fd_raw" / "L067_FD_3mm_smooth_0150.raw", "<u2").reshape(512, 512)
    hu = (raw.astype(np.float32) - 1024.0)[96:416, 96:416].copy()
    path = tmp_path / "slice.npy"
    np.save(path, hu)
    return path, hu


def test_npy_in_npy_out_one_dose(mayo_npy, tmp_path):
    src, hu = mayo_npy
    out = tmp_path / "ld.npy"
    args = [str(src), "--dose", "25%", "-o", str(out), "--seed", "3", "--spacing", "0.68", "--i0", "2e5"]
    assert main(["simulate", *args]) == 0
    ld = np.load(out)
    assert ld.shape == hu.shape and ld.dtype == np.float32
    assert 8 < np.std(ld - hu) < 80
    np.testing.assert_array_equal(np.load(src), hu)  # input untouched
    out2 = tmp_path / "ld2.npy"
    assert main(["simulate", *args[:4], str(out2), *args[5:]]) == 0
    np.testing.assert_array_equal(np.load(out2), ld)


def test_dicom_series_several_doses_writes_series_and_manifest(sample_dicom, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for f in sorted(sample_dicom.iterdir())[8:10]:
        shutil.copy(f, src / f.name)
    out = tmp_path / "sim"
    assert main(["simulate", str(src), "--dose", "0.5", "0.25", "-o", str(out), "--seed", "1", "--i0", "3e5"]) == 0
    m = read_manifest(out)
    assert m["mode"] == "projection" and set(m["low_dose"]) == {"0.5", "0.25"}
    assert m["parameters"]["i0"] == 3e5 and m["parameters"]["seed"] == 1
    assert m["parameters"]["geometry"]["n_views"] == 1152
    assert len(m["records"]) == 4 and {r["dose"] for r in m["records"]} == {0.5, 0.25}
    nd, orig = read_volume(m["normal_dose"]), read_volume(src)
    np.testing.assert_allclose(nd.data, orig.data, atol=1.0)
    ld = read_volume(m["low_dose"]["0.25"])
    assert ld.shape == orig.shape
    assert ld.meta.get("series_uid") != orig.meta.get("series_uid")
    d25, d50 = (np.std(read_volume(m["low_dose"][k]).data - orig.data) for k in ("0.25", "0.5"))
    assert 1.4 < d25 / d50 < 2.0  # sqrt(3) expected


def test_nifti_super_resolution_pairs(shared_data, tmp_path):
    out = tmp_path / "sr"
    full = read_volume(shared_data / "volumes" / "abdomen_3mm.nii.gz")
    src = tmp_path / "part.nii.gz"
    write_volume(full.with_data(full.data[50:56]), src)  # 6 slices keep the test fast
    assert main(["simulate", str(src), "--dose", "0.5", "-o", str(out), "--seed", "0", "--downsample", "2"]) == 0
    m = read_manifest(out)
    nd, ld = read_volume(m["normal_dose"]), read_volume(m["low_dose"]["0.5"])
    assert m["parameters"]["downsample"] == 2 and m["parameters"]["i0_source"] == "calibrated"
    assert ld.shape == (nd.shape[0], nd.shape[1] // 2, nd.shape[2] // 2)
    assert np.allclose(ld.spacing[1:], np.array(nd.spacing[1:]) * 2)


def test_photograph_image_mode(tmp_path):
    img = np.tile(np.linspace(20, 230, 48, dtype=np.float32), (48, 1))
    src = tmp_path / "photo.png"
    Image.fromarray(img.astype(np.uint8)).save(src)
    out = tmp_path / "noisy"
    assert main(["simulate", str(src), "--dose", "0.25", "-o", str(out), "--mode", "gaussian", "--seed", "2"]) == 0
    m = read_manifest(out)
    noisy = np.asarray(Image.open(m["low_dose"]["0.25"]), dtype=np.float32)
    assert noisy.shape == img.shape and 2.5 < np.std(noisy - img.astype(np.uint8)) < 7


@pytest.mark.parametrize(
    "case, problem",
    [("dose0", "outside (0, 1]"), ("dose15", "outside (0, 1]"), ("nan", "NaN"), ("air", "no body"),
     ("photo", "photograph")],
)
def test_bad_input_one_line_exit_2(case, problem, mayo_npy, tmp_path, capsys):
    src, _ = mayo_npy
    dose = {"dose0": "0", "dose15": "1.5"}.get(case, "0.5")
    if case == "nan":
        src = tmp_path / "nan.npy"
        np.save(src, np.full((64, 64), np.nan, np.float32))
    elif case == "air":
        src = tmp_path / "air.npy"
        np.save(src, np.full((64, 64), -1000.0, np.float32))
    elif case == "photo":
        src = tmp_path / "p.png"
        Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(src)
    code = main(["simulate", str(src), "--dose", dose, "-o", str(tmp_path / "o.npy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("ldct: error:") and problem in err[0], err
    assert not (tmp_path / "o.npy").exists()


def test_manifest_validation(tmp_path):
    with pytest.raises(LdctError, match="missing keys"):
        write_manifest(tmp_path, {"kind": "ldct-simulation"})
    with pytest.raises(LdctError, match="no simulation manifest"):
        read_manifest(tmp_path)


def test_image_noise_and_downsample():
    x = np.zeros((2, 64, 64), np.float32)
    g = image_noise(x, mode="gaussian", sigma=10.0, seed=0)
    assert abs(g.std() - 10) < 0.3 and abs(g.mean()) < 0.3
    bright = np.full((64, 64, 3), 200.0, np.float32)
    pg = image_noise(bright, mode="poisson-gaussian", sigma=0.0, gain=2.0, seed=0)
    assert abs(pg.var() - 2.0 * 200) < 30  # variance = gain * signal
    ramp = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    small = downsample(ramp, 4, "area")
    assert small.shape == (16, 16) and small[0, 0] == pytest.approx(ramp[:4, :4].mean())
    assert downsample(ramp, 2, "bicubic").shape == (32, 32)
    assert downsample(bright, 2, channels_last=True).shape == (32, 32, 3)
