"""Adversarial losses: GAN objectives (vanilla, LSGAN, Wasserstein), the WGAN gradient penalty and the
CycleGAN image pool.

The discriminator outputs raw scores (logits / critic values) of any shape (B, ...); the losses average
over everything.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GAN_MODES = ("vanilla", "lsgan", "wgan")


class GANLoss(nn.Module):
    """``loss(scores, real: bool) -> scalar``: how far discriminator ``scores`` are from saying real/fake.

    - ``vanilla``: binary cross-entropy with logits against 1 (real) / 0 (fake) (Goodfellow et al. 2014).
    - ``lsgan``: mean squared error against 1 / 0 (Mao et al. 2017).
    - ``wgan``: ``-mean(scores)`` for real, ``+mean(scores)`` for fake (Arjovsky et al. 2017).

    The generator calls it with ``real=True`` on its fakes (the non-saturating loss for vanilla).
    """

    def __init__(self, mode: str = "vanilla"):
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"GAN mode must be one of {', '.join(GAN_MODES)}, not {mode!r}")
        self.mode = mode

    def forward(self, scores: torch.Tensor, real: bool) -> torch.Tensor:
        if self.mode == "wgan":
            return -scores.mean() if real else scores.mean()
        target = torch.full_like(scores, 1.0 if real else 0.0)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(scores, target)
        return F.mse_loss(scores, target)

    def readout(self, scores: torch.Tensor) -> float:
        """What to log as D(x): the mean probability for vanilla, the mean raw score otherwise."""
        s = scores.detach().float()
        return float(torch.sigmoid(s).mean() if self.mode == "vanilla" else s.mean())


def gradient_penalty(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, weight: float = 10.0
) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): ``weight * mean((||grad D(x_hat)||_2 - 1)^2)``.

    ``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ U(0, 1)`` per sample; real and fake are
    (B, C, H, W) and ``fake`` should be detached. The graph is kept (``create_graph``) so the penalty
    back-propagates into the critic's weights. For a linear critic ``D(x) = <w, x> + b`` the gradient is
    ``w`` everywhere and the penalty is ``weight * (||w|| - 1)^2``.
    """
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return weight * ((norms - 1.0) ** 2).mean()


class ImagePool:
    """History of generated images (Shrivastava et al. 2017; CycleGAN uses 50).

    ``query(fakes)`` returns a batch of the same shape: while the pool fills, the new fakes themselves;
    afterwards each image is, with probability 1/2, swapped for a random older one (which the new one
    replaces in the pool). Uses torch's global RNG, so a resumed run with restored RNG state repeats it.
    The pool is part of the training state: :meth:`state_dict` / :meth:`load_state_dict`.
    """

    def __init__(self, size: int = 50):
        self.size = size
        self.images: list[torch.Tensor] = []

    @torch.no_grad()
    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) detached fakes -> (B, C, H, W) images to show the discriminator."""
        if self.size <= 0:
            return fakes.detach()
        out = []
        for img in fakes.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand(()) < 0.5:
                idx = int(torch.randint(len(self.images), ()))
                out.append(self.images[idx].clone())
                self.images[idx] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The stored images as one (N, C, H, W) CPU tensor (empty dict while the pool is empty)."""
        if not self.images:
            return {}
        return {"images": torch.stack([im.detach().cpu() for im in self.images]).contiguous()}

    def load_state_dict(self, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
        imgs = state.get("images")
        self.images = [] if imgs is None else [im.to(device) for im in imgs.unbind(0)]
