"""CycleGAN (Zhu et al., ICCV 2017) for unpaired low-dose and normal-dose sets.

Generators ``G``: LD -> ND (used for inference) and ``F``: ND -> LD; PatchGAN discriminators ``D_ND``
(real normal dose vs G's output) and ``D_LD``. Batches come from ``data.kind: unpaired``: ``ld`` and
``nd`` are unrelated images. With x = ld, y = nd:

- generators (discriminators frozen):
  ``adversarial_weight * (GAN(D_ND(G(x)), real) + GAN(D_LD(F(y)), real))
  + cycle_weight * (||F(G(x)) - x||_1 + ||G(F(y)) - y||_1)
  + identity_weight * (||G(y) - y||_1 + ||F(x) - x||_1)``
  (L1 = mean absolute difference; defaults 1, 10, 5; least-squares GAN);
- discriminators, on fakes drawn from a pool of the last 50 (detached):
  ``(GAN(D(real), real) + GAN(D(pool(fake)), fake)) / 2`` each.

Learning rates stay constant for the first ``decay_start`` fraction of the run and then fall linearly
(to 1/(n+1) of the start at the last step, as in the reference code); the schedulers are stepped in
:meth:`on_step_end`, which knows ``max_steps``. The image pools are saved with the training state
(:meth:`extra_state`) so a resumed run continues exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_

from ldct.losses.adversarial import GANLoss, ImagePool
from ldct.methods.base import METHODS
from ldct.methods.gan_common import (
    GANMethod,
    accepts,
    adam,
    build_net,
    check_output_size,
    out_channels_of,
    set_requires_grad,
    spec_value,
)
from ldct.models.specs import NetSpec
from ldct.registry import split_spec


@METHODS.register("cyclegan")
class CycleGAN(GANMethod):
    """Networks ``G``, ``F``, ``D_ND``, ``D_LD``; each has its own Adam optimizer and LR scheduler."""

    name = "cyclegan"
    inference_net = "G"

    def __init__(
        self,
        *,
        generator: NetSpec | str = "resnet",
        inverse: NetSpec | str | None = None,
        discriminator: NetSpec | str = {"name": "patchgan", "norm": "instance"},  # noqa: B006 (never mutated)
        gan_mode: str = "lsgan",
        adversarial_weight: float = 1.0,
        cycle_weight: float = 10.0,
        identity_weight: float = 5.0,
        pool_size: int = 50,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        decay_start: float = 0.5,
    ):
        super().__init__()
        if not 0.0 <= decay_start <= 1.0:
            raise ValueError("decay_start must be a fraction of the run in [0, 1]")
        c_ld = int(spec_value(generator, "in_channels", 1))
        c_nd = out_channels_of(generator)
        if inverse is None:  # F: the same network as G, channels swapped
            name, kwargs = split_spec(generator, "args.generator")
            inverse = {"name": name, **kwargs, "in_channels": c_nd}
            if accepts(name, "out_channels"):
                inverse["out_channels"] = c_ld
        self.decay_start = float(decay_start)
        self._max_steps: int | None = None
        G = build_net(generator, "args.generator")
        Fn = build_net(inverse, "args.inverse")
        D_nd = build_net(discriminator, "args.discriminator", in_channels=c_nd)
        D_ld = build_net(discriminator, "args.discriminator", in_channels=c_ld)
        for name, net in (("G", G), ("F", Fn), ("D_ND", D_nd), ("D_LD", D_ld)):
            self.add_net(name, net, adam(net, lr, betas))
            self.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(
                self.optimizers[name], lambda t: self.lr_factor(t)
            )
        self.pools = {"nd": ImagePool(pool_size), "ld": ImagePool(pool_size)}
        self.gan = GANLoss(gan_mode)
        self.adversarial_weight = float(adversarial_weight)
        self.cycle_weight = float(cycle_weight)
        self.identity_weight = float(identity_weight)

    def lr_factor(self, t: int) -> float:
        """LR multiplier after ``t`` completed steps: 1 until ``decay_start * max_steps``, then linear."""
        if not self._max_steps:
            return 1.0
        start = int(self.decay_start * self._max_steps)
        n_decay = self._max_steps - start
        return 1.0 - max(0, t - start) / (n_decay + 1)

    def on_step_end(self, step: int, max_steps: int) -> None:
        self._max_steps = int(max_steps)
        for sched in self.schedulers.values():
            sched.step()

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        x, y = batch["ld"], batch["nd"]  # unpaired: x low dose, y normal dose
        G, Fn, D_nd, D_ld = (self.nets[k] for k in ("G", "F", "D_ND", "D_LD"))
        opt = self.optimizers

        fake_y = G(x)  # LD -> ND
        rec_x = Fn(fake_y)  # back to LD
        fake_x = Fn(y)  # ND -> LD
        rec_y = G(fake_x)
        check_output_size(fake_y, y, "cyclegan")

        # ---- generators G and F: both discriminators frozen ---------------------------------------
        set_requires_grad(D_nd, False)
        set_requires_grad(D_ld, False)
        opt["G"].zero_grad(set_to_none=True)
        opt["F"].zero_grad(set_to_none=True)
        adv = self.gan(D_nd(fake_y), True) + self.gan(D_ld(fake_x), True)
        cycle = F_.l1_loss(rec_x, x) + F_.l1_loss(rec_y, y)
        g_loss = self.adversarial_weight * adv + self.cycle_weight * cycle
        identity = torch.zeros((), device=x.device)
        if self.identity_weight > 0:
            identity = F_.l1_loss(G(y), y) + F_.l1_loss(Fn(x), x)
            g_loss = g_loss + self.identity_weight * identity
        self.backward(g_loss)
        opt["G"].step()
        opt["F"].step()

        # ---- discriminators: real vs pooled, detached fakes -------------------------------------
        set_requires_grad(D_nd, True)
        set_requires_grad(D_ld, True)
        opt["D_ND"].zero_grad(set_to_none=True)
        opt["D_LD"].zero_grad(set_to_none=True)
        s_real_nd = D_nd(y)
        s_fake_nd = D_nd(self.pools["nd"].query(fake_y.detach()))
        s_real_ld = D_ld(x)
        s_fake_ld = D_ld(self.pools["ld"].query(fake_x.detach()))
        d_nd = 0.5 * (self.gan(s_real_nd, True) + self.gan(s_fake_nd, False))
        d_ld = 0.5 * (self.gan(s_real_ld, True) + self.gan(s_fake_ld, False))
        d_loss = d_nd + d_ld
        self.backward(d_loss)
        opt["D_ND"].step()
        opt["D_LD"].step()

        out = {
            "loss_g": float(g_loss.detach()),
            "g_adv": float(adv.detach()),
            "cycle": float(cycle.detach()),
            "identity": float(identity.detach()),
            "loss_d": float(d_loss.detach()),
            "d_nd": float(d_nd.detach()),
            "d_ld": float(d_ld.detach()),
            "d_real": self.gan.readout(s_real_nd),
            "d_fake": self.gan.readout(s_fake_nd),
            "lr": float(opt["G"].param_groups[0]["lr"]),
        }
        out["loss"] = out["loss_g"]
        return out
