"""pix2pix conditional GAN (Isola et al., CVPR 2017): U-Net generator, 70x70 PatchGAN discriminator
that sees the input and an output concatenated on the channel axis.

Losses: discriminator ``(GAN(D(x, y), real) + GAN(D(x, G(x)), fake)) / 2``; generator
``adversarial_weight * GAN(D(x, G(x)), real) + content_weight * L1(G(x), y)`` with L1 weight 100 and a
vanilla (BCE) or least-squares GAN. Works for CT (1 channel) and for photographs (generator
``in_channels: 3``; the discriminator's input channels follow from the generator).
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
    spec_value,
)
from ldct.models.specs import NetSpec


@METHODS.register("pix2pix")
class Pix2Pix(GANMethod):
    """Networks: ``G`` (generator, used for inference) and ``D`` (PatchGAN on concat(input, image))."""

    name = "pix2pix"
    inference_net = "G"

    def __init__(
        self,
        *,
        generator: NetSpec | str = "unet",
        discriminator: NetSpec | str = "patchgan",
        gan_mode: str = "vanilla",
        content_loss: LossSpec = "l1",
        content_weight: float = 100.0,
        adversarial_weight: float = 1.0,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
    ):
        super().__init__()
        c_in = int(spec_value(generator, "in_channels", 1))
        G = build_net(generator, "args.generator")
        D = build_net(discriminator, "args.discriminator", in_channels=c_in + out_channels_of(generator))
        self.add_net("G", G, adam(G, lr, betas))
        self.add_net("D", D, adam(D, lr, betas))
        self.add_loss("content", content_loss, "args.content_loss")
        self.gan = GANLoss(gan_mode)
        self.content_weight = float(content_weight)
        self.adversarial_weight = float(adversarial_weight)

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        x, y = batch["ld"], batch["nd"]
        G, D = self.nets["G"], self.nets["D"]
        opt_g, opt_d = self.optimizers["G"], self.optimizers["D"]

        fake = G(x)  # one forward: detached for D, with its graph for G
        check_output_size(fake, y, "pix2pix")

        # ---- discriminator: real pairs vs detached fake pairs -----------------------------------
        set_requires_grad(D, True)
        opt_d.zero_grad(set_to_none=True)
        s_real = D(torch.cat([x, y], dim=1))
        s_fake = D(torch.cat([x, fake.detach()], dim=1))
        d_loss = 0.5 * (self.gan(s_real, True) + self.gan(s_fake, False))
        self.backward(d_loss)
        opt_d.step()

        # ---- generator: discriminator frozen ------------------------------------------------------
        set_requires_grad(D, False)
        opt_g.zero_grad(set_to_none=True)
        g_adv = self.gan(D(torch.cat([x, fake], dim=1)), True)
        content = self.losses["content"](fake, y)
        g_loss = self.adversarial_weight * g_adv + self.content_weight * content
        self.backward(g_loss)
        opt_g.step()
        set_requires_grad(D, True)

        out = {
            "loss_g": float(g_loss.detach()),
            "g_adv": float(g_adv.detach()),
            "g_content": float(content.detach()),
            "loss_d": float(d_loss.detach()),
            "d_real": self.gan.readout(s_real),
            "d_fake": self.gan.readout(s_fake),
        }
        out["loss"] = out["loss_g"]
        return out
