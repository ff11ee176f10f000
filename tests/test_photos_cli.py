"""Photographs end to end: `ldct train pix2pix_photos` (3 steps, tiny nets) on crops of scikit-image's
sample photos, then `ldct evaluate` (held-out files, fixed-seed Gaussian noise, PSNR/SSIM on 0..255)
and `ldct denoise` (PNG/JPG file or folder -> PNG of the same size and mode); CT/photo mix-ups are one
line, exit 2."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ldct.cli import main
from ldct.model_zoo import bundled_dir

SIGMA = 25.0  # the recipe's data.sim.sigma (0..255 units)
TEST_IDS = ["held/rocket", "held/cat"]


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("ldct: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Six 48x56 RGB crops of real photographs; the two held-out ones avoid 0/255 (little clipping)."""
    import skimage.data

    root = tmp_path_factory.mktemp("photos")
    (root / "held").mkdir()
    crops = {"a1.png": skimage.data.astronaut()[30:78, 180:236], "a2.png": skimage.data.astronaut()[300:348, 100:156],
             "c1.png": skimage.data.coffee()[100:148, 200:256], "r1.jpg": skimage.data.retina()[200:248, 200:256],
             "held/rocket.png": skimage.data.rocket()[200:248, 100:156],
             "held/cat.png": skimage.data.chelsea()[60:108, 240:296]}
    for name, img in crops.items():
        assert img.shape == (48, 56, 3) and img.dtype == np.uint8
        Image.fromarray(img).save(root / name)
    return root


@pytest.fixture(scope="module")
def run(photos, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("p2p") / "run"
    code = main(["train", "pix2pix_photos", "--data", str(photos), "--out", str(out), "--max-steps", "3",
                 "--set", "args.generator={name: unet, in_channels: 3, width: 8, depth: 2, residual: true}",
                 "--set", "args.discriminator={name: patchgan, channels: 8}", "--set", "data.patch_size=32",
                 "--set", "train.batch_size=2", "--set", "data.samples_per_epoch=8", "--set", "train.ckpt_every=3",
                 "--set", "train.log_every=1", "--set", "train.accelerator=cpu",
                 "--set", f"data.split={{val: 0, test: [{', '.join(TEST_IDS)}]}}"])
    assert code == 0
    return out


def test_checkpoint_records_photos(run):
    meta = json.loads((run / "checkpoints" / "step_0000003" / "meta.json").read_text())
    assert meta["data_kind"] == "photos" and meta["full_scale"] == 255.0 and meta["channels"] == 3
    assert meta["photo_sim"]["sigma"] == SIGMA
    from ldct import Denoiser

    m = Denoiser.load(str(run))
    assert m.data_kind == "photos" and m.full_scale == 255.0
    assert Denoiser.load("default").data_kind == "ct"  # the bundled CT model (no data_kind recorded)


def test_evaluate_photo_run(run, photos, tmp_path, capsys):
    ev = tmp_path / "ev"
    assert main(["evaluate", str(run), "--data", str(photos), "--out", str(ev)]) == 0
    printed = capsys.readouterr().out
    flat = " ".join(printed.split())
    assert "noisy" in flat and "gaussian, sigma 25" in flat and "data_range 255" in flat, printed
    with open(ev / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["image"] for r in rows}) == sorted(TEST_IDS)  # the held-out files, by file
    assert {r["method"] for r in rows} == {"noisy", "gaussian", "pix2pix/unet"}
    assert all(r["data_range"] == "255" and r["channels"] == "3" for r in rows)
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["kind"] == "ldct-evaluation" and summary["data_kind"] == "photos"
    assert summary["split_by"] == "file" and summary["data_range"] == [255.0]
    assert summary["images_in_training_set"] == []
    by = {r["method"]: r for r in summary["summary"]}
    # Gaussian sigma 25 on 0..255: PSNR = 10 log10(255^2 / 25^2) = 20.17 dB (clipping at 0/255 only raises it)
    expected = 10 * math.log10(255.0**2 / SIGMA**2)
    assert expected - 0.1 < by["noisy"]["psnr"] < expected + 0.4, by["noisy"]
    assert 0.9 * SIGMA < by["noisy"]["rmse"] < 1.01 * SIGMA
    assert by["gaussian"]["psnr_gain"] > 1.0  # the filter removes much of white noise
    assert np.isfinite(by["pix2pix/unet"]["psnr"]) and 0 < by["pix2pix/unet"]["ssim"] < 1
    assert (ev / "samples.png").is_file() and (ev / "summary.csv").is_file()
    assert main(["report", str(ev), "-o", str(tmp_path / "r.html")]) == 0  # the HTML report reads it
    assert "photographs: metrics per method" in (tmp_path / "r.html").read_text()

    # the noisy row is the run's test set (PhotoDataset whole-image mode) scored with scikit-image
    from ldct.data import build_datasets

    recipe_data = json.loads((run / "checkpoints" / "step_0000003" / "meta.json").read_text())["recipe"]["data"]
    bundle = build_datasets({**recipe_data, "root": str(photos)}, run_dir=None)
    for k, image_id in enumerate(bundle.test.ids):
        item = bundle.test[k]
        noisy = (item["ld"].numpy().astype(np.float64) + 1) * 127.5
        clean = (item["nd"].numpy().astype(np.float64) + 1) * 127.5
        row = next(r for r in rows if r["image"] == image_id and r["method"] == "noisy")
        assert float(row["psnr"]) == pytest.approx(peak_signal_noise_ratio(clean, noisy, data_range=255), abs=1e-3)
        ssim = structural_similarity(clean, noisy, channel_axis=0, data_range=255, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)
        assert float(row["ssim"]) == pytest.approx(ssim, abs=1e-4)


