"""The CNN denoisers: any H, W and 1/3 channels, published sizes, NAFNet identity init, reusable halves,
and a few optimisation steps on real CT reduce the loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ldct.models  # noqa: F401  (registers the networks)
from ldct.errors import LdctError
from ldct.hu import hu_to_net
from ldct.models.nafnet import NAFBlock, NAFNet
from ldct.models.registry import NETWORKS

# reduced widths so the tests stay fast; the published sizes are the constructor defaults
SMALL = {
    "redcnn": {"channels": 8},
    "unet": {"width": 8, "depth": 3},
    "resnet": {"width": 8, "num_blocks": 2},
    "autoencoder": {"channels": (8, 8, 16, 16, 16)},
    "nafnet": {"width": 8, "enc_blk_nums": (1, 1, 1), "middle_blk_num": 1, "dec_blk_nums": (1, 1, 1)},
    "dncnn": {"depth": 5, "width": 8},
}
OURS = sorted(SMALL)


def mayo_hu(shared_data: Path, name: str = "L067_FD_3mm_smooth_0070.raw") -> np.ndarray:
    raw = np.fromfile(shared_data / "mayo_L067_fd_raw" / name, dtype="<u2").reshape(512, 512)
    return raw.astype(np.float32) - 1024.0


def test_all_networks_registered():
    assert set(OURS) <= set(NETWORKS.names())
    with pytest.raises(LdctError, match="unknown network 'nafnett'.*nafnet"):
        NETWORKS.get("nafnett")


@pytest.mark.parametrize("name", OURS)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("hw", [(37, 45), (9, 14)])
def test_any_size_and_channels(name, channels, hw):
    torch.manual_seed(0)
    net = NETWORKS.build(name, in_channels=channels, **SMALL[name]).eval()
    x = torch.rand(2, channels, *hw) * 2 - 1
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    # not a pass-through (NAFNet is the identity only at initialisation, see below)
    if name != "nafnet":
        assert (y - x).abs().max() > 1e-4


def test_published_sizes():
    red = NETWORKS.build("redcnn")
    convs = [m for m in red.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convs) == 10 and all(m.kernel_size == (5, 5) for m in convs)
    assert (
        sum(p.numel() for p in red.parameters()) == 1 * 96 * 25 + 96 + 8 * (96 * 96 * 25 + 96) + 96 * 25 + 1
    )
    dn = NETWORKS.build("dncnn")
    assert sum(isinstance(m, torch.nn.Conv2d) for m in dn.modules()) == 17
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in dn.modules()) == 15
    ae = NETWORKS.build("autoencoder")
    assert ae.encoder_channels == [64, 128, 256, 512, 512] and ae.size_multiple == 16
    assert ae.out_conv.in_channels == 64 and ae.out_conv.out_channels == 1
    naf = NETWORKS.build("nafnet")  # SIDD NAFNet-width32: ~29.1 M parameters
    assert 29.0e6 < sum(p.numel() for p in naf.parameters()) < 29.3e6
    unet = NETWORKS.build("unet")  # Ronneberger U-Net: ~31 M parameters
    assert unet.encoder_channels == [64, 128, 256, 512, 1024]


def test_nafnet_fresh_is_identity_and_blocks_start_at_zero():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 29, 35) * 2 - 1
    net = NAFNet(**SMALL["nafnet"])
    blocks = [m for m in net.modules() if isinstance(m, NAFBlock)]
    assert blocks and all((b.beta == 0).all() and (b.gamma == 0).all() for b in blocks)
    with torch.no_grad():
        assert torch.allclose(net(x), x, atol=1e-6)
        feats = torch.randn(2, 8, 16, 16)
        assert torch.equal(blocks[0](feats), feats)
    # without identity_init only the ending conv differs: blocks are still the identity
    net2 = NAFNet(identity_init=False, **SMALL["nafnet"])
    with torch.no_grad():
        assert (net2(x) - x).abs().max() > 1e-3
    # one training step moves the residual scales off zero
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.l1_loss(net(x), torch.zeros_like(x)).backward()
        opt.step()
    assert any((b.beta != 0).any() for b in blocks)


@pytest.mark.parametrize("name", ["unet", "nafnet", "resnet"])
def test_encode_decode_halves(name):
    torch.manual_seed(0)
    net = NETWORKS.build(name, **SMALL[name]).eval()
    if name == "nafnet":
        for m in net.modules():
            if isinstance(m, NAFBlock):  # make the blocks non-trivial
                torch.nn.init.normal_(m.beta, std=0.1)
                torch.nn.init.normal_(m.gamma, std=0.1)
        torch.nn.init.normal_(net.ending.weight, std=0.1)
    x = torch.rand(1, 1, 32, 40) * 2 - 1
    with torch.no_grad():
        latent, skips = net.encode(x)
        assert torch.allclose(net.decode(latent, skips) + x, net(x), atol=1e-5)
        assert latent.shape[1] == net.encoder_channels[-1]
        # the per-stage modulation hook: zeros change nothing, a shift changes the output
        n = len(net.encoder_channels)
        zeros = [(torch.zeros(1, c, 1, 1), torch.zeros(1, c, 1, 1)) for c in net.encoder_channels]
        assert torch.allclose(net.decode(*net.encode(x, zeros)), net.decode(latent, skips), atol=1e-6)
        shifted = [None] * (n - 1) + [
            (torch.zeros(1, latent.shape[1], 1, 1), torch.ones(1, latent.shape[1], 1, 1))
        ]
        assert not torch.allclose(net.decode(*net.encode(x, shifted)), net.decode(latent, skips), atol=1e-4)
    if net.size_multiple > 1:
        with pytest.raises(ValueError, match="divisible"):
            net.encode(torch.zeros(1, 1, 30, 40))


def test_autoencoder_halves():
    net = NETWORKS.build("autoencoder", **SMALL["autoencoder"]).eval()
    x = torch.rand(2, 1, 48, 64) * 2 - 1
    with torch.no_grad():
        z = net.encode(x)
        assert z.shape == (2, 16, 3, 4)
        y = net.decode(z)
        assert y.shape == x.shape and y.abs().max() <= 1.0  # tanh output
        assert torch.equal(y, net(x))
    with pytest.raises(ValueError, match="divisible"):
        net.encode(torch.zeros(1, 1, 40, 40))


def test_global_residual_needs_matching_channels():
    with pytest.raises(ValueError, match="out_channels"):
        NETWORKS.build("unet", in_channels=1, out_channels=3)
    net = NETWORKS.build("unet", in_channels=1, out_channels=3, residual=False, width=4, depth=2)
    assert net(torch.zeros(1, 1, 20, 20)).shape == (1, 3, 20, 20)


@pytest.mark.parametrize("name", OURS)
def test_few_steps_on_real_ct_reduce_the_loss(shared_data, name):
    """Denoise a real 48x48 abdomen crop with 40 HU white noise: 15 Adam steps lower the L1 loss.

    For NAFNet, which starts as the identity, this means its output is already closer to the clean crop
    than the noisy input is."""
    hu = mayo_hu(shared_data)[240:288, 200:248]
    rng = np.random.default_rng(0)
    noisy = hu + rng.normal(0.0, 40.0, (4, *hu.shape)).astype(np.float32)
    x = torch.from_numpy(hu_to_net(noisy))[:, None]
    t = torch.from_numpy(hu_to_net(hu))[None, None].expand_as(x)
    torch.manual_seed(0)
    net = NETWORKS.build(name, **SMALL[name])
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.l1_loss(net(x), t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert min(losses[-3:]) < 0.95 * losses[0], losses


def test_nafnet_layernorm_normalises_channels_per_pixel():
    from ldct.models.nafnet import LayerNorm2d

    torch.manual_seed(0)
    ln = LayerNorm2d(6)
    torch.nn.init.normal_(ln.weight)
    torch.nn.init.normal_(ln.bias)
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    mu = x.mean(1, keepdim=True)
    var = x.var(1, keepdim=True, unbiased=False)
    ref = (x - mu) / torch.sqrt(var + 1e-6) * ln.weight.view(1, -1, 1, 1) + ln.bias.view(1, -1, 1, 1)
    assert torch.allclose(ln(x), ref, atol=1e-5)
