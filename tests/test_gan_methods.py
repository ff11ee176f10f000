"""Two-step smoke tests of the four GAN methods on real CT crops (and a photograph for pix2pix):
in each phase only the intended networks change, fakes are detached for the discriminator, the
discriminator is frozen during the generator step, and each optimizer is zeroed and stepped on its own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_gan import (
    Recorder,
    ct_batch,
    one_thread,  # noqa: F401  (fixture)
    photo_batch,
    same,
)
from lightning.fabric import Fabric

from ldct.errors import LdctError
from ldct.methods.base import METHODS

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "wgan_gp": {
        "generator": {"name": "wgan_generator", "channels": 8, "depth": 4, "residual": True},
        "critic": {"name": "wgan_critic", "channels": 8, "hidden": 32},
        "n_critic": 3,
    },
    "srgan": {
        "generator": {"name": "srresnet", "channels": 8, "num_blocks": 2, "residual": True},
        "discriminator": {"name": "srgan_discriminator", "channels": 8, "hidden": 32},
        "scale": 4,
    },
    "pix2pix": {
        "generator": {"name": "unet", "width": 8, "depth": 2},
        "discriminator": {"name": "patchgan", "channels": 8},
    },
    "cyclegan": {
        "generator": {"name": "resnet", "width": 8, "num_blocks": 2},
        "discriminator": {"name": "patchgan", "channels": 8, "norm": "instance"},
        "pool_size": 4,
    },
}


def make(name: str, **over):
    torch.manual_seed(0)
    method = METHODS.get(name)(**{**TINY[name], **over})
    method.setup(Fabric(accelerator="cpu", devices=1, precision="32-true"))
    method.train(True)
    return method


def sr_batch(batch: dict[str, torch.Tensor], scale: int) -> dict[str, torch.Tensor]:
    """Low-dose input downsampled by area averaging (what data.downsample does), normal dose at full size."""
    return {**batch, "ld": F.avg_pool2d(batch["ld"], scale)}


def check_gan_phases(
    rec: Recorder, g_names: list[str], d_names: list[str], steps_per_call: list[str], calls: int
):
    """Order of optimizer events, own-network-only updates, detached fakes and a frozen D."""
    net_of = {n: n for n in g_names + d_names}
    assert rec.step_names() == steps_per_call * calls
    # every step has its own zero_grad since the previous step of that optimizer (no accumulation)
    for i, (kind, name) in enumerate(rec.events):
        if kind == "step":
            zeros_before = [e for e in rec.events[:i] if e == ("zero", name)]
            steps_before = [e for e in rec.events[:i] if e == ("step", name)]
            assert len(zeros_before) == len(steps_before) + 1, f"{name} stepped without its own zero_grad"
    rec.check_each_step_changes_only_its_net(net_of)
    rec.check_nothing_changes_between_steps()
    for i, s in enumerate(rec.steps):
        before = s["before"]["grads"]
        if s["name"] in d_names:
            # the discriminator loss sent no gradient into the generators (fakes detached)
            prev_g = [t for t in rec.steps[:i] if t["name"] in g_names]
            for g in g_names:
                ref = prev_g[-1]["after"]["grads"][g] if prev_g else [None] * len(before[g])
                assert same(before[g], ref), f"the {s['name']} loss produced gradients in {g}"
            assert all(x is not None for x in before[s["name"]])
        else:
            # the generator loss sent no gradient into the (frozen) discriminators
            prev_d = [t for t in rec.steps[:i] if t["name"] in d_names]
            for d in d_names:
                ref = prev_d[-1]["after"]["grads"][d] if prev_d else [None] * len(before[d])
                assert same(before[d], ref), f"the generator loss produced gradients in {d}"
            assert all(x is not None for x in before[s["name"]])


def check_logs(logs: dict[str, float], keys: tuple[str, ...]):
    assert set(keys) <= set(logs), f"missing logs: {set(keys) - set(logs)}"
    assert all(isinstance(v, float) and math.isfinite(v) for v in logs.values())
    assert logs["loss"] == logs["loss_g"]


def test_wgan_gp_two_steps(shared_data):
    method = make("wgan_gp")
    rec = Recorder(method)
    batch = ct_batch(shared_data)
    logs = [method.training_step(batch, step) for step in range(2)]
    check_gan_phases(rec, ["G"], ["D"], ["D"] * 3 + ["G"], calls=2)
    for lg in logs:
        check_logs(lg, ("wasserstein", "gp", "loss_d", "g_adv", "g_content", "d_real", "d_fake"))
        assert lg["wasserstein"] == pytest.approx(lg["d_real"] - lg["d_fake"], abs=1e-5)
        assert lg["loss_d"] == pytest.approx(-lg["wasserstein"] + lg["gp"], abs=1e-5)
    assert all(p.requires_grad for p in method.nets["D"].parameters())  # unfrozen after the G step
    assert method.inference_net == "G" and method.scale == 1
    out = method.denoiser().forward(batch["ld"])
    assert out.shape == batch["nd"].shape


@pytest.mark.parametrize("scale", [4, 2])
def test_srgan_two_steps(shared_data, scale):
    method = make("srgan", scale=scale)
    assert method.scale == scale
    rec = Recorder(method)
    batch = sr_batch(ct_batch(shared_data), scale)
    assert batch["ld"].shape[-1] * scale == batch["nd"].shape[-1]
    logs = [method.training_step(batch, step) for step in range(2)]
    check_gan_phases(rec, ["G"], ["D"], ["D", "G"], calls=2)
    for lg in logs:
        check_logs(lg, ("g_content", "g_adv", "loss_d", "d_real", "d_fake"))
        assert 0.0 < lg["d_real"] < 1.0 and 0.0 < lg["d_fake"] < 1.0  # probabilities (vanilla GAN)
        assert lg["loss_g"] == pytest.approx(lg["g_content"] + 1e-3 * lg["g_adv"], rel=1e-5)
    assert method.denoiser().forward(batch["ld"]).shape == batch["nd"].shape


def test_srgan_pretraining_leaves_d_alone(shared_data):
    method = make("srgan", pretrain_steps=1)
    rec = Recorder(method)
    batch = sr_batch(ct_batch(shared_data), 4)
    method.training_step(batch, 0)
    assert rec.step_names() == ["G"]
    method.training_step(batch, 1)
    assert rec.step_names() == ["G", "D", "G"]


def test_srgan_scale_mismatch_is_a_clear_error(shared_data):
    method = make("srgan", scale=4)
    batch = sr_batch(ct_batch(shared_data), 2)
    with pytest.raises(LdctError, match="downsample"):
        method.training_step(batch, 0)


def test_pix2pix_two_steps_ct(shared_data):
    method = make("pix2pix")
    assert next(method.nets["D"].parameters()).shape[1] == 2  # sees input and output concatenated
    rec = Recorder(method)
    batch = ct_batch(shared_data)
    logs = [method.training_step(batch, step) for step in range(2)]
    check_gan_phases(rec, ["G"], ["D"], ["D", "G"], calls=2)
    for lg in logs:
        check_logs(lg, ("g_content", "g_adv", "loss_d", "d_real", "d_fake"))
        assert lg["loss_g"] == pytest.approx(lg["g_adv"] + 100.0 * lg["g_content"], rel=1e-5)


def test_pix2pix_two_steps_rgb_photo_lsgan():
    gen = {"name": "unet", "width": 8, "depth": 2, "in_channels": 3}
    method = make("pix2pix", generator=gen, gan_mode="lsgan")
    assert next(method.nets["D"].parameters()).shape[1] == 6
    rec = Recorder(method)
    batch = photo_batch()
    logs = [method.training_step(batch, step) for step in range(2)]
    check_gan_phases(rec, ["G"], ["D"], ["D", "G"], calls=2)
    check_logs(logs[-1], ("g_content", "g_adv", "loss_d"))
    assert method.denoiser().forward(batch["ld"]).shape == (2, 3, 64, 64)


def test_cyclegan_two_steps_unpaired(shared_data):
    method = make("cyclegan")
    rec = Recorder(method)
    batch = ct_batch(shared_data)
    # unpaired: the normal-dose images are other crops than the low-dose ones
    batch = {**batch, "nd": batch["nd"].roll(1, dims=0)}
    logs = [method.training_step(batch, step) for step in range(2)]
    check_gan_phases(rec, ["G", "F"], ["D_ND", "D_LD"], ["G", "F", "D_ND", "D_LD"], calls=2)
    for lg in logs:
        check_logs(lg, ("cycle", "identity", "g_adv", "loss_d", "d_nd", "d_ld", "d_real", "d_fake"))
        assert lg["loss_g"] == pytest.approx(lg["g_adv"] + 10 * lg["cycle"] + 5 * lg["identity"], rel=1e-5)
    # the pools hold the 2 x 4 fakes seen so far (size 4: full)
    state = method.extra_state()
    assert state["pool.nd.images"].shape == (4, 1, 64, 64) and state["pool.ld.images"].shape == (4, 1, 64, 64)


def _affine_net(net: torch.nn.Module, a: float, b: float) -> None:
    """Set a 2-layer, 1-channel wgan_generator to compute exactly ``a * x + b`` (for |x| < 5)."""
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2
    with torch.no_grad():
        for c in convs:
            c.weight.zero_()
            c.weight[0, 0, 1, 1] = 1.0
        convs[0].bias.fill_(5.0)  # ReLU(x + 5) = x + 5
        convs[1].weight[0, 0, 1, 1] = a
        convs[1].bias.fill_(b - 5.0 * a)


def test_cyclegan_cycle_and_identity_terms_match_hand_computation():
    """G(x) = 2x + 0.1 and F(y) = 0.5y - 0.3 on toy images: the logged (pre-update) terms equal
    ||F(G(x)) - x||_1 + ||G(F(y)) - y||_1 and ||G(y) - y||_1 + ||F(x) - x||_1 (means)."""
    gen = {"name": "wgan_generator", "channels": 1, "depth": 2}
    method = make("cyclegan", generator=gen, pool_size=0)
    _affine_net(method.nets["G"], 2.0, 0.1)
    _affine_net(method.nets["F"], 0.5, -0.3)
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (2, 1, 32, 32)).astype(np.float32)
    y = rng.uniform(-1, 1, (2, 1, 32, 32)).astype(np.float32)
    logs = method.training_step({"ld": torch.from_numpy(x), "nd": torch.from_numpy(y)}, 0)

    def G(t):
        return 2.0 * t + 0.1

    def F_(t):
        return 0.5 * t - 0.3

    cycle = np.abs(F_(G(x)) - x).mean() + np.abs(G(F_(y)) - y).mean()  # = 0.25 + 0.5
    identity = np.abs(G(y) - y).mean() + np.abs(F_(x) - x).mean()
    assert cycle == pytest.approx(0.75, abs=1e-6)
    assert logs["cycle"] == pytest.approx(cycle, rel=1e-5)
    assert logs["identity"] == pytest.approx(identity, rel=1e-5)
    assert logs["loss_g"] == pytest.approx(logs["g_adv"] + 10 * cycle + 5 * identity, rel=1e-5)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_cyclegan_linear_decay_in_second_half():
    method = make("cyclegan")
    lrs = []
    for step in range(10):
        lrs.append(method.optimizers["G"].param_groups[0]["lr"])
        method.on_step_end(step, 10)
    lrs.append(method.optimizers["G"].param_groups[0]["lr"])
    base = 2e-4
    assert lrs[:6] == pytest.approx([base] * 6)  # constant through step 5 (the first half)
    # then linear: 1 - k / (n_decay + 1) with n_decay = 5
    assert lrs[6:] == pytest.approx([base * (1 - k / 6) for k in range(1, 6)])
    for name in ("F", "D_ND", "D_LD"):
        assert method.optimizers[name].param_groups[0]["lr"] == pytest.approx(lrs[-1])


def test_cyclegan_pool_state_round_trip(shared_data):
    method = make("cyclegan")
    batch = ct_batch(shared_data)
    method.training_step(batch, 0)
    state = method.extra_state()
    other = make("cyclegan")
    other.load_extra_state(state)
    assert (
        same([im for im in other.pools["nd"].images], [im for im in method.pools["nd"].images])
        and len(other.pools["ld"].images) == 4
    )


def test_bad_network_key_names_itself():
    with pytest.raises(LdctError, match="chanels"):
        METHODS.get("wgan_gp")(generator={"name": "wgan_generator", "chanels": 8})
