"""The GAN networks: shapes for any input size, the SR factor, the PatchGAN receptive field."""

from __future__ import annotations

import pytest
import torch
from helpers_gan import (
    ct_batch,
    one_thread,  # noqa: F401  (fixture)
)

import ldct.models  # noqa: F401  (registers the networks)
from ldct.models.registry import NETWORKS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("scale", [4, 2])
def test_srresnet_output_is_scale_times_input(shared_data, scale):
    net = NETWORKS.build("srresnet", channels=8, num_blocks=2, scale=scale)
    x = ct_batch(shared_data, size=64)["ld"][:, :, :13, :17]  # odd sizes
    assert net(x).shape == (4, 1, 13 * scale, 17 * scale)
    assert NETWORKS.build("srresnet", channels=8, num_blocks=1, scale=scale, in_channels=3)(
        torch.randn(1, 3, 8, 8)
    ).shape == (1, 3, 8 * scale, 8 * scale)


def test_srresnet_published_size_and_residual_mode(shared_data):
    full = NETWORKS.build("srresnet")
    assert len(full.blocks) == 16 and len(full.upsample) == 2  # 16 residual blocks, two x2 pixel shuffles
    net = NETWORKS.build("srresnet", channels=8, num_blocks=2, scale=4, residual=True)
    x = ct_batch(shared_data, size=64)["ld"][:, :, :16, :16]
    bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic")
    assert torch.allclose(net(x), bicubic)  # untrained (zero last layer): exactly the bicubic upsampling
    with pytest.raises(ValueError, match="scale"):
        NETWORKS.build("srresnet", scale=3)


def test_wgan_generator_keeps_size_and_has_eight_layers(shared_data):
    net = NETWORKS.build("wgan_generator")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and all(c.kernel_size == (3, 3) for c in convs)
    assert [c.out_channels for c in convs] == [32] * 7 + [1]
    x = ct_batch(shared_data, size=64)["ld"][:, :, :37, :50]
    assert net(x).shape == x.shape
    residual = NETWORKS.build("wgan_generator", residual=True)
    assert torch.equal(residual(x), x)  # untrained residual net: the identity


@pytest.mark.parametrize("name", ["wgan_critic", "srgan_discriminator"])
@pytest.mark.parametrize("size", [(32, 32), (64, 64), (48, 80)])
def test_critics_take_any_patch_size(name, size):
    net = NETWORKS.build(name, channels=8, hidden=32)
    assert net(torch.randn(3, 1, *size)).shape == (3, 1)


def test_wgan_critic_has_no_normalisation():
    net = NETWORKS.build("wgan_critic")
    norms = (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d, torch.nn.LayerNorm, torch.nn.GroupNorm)
    assert not any(isinstance(m, norms) for m in net.modules())
    assert isinstance(list(net.modules())[-1], torch.nn.Linear)  # linear output


def test_patchgan_receptive_field_is_70():
    net = NETWORKS.build("patchgan", in_channels=2, norm="none")
    x = torch.randn(1, 2, 140, 140, requires_grad=True)
    out = net(x)
    assert out.shape == (1, 1, 15, 15)
    out[0, 0, 7, 7].backward()
    rows = torch.nonzero(x.grad[0].abs().sum(0).sum(1)).flatten()
    cols = torch.nonzero(x.grad[0].abs().sum(0).sum(0)).flatten()
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70
    for norm in ("batch", "instance"):
        assert NETWORKS.build("patchgan", in_channels=6, norm=norm, channels=8)(
            torch.randn(2, 6, 64, 64)
        ).shape == (2, 1, 6, 6)
