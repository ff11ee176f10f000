"""Self-supervised training from low-dose data alone (Neighbor2Neighbor, Noise2Noise from adjacent slices),
``data.kind: lowdose`` and ``ldct denoise --adapt``."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from helpers_pairs import copy_real_pairs, copy_slices

from ldct.cli import main
from ldct.errors import LdctError
from ldct.hu import DEFAULT_NET_WINDOW, hu_to_net
from ldct.io import read_volume
from ldct.losses.self_supervised import neighbor_pairs, subsample

SMALL_NET = {"name": "nafnet", "width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1]}


def test_neighbor_subimages_share_no_pixel():
    """Each 2x2 cell gives the two sub-images two different, edge-adjacent pixels: no pixel (and so no
    pixel's noise) is seen by both halves."""
    b, h, w = 3, 16, 12
    ids = torch.arange(b * h * w, dtype=torch.float64).reshape(b, 1, h, w)
    p1, p2 = neighbor_pairs(b, h // 2, w // 2, generator=torch.Generator().manual_seed(0))
    g1, g2 = subsample(ids, p1), subsample(ids, p2)
    assert g1.shape == g2.shape == (b, 1, h // 2, w // 2)
    a, c = g1.long().flatten(), g2.long().flatten()
    assert not set(a.tolist()) & set(c.tolist())  # disjoint
    assert len(set(a.tolist())) == a.numel()  # one pixel per cell
    ya, xa = (a % (h * w)) // w, a % w
    yc, xc = (c % (h * w)) // w, c % w
    assert torch.all((ya // 2 == yc // 2) & (xa // 2 == xc // 2))  # the same cell
    assert torch.all((ya - yc).abs() + (xa - xc).abs() == 1)  # edge neighbours
    assert torch.all(a // (h * w) == c // (h * w))  # the same image
    # every one of the 8 ordered neighbour pairs is drawn
    assert len(set(zip(p1.flatten().tolist(), p2.flatten().tolist(), strict=True))) == 8


def test_neighbor2neighbor_learns_to_denoise_from_noisy_data_alone(sample_dicom):
    """Trained only on a noisy slice (white noise, 80 HU), the network's error to the clean slice falls well
    below the input's: the objective really denoises."""
    from ldct.data.patches import body_mask, sample_crop
    from ldct.methods.self_supervised import SelfSupervised

    torch.manual_seed(0)
    clean = read_volume(sample_dicom).data[10].astype(np.float32)
    rng = np.random.default_rng(0)
    noisy = clean + rng.normal(0, 80, clean.shape).astype(np.float32)
    method = SelfSupervised(SMALL_NET, lr=1e-3)
    net = method.nets["net"]
    region = (slice(160, 352), slice(160, 352))
    x = torch.from_numpy(hu_to_net(noisy[region][None, None], DEFAULT_NET_WINDOW))
    ref = hu_to_net(clean[region], DEFAULT_NET_WINDOW)

    def error() -> float:
        with torch.no_grad():
            return float(((net(x)[0, 0].numpy() - ref) ** 2).mean())

    before = error()
    assert before == pytest.approx(float(((x[0, 0].numpy() - ref) ** 2).mean()), rel=1e-4)  # identity at start
    mask = body_mask(clean[None], -500.0)
    for step in range(60):
        crops = [sample_crop(mask, 64, rng) for _ in range(8)]
        batch = np.stack([noisy[None, c.y:c.y + 64, c.x:c.x + 64] for c in crops])
        out = method.training_step({"ld": torch.from_numpy(hu_to_net(batch, DEFAULT_NET_WINDOW))}, step)
        method.on_step_end(step, 60)
        assert np.isfinite(out["loss"]) and {"rec", "reg"} <= set(out)
    assert error() < 0.6 * before
    assert method.gamma_now == pytest.approx(2.0)  # ramped to the recipe's gamma


def test_lowdose_data_trains_on_low_dose_only_and_scores_on_pairs(shared_data, tmp_path):
    """``kind: lowdose`` on a folder of real pairs: only the quarter-dose scans train; the held-out patient's
    full dose is its validation/test reference."""
    from ldct.data.build import build_datasets

    root = copy_real_pairs(shared_data, tmp_path / "pairs")
    b = build_datasets({"root": str(root), "kind": "lowdose", "patch_size": 64,
                        "split": {"val": 0, "test": ["L286"], "seed": 0}}, run_dir=tmp_path / "run")
    assert {r.patient_id for r in b.train.records} == {"L096", "L143"}
    assert all("quarter" in r.source for r in b.train.records)
    item = b.train[0]
    assert set(item) >= {"ld", "dose"} and "nd" not in item and item["ld"].shape == (1, 64, 64)
    assert len(b.test) == 1
    ld, nd, meta = b.test.get_hu(0)
    assert meta["patient_id"] == "L286"
    qd = read_volume(root / "L286" / "quarter_3mm_sharp").data[0]
    fd = read_volume(root / "L286" / "full_3mm_sharp").data[0]
    assert np.allclose(ld[0], qd) and np.allclose(nd[0], fd)
    assert any("only to score" in w for w in b.summary["warnings"])


def test_adjacent_slices_are_the_same_crop_of_the_neighbour(shared_data, tmp_path):
    from ldct.data.build import build_datasets

    vol_dir = copy_slices(shared_data / "abdomen_dicom", tmp_path / "scan", 0, 6)
    vol = read_volume(vol_dir).data
    b = build_datasets({"root": str(vol_dir), "kind": "lowdose", "adjacent": True, "patch_size": 64,
                        "augment": False, "split": {"val": 0, "test": 0}}, run_dir=tmp_path / "run")
    for i in range(6):
        item = b.train[i]
        z = item["slice_index"]
        win = DEFAULT_NET_WINDOW
        ld = item["ld"][0].numpy()
        adj = item["ld_adj"][0].numpy()
        # find the crop in slice z, then check the target is the same crop of slice z-1 or z+1
        net_z = hu_to_net(vol[z], win)
        cands = np.argwhere(np.abs(net_z[: vol.shape[1] - 63, : vol.shape[2] - 63] - ld[0, 0]) < 1e-6)
        hits = [(y, x) for y, x in cands if np.allclose(net_z[y:y + 64, x:x + 64], ld, atol=1e-6)][:1]
        assert hits, "the input is a crop of its slice"
        y, x = hits[0]
        ks = [k for k in (z - 1, z + 1) if 0 <= k < vol.shape[0]]
        expect = np.mean([vol[k, y:y + 64, x:x + 64] for k in ks], axis=0)
        assert np.allclose(hu_to_net(expect, win), adj, atol=1e-5), "the target: the same crop of the neighbours"
    with pytest.raises(LdctError, match="adjacent"):
        build_datasets({"root": str(vol_dir), "kind": "simulated", "adjacent": True}, run_dir=None)


def test_noise2noise_recipe_trains_a_few_steps(shared_data, tmp_path):
    vol_dir = copy_slices(shared_data / "abdomen_dicom", tmp_path / "scan", 0, 4)
    run = tmp_path / "run"
    assert main(["train", "noise2noise", "--data", str(vol_dir), "-o", str(run), "--max-steps", "3",
                 "--set", "args.net={name: nafnet, width: 8, enc_blk_nums: [1], middle_blk_num: 1, "
                 "dec_blk_nums: [1]}", "--set", "train.batch_size=2", "--set", "data.patch_size=32"]) == 0
    assert (run / "checkpoints").is_dir()
    # the Neighbor2Neighbor recipe on a volume without adjacent pairs needs nothing more
    assert main(["train", "noise2noise", "--data", str(vol_dir), "-o", str(tmp_path / "bad"), "--max-steps", "1",
                 "--set", "data.adjacent=false"]) == 2



def test_adapt_lowers_the_self_supervised_loss_and_is_reproducible(sample_dicom, tmp_path):
    from ldct.denoiser import Denoiser
    from ldct.infer.adapt import adapt

    den = Denoiser.load("default")
    hu = read_volume(sample_dicom).data[8:12]
    hu = hu + np.random.default_rng(0).normal(0, 40, hu.shape).astype(np.float32)  # more noise than it knows
    before = {k: v.clone() for k, v in den.net.state_dict().items()}
    a, rep = adapt(den, hu, steps=12, seed=3, lr=2e-4, patch_size=64)
    assert rep.steps == 12 and rep.stopped_by == "steps"
    assert rep.loss_after < rep.loss_before
    assert all(torch.equal(before[k], v) for k, v in den.net.state_dict().items())  # the model given is unchanged
    assert any(not torch.equal(before[k], v) for k, v in a.net.state_dict().items())
    b, _ = adapt(den, hu, steps=12, seed=3, lr=2e-4, patch_size=64)
    x = hu[1, 128:256, 128:256]
    assert np.array_equal(a.denoise_array(x), b.denoise_array(x))  # same seed, same result
    c, rep_t = adapt(den, hu, steps=10_000, seconds=0.5, seed=3, lr=2e-4, patch_size=64)
    assert rep_t.stopped_by == "time" and rep_t.steps < 10_000


def test_denoise_adapt_leaves_the_installed_model_untouched(sample_dicom, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LDCT_MODEL_DIR", str(tmp_path / "models"))
    from ldct.denoiser import Denoiser

    weights = Denoiser.load("default").install("site")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    # a scan with near-white noise (as a sharp kernel's): the sample plus 40 HU of white noise
    hu = read_volume(sample_dicom).data[9:11]
    scan = tmp_path / "noisy.npy"
    np.save(scan, hu + np.random.default_rng(0).normal(0, 40, hu.shape).astype(np.float32))
    assert main(["denoise", str(scan), "-o", str(tmp_path / "plain.npy"), "--model", "site", "--backend", "torch"]) == 0
    capsys.readouterr()
    assert main(["denoise", str(scan), "-o", str(tmp_path / "adapted.npy"), "--model", "site", "--adapt", "4",
                 "--seed", "1"]) == 0
    assert "adapted to this scan: 4 steps" in capsys.readouterr().out
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest  # the installed model: byte-identical
    assert not np.array_equal(np.load(tmp_path / "plain.npy"), np.load(tmp_path / "adapted.npy"))
    # the sample itself (smooth kernel, correlated noise): denoised by the model as it is, with a warning
    dicom_in = copy_slices(sample_dicom, tmp_path / "scan", 9, 11)
    assert main(["denoise", str(dicom_in), "-o", str(tmp_path / "out"), "--adapt", "4"]) == 0
    assert "not adapted" in capsys.readouterr().err
    import pydicom

    assert "adapted" not in pydicom.dcmread(sorted((tmp_path / "out").iterdir())[0]).SeriesDescription
    assert main(["denoise", str(scan), "-o", str(tmp_path / "o2.npy"), "--adapt", "-3"]) == 2
    assert main(["denoise", str(scan), "-o", str(tmp_path / "o3.npy"), "--adapt", "3", "--backend", "onnxruntime"]) == 2
    assert "--adapt" in capsys.readouterr().err


def test_noise_correlation_tells_white_from_smooth_kernel_noise(sample_dicom):
    from scipy.ndimage import gaussian_filter

    from ldct.metrics import noise_correlation

    rng = np.random.default_rng(0)
    flat = np.zeros((2, 160, 160), np.float32) + 40.0  # flat soft tissue
    roi = np.ones(flat.shape, bool)
    white = flat + rng.normal(0, 30, flat.shape)
    assert abs(noise_correlation(white, roi)) < 0.05
    smooth = flat + gaussian_filter(rng.normal(0, 60, flat.shape), (0, 1.0, 1.0))
    assert noise_correlation(smooth, roi) > 0.5  # Gaussian-filtered: exp(-1/4) = 0.78 before the high-pass


def test_adapt_declines_a_scan_with_correlated_noise(sample_dicom):
    from scipy.ndimage import gaussian_filter

    from ldct.denoiser import Denoiser
    from ldct.infer.adapt import adapt

    den = Denoiser.load("default")
    hu = read_volume(sample_dicom).data[8:10]
    noise = gaussian_filter(np.random.default_rng(0).normal(0, 80, hu.shape), (0, 1.2, 1.2)).astype(np.float32)
    same, rep = adapt(den, hu + noise, steps=5)
    assert same is den and rep.skipped and rep.steps == 0 and rep.noise_correlation > 0.25
    assert "correlated" in rep.describe()