def test_denoise_photo_file_and_folder(run, photos, tmp_path, capsys):
    src = photos / "held" / "rocket.png"
    out = tmp_path / "out.png"
    assert main(["denoise", str(src), "-o", str(out), "--model", str(run), "--device", "cpu",
                 "--preview", str(tmp_path / "pv.png")]) == 0
    cap = capsys.readouterr()
    assert "trained on photographs" in cap.err and "1 image" in cap.out
    with Image.open(src) as a, Image.open(out) as b:
        assert b.format == "PNG" and b.mode == a.mode == "RGB" and b.size == a.size
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    # the PNG is the generator's output on the file's [-1, 1] intensities, mapped back and rounded
    from ldct import Denoiser
    from ldct.data.photos import photo_to_net

    net = Denoiser.load(str(run)).net
    with torch.no_grad():
        pred = net(torch.from_numpy(photo_to_net(np.moveaxis(x, -1, 0), 255.0))[None])[0].numpy()
    expect = np.clip(np.round((np.moveaxis(pred, 0, -1).astype(np.float64) + 1) * 127.5), 0, 255)
    assert np.abs(expect - y).max() <= 1 and np.abs(x - y).mean() > 0
    assert Image.open(tmp_path / "pv.png").size == (2 * 56 + 8, 48)

    # tiled inference of the same file: the same picture
    out_t = tmp_path / "tiled.png"
    assert main(["denoise", str(src), "-o", str(out_t), "--model", str(run), "--tile", "32", "--overlap", "8"]) == 0
    assert np.abs(np.asarray(Image.open(out_t), dtype=np.float64) - y).mean() < 3

    # grey input keeps its mode; a folder -> a folder of PNGs with the same relative names
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.asarray(Image.open(src).convert("L"))).save(folder / "grey.png")
    Image.open(photos / "r1.jpg").save(folder / "sub" / "photo.jpg")
    res = tmp_path / "res"
    assert main(["denoise", str(folder), "-o", str(res), "--model", str(run)]) == 0
    assert "2 images" in capsys.readouterr().out
    assert sorted(p.relative_to(res).as_posix() for p in res.rglob("*.png")) == ["grey.png", "sub/photo.png"]
    assert Image.open(res / "grey.png").mode == "L" and Image.open(res / "grey.png").size == (56, 48)
    assert Image.open(res / "sub" / "photo.png").mode == "RGB"
    # alpha is kept; 16-bit grey stays 16-bit
    rgba, g16 = tmp_path / "rgba.png", tmp_path / "g16.png"
    Image.fromarray(np.dstack([x.astype(np.uint8), np.full((48, 56), 200, np.uint8)]), mode="RGBA").save(rgba)
    Image.fromarray((x.mean(-1) * 257).astype(np.uint16)).save(g16)
    for f in (rgba, g16):
        assert main(["denoise", str(f), "-o", str(tmp_path / f"den_{f.name}"), "--model", str(run)]) == 0
    with Image.open(tmp_path / "den_rgba.png") as im:
        assert im.mode == "RGBA" and (np.asarray(im)[..., 3] == 200).all()
    with Image.open(tmp_path / "den_g16.png") as im:
        assert im.mode.startswith("I;16") and im.size == (56, 48) and np.asarray(im).max() > 255
    # an existing output needs --overwrite
    assert main(["denoise", str(src), "-o", str(out), "--model", str(run)]) == 2
    assert "already exists" in _one_error_line(capsys.readouterr().err)


def test_ct_photo_mixups_are_one_line(run, photos, sample_dicom, tmp_path, capsys):
    src = photos / "held" / "rocket.png"
    # a CT model (the bundled default) on a photograph
    assert main(["denoise", str(src), "-o", str(tmp_path / "o.png"), "--model", "default"]) == 2
    assert "trained on CT" in _one_error_line(capsys.readouterr().err)
    # a photo model on CT: a DICOM series folder and an .npy HU slice
    assert main(["denoise", str(sample_dicom), "-o", str(tmp_path / "o"), "--model", str(run)]) == 2
    assert "trained on photographs" in _one_error_line(capsys.readouterr().err)
    np.save(tmp_path / "slice.npy", np.zeros((32, 32), np.float32) - 1000)
    assert main(["denoise", str(tmp_path / "slice.npy"), "-o", str(tmp_path / "o.npy"), "--model", str(run)]) == 2
    assert "trained on photographs" in _one_error_line(capsys.readouterr().err)
    # photographs are written as PNG
    assert main(["denoise", str(src), "-o", str(tmp_path / "o.jpg"), "--model", str(run)]) == 2
    assert ".png" in _one_error_line(capsys.readouterr().err)
    # evaluate: a CT model on photographs, a photo model on CT, --doses for a photo model
    assert main(["evaluate", str(bundled_dir() / "default.safetensors"), "--data", str(photos),
                 "--out", str(tmp_path / "e1")]) == 2
    assert "trained on CT" in _one_error_line(capsys.readouterr().err)
    assert main(["evaluate", str(run), "--data", str(sample_dicom), "--out", str(tmp_path / "e2")]) == 2
    assert "no PNG/JPG" in _one_error_line(capsys.readouterr().err)
    assert main(["evaluate", str(run), "--data", str(photos), "--doses", "0.25", "--out", str(tmp_path / "e3")]) == 2
    assert "--doses" in _one_error_line(capsys.readouterr().err)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("o", "e"))]
