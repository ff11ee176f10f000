"""WGAN-GP for low-dose -> normal-dose denoising (WGAN-VGG style: Yang et al., IEEE TMI 37(6), 2018).

Critic loss (Gulrajani et al. 2017): ``D(fake) - D(real) + 10 * (||grad D(x_hat)|| - 1)^2`` on random
interpolates ``x_hat``; ``n_critic`` critic updates per generator update, each with its own
zero_grad/backward/step, on detached fakes. Generator loss:
``adversarial_weight * -D(G(x)) + content_weight * content(G(x), y) + feature_weight * feature(G(x), y)``.

The published WGAN-VGG uses an ImageNet VGG feature loss; none can be downloaded here, so the optional
feature loss is ``{name: feature, weights: <an ldct checkpoint>, ...}`` (e.g. the normal-dose autoencoder
teacher's encoder) and the default content loss is MSE. ``adversarial_weight`` defaults to 1e-3 (as in
SRGAN): with gradient-penalised critics the adversarial gradient per image has norm ~1, while the MSE
gradient of a 64x64 patch with ~50 HU of noise is ~1e-3 of that, so this balances the two.
"""

from __future__ import annotations

from typing import Any

import torch

from ldct.losses.adversarial import gradient_penalty
from ldct.methods.base import METHODS
from ldct.methods.gan_common import (
    GANMethod,
    LossSpec,
    adam,
    build_net,
    check_output_size,
    set_requires_grad,
    spec_value,
)
from ldct.models.specs import NetSpec


@METHODS.register("wgan_gp")
class WGANGP(GANMethod):
    """Networks: ``G`` (generator, used for inference) and ``D`` (critic). Batches: {"ld", "nd"}."""

    name = "wgan_gp"
    inference_net = "G"

    def __init__(
        self,
        *,
        generator: NetSpec | str = "wgan_generator",
        critic: NetSpec | str = "wgan_critic",
        n_critic: int = 5,
        gp_weight: float = 10.0,
        adversarial_weight: float = 1e-3,
        content_loss: LossSpec | None = "mse",
        content_weight: float = 1.0,
        feature_loss: LossSpec | None = None,
        feature_weight: float = 0.1,
        lr: float = 1e-4,
        critic_lr: float | None = None,
        betas: tuple[float, float] = (0.5, 0.9),
    ):
        super().__init__()
        if n_critic < 1:
            raise ValueError("n_critic must be >= 1")
        channels = int(spec_value(generator, "in_channels", 1))
        G = build_net(generator, "args.generator")
        D = build_net(critic, "args.critic", in_channels=channels)
        self.add_net("G", G, adam(G, lr, betas))
        self.add_net("D", D, adam(D, critic_lr or lr, betas))
        self.add_loss("content", content_loss, "args.content_loss")
        self.add_loss("feature", feature_loss, "args.feature_loss")
        self.n_critic = int(n_critic)
        self.gp_weight = float(gp_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.content_weight = float(content_weight)
        self.feature_weight = float(feature_weight)

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        ld, nd = batch["ld"], batch["nd"]
        G, D = self.nets["G"], self.nets["D"]
        opt_g, opt_d = self.optimizers["G"], self.optimizers["D"]

        # one generator forward: G does not change during the critic updates, so this graph also
        # serves the generator update below; the critic only ever sees fake.detach()
        fake = G(ld)
        check_output_size(fake, nd, "wgan_gp")

        # ---- critic: n_critic updates, each zeroed, back-propagated and stepped on its own ----------
        set_requires_grad(D, True)
        for _ in range(self.n_critic):
            opt_d.zero_grad(set_to_none=True)
            d_real = D(nd).mean()
            d_fake = D(fake.detach()).mean()
            gp = gradient_penalty(D, nd, fake.detach(), self.gp_weight)
            wasserstein = d_real - d_fake
            d_loss = -wasserstein + gp
            self.backward(d_loss)
            opt_d.step()

        # ---- generator: critic frozen -------------------------------------------------------------
        set_requires_grad(D, False)
        opt_g.zero_grad(set_to_none=True)
        g_adv = -D(fake).mean()
        g_loss = self.adversarial_weight * g_adv
        logs: dict[str, Any] = {}
        if "content" in self.losses:
            content = self.losses["content"](fake, nd)
            g_loss = g_loss + self.content_weight * content
            logs["g_content"] = content
        if "feature" in self.losses:
            feature = self.losses["feature"](fake, nd)
            g_loss = g_loss + self.feature_weight * feature
            logs["g_feature"] = feature
        self.backward(g_loss)
        opt_g.step()
        set_requires_grad(D, True)

        out = {k: float(v.detach()) for k, v in logs.items()}
        out.update(
            loss_g=float(g_loss.detach()),
            g_adv=float(g_adv.detach()),
            loss_d=float(d_loss.detach()),
            gp=float(gp.detach()),
            wasserstein=float(wasserstein.detach()),
            d_real=float(d_real.detach()),
            d_fake=float(d_fake.detach()),
        )
        out["loss"] = out["loss_g"]
        return out
