"""Self-supervised denoising: one network trained on low-dose scans alone (``data.kind: lowdose``).

``mode: neighbor2neighbor`` makes input and target from each noisy patch by sub-sampling 2x2 cells
(:func:`ldct.losses.self_supervised.neighbor2neighbor_loss`); ``mode: noise2noise`` maps a slice to its
neighbour in a thin contiguous series (``data.adjacent: true``). The optimizer, learning-rate schedule and
denoiser are the supervised method's; only the objective differs, and the full dose, when the data has it,
is used only by validation.
"""

from __future__ import annotations

import torch

from ldct.errors import LdctError
from ldct.losses.self_supervised import neighbor2neighbor_loss, noise2noise_loss
from ldct.methods.base import METHODS
from ldct.methods.supervised import LossSpec, Supervised
from ldct.models.specs import NetSpec

MODES = ("neighbor2neighbor", "noise2noise")


@METHODS.register("self_supervised")
class SelfSupervised(Supervised):
    """Train ``net`` to denoise from noisy data alone.

    Args:
        net: network spec (any network of the registry).
        mode: ``neighbor2neighbor`` (single slices) or ``noise2noise`` (adjacent slices; needs
            ``data.adjacent: true``).
        loss: the pixel loss of both terms (``mse``: the estimate of the clean image is the conditional mean).
        gamma: weight of the Neighbor2Neighbor regulariser, reached linearly over the run (0 at the first
            step, as in the paper's schedule).
        lr, betas, weight_decay, scheduler: as the supervised method.
    """

    name = "self_supervised"

    def __init__(self, net: NetSpec, mode: str = "neighbor2neighbor", loss: LossSpec = "mse", gamma: float = 2.0,
                 lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0,
                 scheduler: str | None = "cosine", seed: int = 0) -> None:
        if mode not in MODES:
            raise LdctError(f"args.mode: unknown {mode!r}; use {' or '.join(MODES)}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma < 0:
            raise LdctError(f"args.gamma must be a number >= 0, got {gamma!r}")
        super().__init__(net, loss=loss, lr=lr, betas=betas, weight_decay=weight_decay, scheduler=scheduler)
        self.mode, self.gamma = mode, float(gamma)
        self.gamma_now = 0.0
        self.seed = int(seed)

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """``batch["ld"]`` (B, C, H, W) noisy patches (+ ``batch["ld_adj"]`` for noise2noise)."""
        net, opt = self.nets["net"], self.optimizers["net"]
        opt.zero_grad(set_to_none=True)
        y = batch["ld"]
        logs: dict[str, float] = {}
        if self.mode == "noise2noise":
            if "ld_adj" not in batch:
                raise LdctError("args.mode noise2noise needs adjacent slices: set data.kind: lowdose and "
                                "data.adjacent: true (a thin contiguous series)")
            loss = noise2noise_loss(net, y, batch["ld_adj"], loss_fn=self.loss_fn)
        else:
            if y.shape[-1] % 2 or y.shape[-2] % 2:
                raise LdctError(f"neighbor2neighbor needs even patch sizes, got {tuple(y.shape[-2:])}")
            # the cell pairs: a pure function of (seed, step, rank), so a resumed run draws the same
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 7919 + self._rank())
            loss, logs = neighbor2neighbor_loss(net, y, gamma=self.gamma_now, loss_fn=self.loss_fn, generator=gen)
        self.backward(loss)
        opt.step()
        return {"loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"], **logs}

    def _rank(self) -> int:
        return int(getattr(self.fabric, "global_rank", 0) or 0)

    def on_step_end(self, step: int, max_steps: int) -> None:
        self.gamma_now = self.gamma * min(1.0, (step + 1) / max(max_steps, 1))
        super().on_step_end(step, max_steps)

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {"gamma_now": torch.tensor(self.gamma_now, dtype=torch.float64)}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        if "gamma_now" in state:
            self.gamma_now = float(state["gamma_now"])
