"""Pixel losses: L1, MSE, SSIM and L1 + alpha (1 - SSIM).

Every loss is an ``nn.Module`` called as ``loss(pred, target) -> scalar`` on (B, C, H, W) tensors in
network range ([-1, 1], so the SSIM ``data_range`` defaults to 2). SSIM uses an 11x11 Gaussian window
(sigma 1.5) over the valid region, the same computation as the SSIM metric
(:func:`ldct.metrics.image.ssim_torch`), and needs H, W >= 11.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldct.losses.registry import LOSSES
from ldct.metrics.image import ssim_torch


@LOSSES.register("l1")
class L1Loss(nn.Module):
    """Mean absolute error."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(pred, target)


@LOSSES.register("mse")
class MSELoss(nn.Module):
    """Mean squared error."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, target)


@LOSSES.register("ssim")
class SSIMLoss(nn.Module):
    """``1 - SSIM(pred, target)``, differentiable.

    Args:
        data_range: dynamic range of the data (2 for the [-1, 1] network range).
        win_size: Gaussian window size (11). sigma: its standard deviation (1.5).
    """

    def __init__(self, *, data_range: float = 2.0, win_size: int = 11, sigma: float = 1.5):
        super().__init__()
        self.data_range, self.win_size, self.sigma = float(data_range), int(win_size), float(sigma)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # SSIM's variance terms cancel badly in half precision: compute in float32 at least.
        dtype = torch.promote_types(pred.dtype, torch.float32)
        ssim = ssim_torch(
            pred.to(dtype), target.to(dtype), self.data_range, win_size=self.win_size, sigma=self.sigma
        )
        return 1.0 - ssim


@LOSSES.register("l1_ssim")
class L1SSIMLoss(nn.Module):
    """``L1 + alpha * (1 - SSIM)`` (alpha 0.2 by default)."""

    def __init__(
        self, *, alpha: float = 0.2, data_range: float = 2.0, win_size: int = 11, sigma: float = 1.5
    ):
        super().__init__()
        self.alpha = float(alpha)
        self.ssim = SSIMLoss(data_range=data_range, win_size=win_size, sigma=sigma)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(pred, target) + self.alpha * self.ssim(pred, target)
