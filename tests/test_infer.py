"""Inference: tiled == whole-slice, HU outside the network window preserved, streaming, bad arguments."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from helpers_denoise import correlated_noise, mayo_slice, trained_model

from ldct import Denoiser
from ldct.errors import LdctError
from ldct.hu import DEFAULT_NET_WINDOW, Window, hu_to_net, net_to_hu
from ldct.models.specs import build_network
from ldct.tiling import edge_weights, margin_of, tile_starts, tiled_forward


@pytest.fixture(scope="module")
def model(shared_data, tmp_path_factory):
    return Denoiser.load(str(trained_model(shared_data, tmp_path_factory.getbasetemp())))


@pytest.fixture(scope="module")
def noisy_crop(shared_data) -> tuple[np.ndarray, np.ndarray]:
    """Two real Mayo slices (one with dense bone up to ~1650 HU), cropped to 232 x 280, plus a noisy copy."""
    nd = np.stack([mayo_slice(shared_data, n)[140:372, 200:480] for n in
                   ("L067_FD_3mm_sharp_000217.raw", "L067_FD_3mm_smooth_0190.raw")])
    ld = nd + correlated_noise(nd.shape, 40.0, np.random.default_rng(3))
    return nd, ld


def test_tile_layout_and_weights_partition_unity():
    for size, tile, overlap in [(512, 128, 32), (300, 96, 40), (97, 64, 20), (50, 64, 16)]:
        starts = tile_starts(size, tile, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + tile] = True
        assert covered.all() and starts[0] == 0 and min(size, starts[-1] + tile) == size
        assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))
    # blending an identity "network" returns the input exactly (weights normalised, positive everywhere)
    x = torch.randn(2, 1, 150, 203)
    y = tiled_forward(lambda t: t.clone(), x, tile=64, overlap=24)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-6)
    w = edge_weights(64, 24, True, True)
    m = margin_of(24)
    assert float(w[:m].max()) == 0.0 and float(w[-m:].max()) == 0.0 and float(w[32]) == 1.0
    assert torch.all(torch.diff(w[: 64 // 2]) >= 0)  # smooth monotone ramp, no step back


def test_tiled_equals_whole_slice_redcnn(noisy_crop):
    """RED-CNN (receptive-field radius 20 px): with overlap 56 (zero-weight margin 21 px) tiles reproduce
    the whole-slice output; with a small overlap they do not (so the test can fail)."""
    torch.manual_seed(0)
    net = build_network({"name": "redcnn", "channels": 4})
    ld = noisy_crop[1][:1, :176, :200]
    den = Denoiser(net, window=DEFAULT_NET_WINDOW)
    whole = den.denoise_array(ld, batch_size=2)
    tiled = den.denoise_array(ld, batch_size=2, tile=120, overlap=56)
    assert margin_of(56) >= 20
    np.testing.assert_allclose(tiled, whole, atol=0.02)  # HU; float32 rounding only
    seams = den.denoise_array(ld, batch_size=2, tile=120, overlap=8)
    assert np.abs(seams - whole).max() > 0.5


def test_tiled_equals_whole_slice_trained_model(model, noisy_crop):
    _, ld = noisy_crop
    whole = model.denoise_array(ld)
    tiled = model.denoise_array(ld, tile=64, overlap=24)
    np.testing.assert_allclose(tiled, whole, atol=0.02)


def test_hu_outside_the_window_is_preserved(model, noisy_crop):
    """Bone above the network window's top and a 3000 HU metal insert keep their HU; the naive
    net_to_hu(f(clip(x))) output would cap them at ~1000 HU."""
    nd, ld = noisy_crop
    ld = ld.copy()
    yy, xx = np.mgrid[: ld.shape[1], : ld.shape[2]]
    metal = (yy - 116) ** 2 + (xx - 140) ** 2 <= 6**2
    ld[1][metal] = 3000.0
    out = model.denoise_array(ld)
    bone = (nd[0] > 1150) & (ld[0] > 1150)
    assert bone.sum() > 100
    assert abs(float(out[0][bone].mean() - nd[0][bone].mean())) < 40.0
    assert out[0][bone].min() > 1000.0
    core = (yy - 116) ** 2 + (xx - 140) ** 2 <= 3**2
    assert np.all(np.abs(out[1][core] - 3000.0) < 60.0)
    with torch.no_grad():
        naive = net_to_hu(model.net(hu_to_net(torch.from_numpy(ld[1:2, None]), model.window)), model.window)
    assert float(naive[0, 0][torch.from_numpy(core)].max()) < 1100.0
    # inside the window the output is exactly the network's (the correction adds nothing there)
    inside = torch.from_numpy((ld[1] > -990) & (ld[1] < 990))
    np.testing.assert_allclose(out[1][inside.numpy()], naive[0, 0][inside].numpy(), atol=0.02)


def test_narrow_window_model_keeps_everything_outside_its_window(noisy_crop):
    """A soft-tissue-window network: fat, air and bone (outside [-160, 240]) pass through unchanged
    apart from the network's correction at the clipped value."""
    torch.manual_seed(1)
    net = build_network({"name": "dncnn", "depth": 3, "width": 8, "batch_norm": False})
    win = Window(-160.0, 240.0, "net")
    _, ld = noisy_crop
    out = Denoiser(net, window=win).denoise_array(ld)
    with torch.no_grad():
        pred = net_to_hu(net(hu_to_net(torch.from_numpy(ld[:, None]), win)), win)[:, 0].numpy()
    np.testing.assert_allclose(out, ld + (pred - np.clip(ld, win.lo, win.hi)), atol=0.02)
    assert out.min() < -900 and out.max() > 1000  # air and bone survive a [-160, 240] HU network


