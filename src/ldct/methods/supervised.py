"""Supervised denoising: one network, a pixel loss against the normal dose, Adam, cosine learning rate.

``training_step`` is the whole optimisation step in one visible place: zero the gradients, predict the
normal dose from the low dose, compute the loss, back-propagate (through Fabric: precision scaling and
DDP gradient averaging) and step the optimizer.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ldct.errors import LdctError
from ldct.losses.build import build_loss
from ldct.methods.base import METHODS, Method
from ldct.models.specs import NetSpec, build_network

#: Annotation for a loss given by name or {"name": ..., **kwargs} (checked against ldct.losses.LOSSES).
LossSpec = str | dict[str, Any]

SCHEDULERS = ("cosine", "constant", None)


@METHODS.register("supervised")
class Supervised(Method):
    """Train ``net`` to map low dose to normal dose with a pixel loss.

    Args:
        net: network spec ``{"name": <ldct.models name>, **kwargs}``.
        loss: loss name or spec (``l1``, ``mse``, ``ssim``, ``l1_ssim``, ...); ``alpha`` is passed to
            losses that take it (L1 + alpha * (1 - SSIM)).
        lr, betas, weight_decay: Adam (AdamW when ``weight_decay`` > 0).
        scheduler: ``"cosine"`` (from ``lr`` to 0 over the run's ``max_steps``) or None/"constant".
        alpha: SSIM weight of the ``l1_ssim`` loss.
    """

    name = "supervised"
    inference_net = "net"

    def __init__(
        self,
        net: NetSpec,
        loss: LossSpec = "l1",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        scheduler: str | None = "cosine",
        alpha: float = 0.2,
    ) -> None:
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise LdctError(f"args.scheduler: unknown {scheduler!r}; use cosine or null")
        if not lr > 0:
            raise LdctError(f"args.lr must be positive, got {lr!r}")
        model = build_network(net, where="args.net")
        opt_cls = torch.optim.AdamW if weight_decay > 0 else torch.optim.Adam
        optimizer = opt_cls(model.parameters(), lr=float(lr), betas=(float(betas[0]), float(betas[1])),
                            weight_decay=float(weight_decay))
        self.add_net("net", model, optimizer)
        self.loss_fn = build_loss(loss, where="args.loss", alpha=float(alpha))
        self.lr = float(lr)
        self.scheduler = scheduler

    def setup(self, fabric: Any) -> None:
        super().setup(fabric)
        self.loss_fn = self.loss_fn.to(fabric.device)

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """``batch["ld"]``, ``batch["nd"]``: (B, C, H, W) network range. Returns ``{"loss", "lr"}``."""
        net, opt = self.nets["net"], self.optimizers["net"]
        opt.zero_grad(set_to_none=True)
        pred = net(batch["ld"])
        loss = self.loss_fn(pred.float(), batch["nd"].float())
        self.backward(loss)
        opt.step()
        return {"loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"]}

    def lr_at(self, step: int, max_steps: int) -> float:
        """Learning rate for optimisation step ``step`` (0-based) of ``max_steps``."""
        if self.scheduler != "cosine" or max_steps <= 0:
            return self.lr
        t = min(step, max_steps) / max_steps
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * t))

    def on_step_end(self, step: int, max_steps: int) -> None:
        """Set the learning rate of the next step (a pure function of the step: resumes exactly)."""
        lr = self.lr_at(step + 1, max_steps)
        for group in self.optimizers["net"].param_groups:
            group["lr"] = lr
        super().on_step_end(step, max_steps)
