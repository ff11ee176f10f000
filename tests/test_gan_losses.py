"""Adversarial losses, the gradient penalty, the image pool and the feature loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers_gan import (
    ct_batch,
    one_thread,  # noqa: F401  (fixture)
)
from torch import nn

from ldct.errors import LdctError
from ldct.losses.adversarial import GANLoss, ImagePool, gradient_penalty

pytestmark = pytest.mark.usefixtures("one_thread")


def linear_critic(w: torch.Tensor) -> nn.Module:
    """D(x) = <w, x> + 0.3 for x of shape (B, *w.shape)."""
    lin = nn.Linear(w.numel(), 1)
    with torch.no_grad():
        lin.weight.copy_(w.reshape(1, -1))
        lin.bias.fill_(0.3)
    return nn.Sequential(nn.Flatten(), lin)


@pytest.mark.parametrize("norm", [0.5, 1.0, 3.0])
def test_gradient_penalty_equals_analytic_value_for_linear_critic(shared_data, norm):
    batch = ct_batch(shared_data, size=16)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(1, 16, 16, generator=g)
    w *= norm / w.norm()
    critic = linear_critic(w)
    gp = gradient_penalty(critic, batch["nd"], batch["ld"], weight=10.0)
    # grad_x D = w everywhere, so the penalty is 10 (||w|| - 1)^2 whatever the interpolates
    assert gp.item() == pytest.approx(10.0 * (norm - 1.0) ** 2, abs=1e-4)
    # and it back-propagates into the critic: d/dw 10 (||w|| - 1)^2 = 20 (||w|| - 1) w / ||w||
    gp.backward()
    grad_w = critic[1].weight.grad.reshape(w.shape)
    expected = 20.0 * (norm - 1.0) * w / norm
    assert torch.allclose(grad_w, expected, atol=1e-4)


def test_gradient_penalty_uses_points_between_real_and_fake():
    """For D(x) = ||x||^2 / 2 the gradient at x_hat is x_hat; with real = a*1 and fake = b*1 (N pixels)
    its norm is |eps a + (1 - eps) b| sqrt(N), so the penalty lies within the range over eps in [0, 1]."""

    class Quadratic(nn.Module):
        def forward(self, x):
            return 0.5 * (x**2).flatten(1).sum(1)

    n = 8 * 8
    real = torch.full((64, 1, 8, 8), 0.5)
    fake = torch.full((64, 1, 8, 8), 0.05)
    torch.manual_seed(0)
    gp = gradient_penalty(Quadratic(), real, fake, weight=1.0).item()
    ends = [(v * math.sqrt(n) - 1.0) ** 2 for v in (0.05, 0.5)]  # norms 0.4 and 4.0
    assert 0.0 <= gp <= max(ends)
    # the average over uniform eps of ((0.05 + 0.45 eps) * 8 - 1)^2 = integral / 1
    mean_value = sum(((0.05 + 0.45 * (k + 0.5) / 1000) * 8 - 1) ** 2 for k in range(1000)) / 1000
    assert gp == pytest.approx(mean_value, rel=0.25)


def test_gan_losses_match_their_definitions():
    scores = torch.tensor([[2.0], [-1.0], [0.5]])
    assert GANLoss("vanilla")(scores, True).item() == pytest.approx(
        F.binary_cross_entropy(torch.sigmoid(scores), torch.ones_like(scores)).item(), rel=1e-6
    )
    assert GANLoss("vanilla")(scores, False).item() == pytest.approx(
        -torch.log(1 - torch.sigmoid(scores)).mean().item(), rel=1e-6
    )
    assert GANLoss("lsgan")(scores, True).item() == pytest.approx(((scores - 1) ** 2).mean().item())
    assert GANLoss("lsgan")(scores, False).item() == pytest.approx((scores**2).mean().item())
    assert GANLoss("wgan")(scores, True).item() == pytest.approx(-scores.mean().item())
    assert GANLoss("wgan")(scores, False).item() == pytest.approx(scores.mean().item())
    assert GANLoss("vanilla").readout(torch.zeros(4, 1)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="lsgan"):
        GANLoss("hinge")


def test_image_pool_fills_then_mixes_and_round_trips():
    torch.manual_seed(0)
    pool = ImagePool(size=4)
    first = torch.arange(4.0).reshape(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: the new fakes themselves
    assert len(pool.images) == 4
    mixed_any = False
    for k in range(1, 6):
        new = (10.0 * k + torch.arange(4.0)).reshape(4, 1, 1, 1)
        stored_before = {float(im) for im in pool.images}
        out = pool.query(new)
        assert out.shape == new.shape
        for o, n in zip(out.flatten().tolist(), new.flatten().tolist(), strict=True):
            # the new image, or one seen before (the pool updates image by image, as in the reference code)
            assert o == n or o in stored_before or o in new.flatten().tolist()
            mixed_any |= o != n
        assert len(pool.images) == 4
    assert mixed_any
    state = pool.state_dict()
    restored = ImagePool(size=4)
    restored.load_state_dict(state)
    rng = torch.get_rng_state()
    a = pool.query(torch.full((4, 1, 1, 1), 99.0))
    torch.set_rng_state(rng)
    b = restored.query(torch.full((4, 1, 1, 1), 99.0))
    assert torch.equal(a, b)


def test_image_pool_size_zero_passes_through():
    x = torch.randn(3, 1, 4, 4)
    assert torch.equal(ImagePool(0).query(x), x)


# ---- feature loss ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory):
    """A (small, untrained) autoencoder saved the way ldct saves checkpoints."""
    from ldct.engine.checkpoint import make_meta
    from ldct.methods.supervised import Supervised
    from ldct.models.files import save_weights

    torch.manual_seed(0)
    method = Supervised(net={"name": "autoencoder", "channels": [4, 8, 8]}, loss="l1")
    recipe = {
        "method": "supervised",
        "args": {"net": {"name": "autoencoder", "channels": [4, 8, 8]}},
        "data": {},
    }
    path = tmp_path_factory.mktemp("teacher") / "weights.safetensors"
    save_weights(path, method.weights(), make_meta(method, recipe, step=0))
    return path, method.nets["net"]


def test_feature_loss_uses_the_encoder_of_an_ldct_checkpoint(shared_data, teacher_checkpoint):
    from ldct.losses.feature import FeatureLoss

    path, net = teacher_checkpoint
    loss = FeatureLoss(weights=str(path))
    batch = ct_batch(shared_data)
    net.eval()
    with torch.no_grad():
        assert torch.equal(loss.features(batch["nd"])[0], net.encode(batch["nd"]))
    assert loss(batch["nd"], batch["nd"]).item() == 0.0
    pred = batch["ld"].clone().requires_grad_(True)
    value = loss(pred, batch["nd"])
    value.backward()
    assert value.item() > 0 and pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.network.parameters())


def test_feature_loss_layers_by_name(shared_data, teacher_checkpoint):
    from ldct.losses.feature import FeatureLoss

    path, net = teacher_checkpoint
    loss = FeatureLoss(weights=str(path), layers=["encoder.0", "encoder.1"], criterion="l1")
    x = ct_batch(shared_data)["ld"]
    feats = loss.features(x)
    net.eval()
    with torch.no_grad():
        e0 = net.encoder[0](x)
        e1 = net.encoder[1](net.pool(e0))
    assert torch.allclose(feats[0], e0) and torch.allclose(feats[1], e1)
    with pytest.raises(LdctError, match="encoder.9"):
        FeatureLoss(weights=str(path), layers=["encoder.9"])


def test_feature_loss_bad_files(tmp_path):
    from ldct.losses.feature import FeatureLoss

    with pytest.raises(LdctError, match="not found"):
        FeatureLoss(weights=str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"\x80\x04junk")
    with pytest.raises(LdctError, match="is a pickle/PyTorch archive; ldct never unpickles"):
        FeatureLoss(weights=str(bad))


def test_wgan_gp_feature_loss_from_checkpoint(shared_data, teacher_checkpoint):
    """The optional perceptual term: built when training starts (a missing file fails at setup, not when
    a checkpoint is rebuilt for evaluate/denoise), logged as g_feature and part of the generator loss."""
    from lightning.fabric import Fabric

    from ldct.engine.config import validate_method_args
    from ldct.methods.wgan_gp import WGANGP

    path, _ = teacher_checkpoint
    tiny = {
        "generator": {"name": "wgan_generator", "channels": 8, "depth": 3, "residual": True},
        "critic": {"name": "wgan_critic", "channels": 8, "hidden": 16},
        "n_critic": 1,
    }
    args = validate_method_args(
        "wgan_gp", {**tiny, "feature_loss": {"name": "feature", "weights": str(path)}}
    )
    method = WGANGP(**args)
    method.setup(Fabric(accelerator="cpu", devices=1))
    logs = method.training_step(ct_batch(shared_data), 0)
    assert logs["g_feature"] > 0
    expected = 1e-3 * logs["g_adv"] + logs["g_content"] + 0.1 * logs["g_feature"]
    assert logs["loss_g"] == pytest.approx(expected, rel=1e-5)

    missing = WGANGP(**{**args, "feature_loss": {"name": "feature", "weights": "/nonexistent/teacher"}})
    assert missing.inference_net == "G"  # rebuilding (evaluate/denoise) does not read the file
    with pytest.raises(LdctError, match="not found"):
        missing.setup(Fabric(accelerator="cpu", devices=1))
