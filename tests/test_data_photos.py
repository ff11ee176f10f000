"""``data.kind: photos``: a folder of RGB photographs (scikit-image's bundled sample photos, cropped
small) with Gaussian noise from the simulator's image mode; split by file; pix2pix trains on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ldct.data import build_datasets
from ldct.data.config import parse_data_config
from ldct.errors import LdctError

SIGMA = 20.0  # 8-bit intensity units


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Five 48x56 RGB crops of real photographs (astronaut, retina, coffee) as PNG, one as JPEG."""
    import skimage.data

    root = tmp_path_factory.mktemp("photos")
    (root / "person_b").mkdir()
    imgs = [skimage.data.astronaut()[30:78, 180:236], skimage.data.astronaut()[300:348, 100:156],
            skimage.data.retina()[200:248, 200:256], skimage.data.coffee()[100:148, 200:256],
            skimage.data.retina()[600:648, 500:556]]
    names = ["a1.png", "a2.png", "person_b/r1.png", "c1.png", "person_b/r2.jpg"]
    for img, name in zip(imgs, names):
        assert img.shape == (48, 56, 3) and img.dtype == np.uint8
        Image.fromarray(img).save(root / name)
    return root


def cfg(root: Path, **extra) -> dict:
    return {"root": str(root), "kind": "photos", "channels": 3, "patch_size": 32, "sim": {"sigma": SIGMA},
            "split": {"val": 0, "test": ["person_b/r2"], "seed": 0}, "samples_per_epoch": 16, **extra}


def test_photo_pairs_are_rgb_in_network_range_with_the_asked_noise(photos, tmp_path):
    b = build_datasets(cfg(photos), run_dir=tmp_path, seed=0)
    assert b.split["test"] == ["person_b/r2"] and "person_b/r1" in b.split["train"]
    saved = json.loads((tmp_path / "split.json").read_text())
    assert saved["split_by"] == "file" and saved["patients"]["a1"]["part"] == "train"
    item = b.train[3]
    assert item["ld"].shape == item["nd"].shape == (3, 32, 32) and item["ld"].dtype == torch.float32
    assert float(item["nd"].min()) >= -1.0 and float(item["nd"].max()) <= 1.0
    # the clean patch is a crop of the file (up to the flip/rotation), intensities [0, 255] -> [-1, 1]
    src = np.moveaxis(np.asarray(Image.open(photos / f"{item['patient_id']}.png"), dtype=np.float32), -1, 0)
    nd = (item["nd"].numpy().astype(np.float64) + 1.0) * 127.5
    best = min(np.abs(t - src[:, y:y + 32, x:x + 32]).max()
               for t in [np.rot90(v, k, axes=(1, 2)) for v in (nd, nd[:, :, ::-1]) for k in range(4)]
               for y in range(17) for x in range(25))
    assert best < 1e-3
    # noise: std SIGMA / 127.5 in network range where the image is away from the clip limits
    diffs = []
    for i in range(16):
        it = b.train[i]
        clean, noisy = it["nd"].numpy(), it["ld"].numpy()
        mid = (clean > -0.6) & (clean < 0.6)
        diffs.append((noisy - clean)[mid])
    std = float(np.concatenate(diffs).std()) * 127.5
    assert abs(std - SIGMA) < 0.1 * SIGMA, std
    # new noise for every draw; the held-out photo is whole, with fixed noise
    assert not torch.equal(b.train[1]["ld"], b.train[2]["ld"])
    t0, t1 = b.test[0], b.test[0]
    assert t0["nd"].shape == (3, 48, 56) and torch.equal(t0["ld"], t1["ld"]) and len(b.val) == 0


def test_photo_config_and_folder_errors(photos, tmp_path):
    assert parse_data_config({"kind": "photos"}).sim == {"mode": "gaussian", "sigma": 15.0, "gain": 0.0}
    with pytest.raises(LdctError, match=r"data\.sim\.mode"):
        parse_data_config({"kind": "photos", "sim": {"mode": "projection"}})
    with pytest.raises(LdctError, match=r"data\.sim\.gain"):
        parse_data_config({"kind": "photos", "sim": {"mode": "poisson-gaussian"}})
    with pytest.raises(LdctError, match=r"data\.sim\.'i0'"):
        parse_data_config({"kind": "photos", "sim": {"i0": 1e5}})
    (tmp_path / "empty").mkdir()
    with pytest.raises(LdctError, match="no photographs"):
        build_datasets(cfg(tmp_path / "empty"), run_dir=tmp_path)
    with pytest.raises(LdctError, match="smaller than data.patch_size=64"):
        build_datasets(cfg(photos, patch_size=64), run_dir=tmp_path)


def test_pix2pix_trains_on_photos(photos, tmp_path):
    from ldct.engine.config import load_recipe
    from ldct.engine.loop import train
    from ldct.engine.state import seed_all
    from ldct.methods.base import METHODS

    torch.set_num_threads(1)
    recipe = load_recipe("pix2pix_photos", [
        "args.generator={name: unet, in_channels: 3, width: 8, depth: 2}",
        "args.discriminator={name: patchgan, channels: 8}", "data.patch_size=32", "train.batch_size=2",
        "data.samples_per_epoch=8", "train.log_every=1", "train.ckpt_every=3",
        "data.split={val: 0, test: [person_b/r2]}"])
    run = train(recipe, data=photos, out=tmp_path / "run", max_steps=3)
    seed_all(int(recipe["train"]["seed"]))  # the loop's initial weights
    method = METHODS.get("pix2pix")(**recipe["args"])
    init = {k: v.detach().clone() for k, v in method.nets["G"].state_dict().items()}
    weights = load_file(str(run / "checkpoints" / "step_0000003" / "weights.safetensors"))
    g = {k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith("G.")}
    assert set(g) == set(init)
    params = dict(method.nets["G"].named_parameters())
    changed = [k for k in params if not torch.equal(init[k], g[k])]
    assert len(changed) > len(params) // 2
    # three Adam steps (lr 2e-4) from the loop's initial weights: small moves, not a different network
    assert max(float((g[k] - init[k]).abs().max()) for k in changed) < 5e-3
    method.nets["G"].load_state_dict(g)
    method.nets["G"].eval()
    with torch.no_grad():
        out = method.nets["G"](torch.rand(2, 3, 32, 32) * 2 - 1)
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
