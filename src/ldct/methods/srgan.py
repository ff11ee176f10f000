"""SRGAN (Ledig et al., CVPR 2017) for low-dose, low-resolution -> normal-dose, high-resolution CT.

The data section sets ``downsample: 4`` (or 2) so ``batch["ld"]`` is (B, C, H/s, W/s) and ``batch["nd"]``
(B, C, H, W); ``scale`` must match. Generator SRResNet (16 residual blocks, pixel-shuffle upsampling),
discriminator VGG-style (strided convs, batch norm, leaky ReLU, dense head).

Losses: discriminator ``BCE(D(y), 1) + BCE(D(G(x)), 0)``; generator
``content_weight * content(G(x), y) + adversarial_weight * BCE(D(G(x)), 1)`` with content MSE (the
SRResNet-MSE variant) or a feature loss ``{name: feature, weights: ...}`` (the paper's VGG loss needs an
ImageNet VGG, which cannot be downloaded: use a network ldct trained) and ``adversarial_weight`` 1e-3.
``pretrain_steps`` first trains G on the content loss alone (the paper initialises SRGAN from SRResNet).
"""

from __future__ import annotations

import torch

from ldct.losses.adversarial import GANLoss
from ldct.methods.base import METHODS
from ldct.methods.gan_common import (
    GANMethod,
    LossSpec,
    adam,
    build_net,
    check_output_size,
    out_channels_of,
    set_requires_grad,
)
from ldct.models.specs import NetSpec


@METHODS.register("srgan")
class SRGAN(GANMethod):
    """Networks: ``G`` (super-resolving generator, used for inference) and ``D``. ``self.scale`` = scale."""

    name = "srgan"
    inference_net = "G"

    def __init__(
        self,
        *,
        generator: NetSpec | str = "srresnet",
        discriminator: NetSpec | str = "srgan_discriminator",
        scale: int = 4,
        content_loss: LossSpec = "mse",
        content_weight: float = 1.0,
        adversarial_weight: float = 1e-3,
        gan_mode: str = "vanilla",
        pretrain_steps: int = 0,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
    ):
        super().__init__()
        if scale not in (1, 2, 4, 8):
            raise ValueError(f"scale must be 1, 2, 4 or 8, not {scale}")
        self.scale = int(scale)
        G = build_net(generator, "args.generator", **({"scale": self.scale} if self.scale != 1 else {}))
        D = build_net(discriminator, "args.discriminator", in_channels=out_channels_of(generator))
        self.add_net("G", G, adam(G, lr, betas))
        self.add_net("D", D, adam(D, lr, betas))
        self.add_loss("content", content_loss, "args.content_loss")
        self.gan = GANLoss(gan_mode)
        self.content_weight = float(content_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.pretrain_steps = int(pretrain_steps)

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        lr_in, hr = batch["ld"], batch["nd"]
        G, D = self.nets["G"], self.nets["D"]
        opt_g, opt_d = self.optimizers["G"], self.optimizers["D"]

        fake = G(lr_in)  # (B, C, H, W): one forward, used detached by D and with its graph by G
        check_output_size(fake, hr, "srgan")
        content = self.losses["content"](fake, hr)

        if step < self.pretrain_steps:  # SRResNet pre-training: content loss only, D untouched
            opt_g.zero_grad(set_to_none=True)
            g_loss = self.content_weight * content
            self.backward(g_loss)
            opt_g.step()
            return {
                "loss": float(g_loss.detach()),
                "loss_g": float(g_loss.detach()),
                "g_content": float(content.detach()),
            }

        # ---- discriminator on real HR and detached fakes ----------------------------------------
        set_requires_grad(D, True)
        opt_d.zero_grad(set_to_none=True)
        s_real = D(hr)
        s_fake = D(fake.detach())
        d_loss = self.gan(s_real, True) + self.gan(s_fake, False)
        self.backward(d_loss)
        opt_d.step()

        # ---- generator: discriminator frozen ------------------------------------------------------
        set_requires_grad(D, False)
        opt_g.zero_grad(set_to_none=True)
        g_adv = self.gan(D(fake), True)
        g_loss = self.content_weight * content + self.adversarial_weight * g_adv
        self.backward(g_loss)
        opt_g.step()
        set_requires_grad(D, True)

        out = {
            "loss_g": float(g_loss.detach()),
            "g_content": float(content.detach()),
            "g_adv": float(g_adv.detach()),
            "loss_d": float(d_loss.detach()),
            "d_real": self.gan.readout(s_real),
            "d_fake": self.gan.readout(s_fake),
        }
        out["loss"] = out["loss_g"]
        return out
