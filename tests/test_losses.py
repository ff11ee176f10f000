"""Pixel losses: registry, values (SSIM equals scikit-image), gradients, and optimisation on real CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

import ldct.losses  # noqa: F401  (registers the losses)
from ldct.hu import hu_to_net
from ldct.losses.registry import LOSSES


def real_pair(shared_data: Path, sigma_hu: float = 40.0, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A real 64x64 abdomen crop (network range) and ``n`` noisy copies: (n, 1, 64, 64) each."""
    raw = np.fromfile(shared_data / "mayo_L067_fd_raw" / "L067_FD_3mm_smooth_0070.raw", dtype="<u2")
    hu = raw.reshape(512, 512).astype(np.float32)[230:294, 190:254] - 1024.0
    noisy = hu + np.random.default_rng(1).normal(0.0, sigma_hu, (n, *hu.shape)).astype(np.float32)
    clean = torch.from_numpy(hu_to_net(hu))[None, None].repeat(n, 1, 1, 1)
    return torch.from_numpy(hu_to_net(noisy))[:, None], clean


def test_registry_names():
    assert {"l1", "mse", "ssim", "l1_ssim"} <= set(LOSSES.names())


def test_values_on_real_ct(shared_data):
    noisy, clean = real_pair(shared_data)
    assert LOSSES.build("l1")(noisy, clean).item() == pytest.approx(F.l1_loss(noisy, clean).item())
    assert LOSSES.build("mse")(noisy, clean).item() == pytest.approx(((noisy - clean) ** 2).mean().item())
    ssim_loss = LOSSES.build("ssim")
    assert ssim_loss(clean, clean).item() == pytest.approx(0.0, abs=1e-6)
    # 1 - SSIM equals scikit-image's Gaussian SSIM on the same images (data range 2 for [-1, 1])
    sk = np.mean(
        [
            structural_similarity(
                clean[i, 0].double().numpy(),
                noisy[i, 0].double().numpy(),
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=2.0,
            )
            for i in range(len(noisy))
        ]
    )
    assert ssim_loss(noisy.double(), clean.double()).item() == pytest.approx(1.0 - sk, abs=1e-6)
    assert ssim_loss(noisy, clean).item() == pytest.approx(1.0 - sk, abs=1e-4)
    combo = LOSSES.build("l1_ssim")(noisy, clean).item()
    assert combo == pytest.approx(F.l1_loss(noisy, clean).item() + 0.2 * (1.0 - sk), abs=1e-4)
    assert LOSSES.build("l1_ssim", alpha=1.0)(noisy, clean).item() > combo


def test_ssim_three_channels_matches_skimage(shared_data):
    noisy, clean = real_pair(shared_data, n=3)
    pred, ref = noisy[:, 0][None].double(), clean[:, 0][None].double()  # (1, 3, 64, 64)
    sk = structural_similarity(
        ref[0].numpy(),
        pred[0].numpy(),
        channel_axis=0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=2.0,
    )
    assert LOSSES.build("ssim")(pred, ref).item() == pytest.approx(1.0 - sk, abs=1e-6)


def test_ssim_half_precision_is_finite(shared_data):
    noisy, clean = real_pair(shared_data)
    loss = LOSSES.build("ssim")(noisy.bfloat16(), clean.bfloat16())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize("name", ["l1", "mse", "ssim", "l1_ssim"])
def test_gradient_descent_on_the_image_lowers_each_loss(shared_data, name):
    """Optimise the pixels of a noisy real crop directly: every loss is differentiable and decreases."""
    noisy, clean = real_pair(shared_data)
    pred = noisy.clone().requires_grad_(True)
    loss_fn = LOSSES.build(name)
    opt = torch.optim.Adam([pred], lr=5e-3)
    first = None
    for _ in range(10):
        opt.zero_grad()
        loss = loss_fn(pred, clean)
        loss.backward()
        assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
        opt.step()
        first = loss.item() if first is None else first
    assert loss_fn(pred, clean).item() < 0.8 * first