def test_streaming_batches_and_memmap(model, noisy_crop, tmp_path):
    _, ld = noisy_crop
    vol = np.concatenate([ld, ld[::-1]])  # 4 slices
    path = tmp_path / "vol.npy"
    np.save(path, vol)
    mm = np.load(path, mmap_mode="r")
    starts = [(s, b.shape) for s, b in model.iter_slices(mm, batch_size=3)]
    assert starts == [(0, (3,) + vol.shape[1:]), (3, (1,) + vol.shape[1:])]
    calls = []
    a = model.denoise_array(mm, batch_size=3, progress=lambda d, t: calls.append((d, t)))
    b = model.denoise_array(vol, batch_size=1)
    assert calls == [(3, 4), (4, 4)]
    np.testing.assert_allclose(a, b, atol=1e-3)
    np.testing.assert_array_equal(np.load(path), vol)  # input untouched
    single = model.denoise_array(vol[1])
    assert single.shape == vol.shape[1:]
    np.testing.assert_allclose(single, b[1], atol=1e-3)


def test_neighbouring_slices_as_channels(noisy_crop):
    """A 2.5D network (3 input channels = slices k-1, k, k+1; the ends repeat the edge slice)."""
    torch.manual_seed(0)
    net = build_network({"name": "dncnn", "in_channels": 3, "depth": 3, "width": 8, "batch_norm": False})
    _, ld = noisy_crop
    vol = np.stack([ld[0], ld[1], ld[0][::-1].copy()])[:, :64, :96]
    out = Denoiser(net, window=DEFAULT_NET_WINDOW, channels=3).denoise_array(vol, batch_size=2)
    for k, idx in enumerate(([0, 0, 1], [0, 1, 2], [1, 2, 2])):
        with torch.no_grad():
            y = net(hu_to_net(torch.from_numpy(vol[idx][None]), DEFAULT_NET_WINDOW))[0, 1]
        excess = vol[k] - np.clip(vol[k], -1000, 1000)  # bone above the window, added back
        np.testing.assert_allclose(out[k], net_to_hu(y, DEFAULT_NET_WINDOW).numpy() + excess, atol=0.02)


def test_super_resolution_scale(noisy_crop):
    torch.manual_seed(0)
    net = build_network({"name": "srresnet", "scale": 2, "num_blocks": 1, "channels": 8, "residual": True})
    _, ld = noisy_crop
    ld = ld[:, :64, :80].copy()
    ld[0, 10:14, 10:14] = 2500.0
    out = Denoiser(net, window=DEFAULT_NET_WINDOW, scale=2).denoise_array(ld)
    assert out.shape == (2, 128, 160) and np.isfinite(out).all()
    assert out[0, 22:26, 22:26].min() > 2000.0  # excess above the window upsampled and added back


def test_bad_arguments(model):
    x = np.zeros((1, 64, 64), np.float32)
    with pytest.raises(LdctError, match="batch-size"):
        model.denoise_array(x, batch_size=0)
    with pytest.raises(LdctError, match="overlap"):
        model.denoise_array(x, tile=64, overlap=40)
    with pytest.raises(LdctError, match="precision"):
        model.denoise_array(x, precision="8")
    bad = x.copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(LdctError, match="NaN"):
        model.denoise_array(bad)
    if not torch.cuda.is_available():
        with pytest.raises(LdctError, match="no CUDA"):
            model.denoise_array(x, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_mixed_precision_on_gpu(model, noisy_crop, precision):
    _, ld = noisy_crop
    ref = model.denoise_array(ld, device="cpu")
    out = model.denoise_array(ld, device="cuda", precision=precision)
    assert np.abs(out - ref).mean() < 3.0  # HU
