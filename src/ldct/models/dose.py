"""Dose conditioning: an MLP maps the dose fraction to a per-block scale and shift (FiLM / SFT style).

One small trunk (1 -> 64 -> 64) embeds the dose; one linear head per conditioned block turns the
embedding into ``(scale, shift)`` for that block's C channels, applied as ``x * (1 + scale) + shift``
by :func:`ldct.models.common.modulate` inside the encoders.
The heads are zero-initialised, so at initialisation every modulation is the identity and a
conditioned network computes exactly what its unconditioned twin computes; training moves away from
the identity only as far as the dose helps.

The MLP sees ``log(dose)`` (dose fraction clamped to [1e-3, 1]) rather than the raw fraction: noise
variance scales with 1/dose, so equal dose *ratios* (10 % -> 25 % and 25 % -> 62.5 %) are equal steps
of the input, which makes interpolation to an unseen level (e.g. 50 % between 25 % and 70 %) smoother.
"""

from __future__ import annotations

import torch
from torch import nn

from ldct.models.common import Modulation


def dose_feature(dose: torch.Tensor | float | None, batch: int, device: torch.device) -> torch.Tensor:
    """(B,) or scalar dose fraction (None = 1.0, normal dose) -> (B, 1) log-dose feature."""
    if dose is None:
        d = torch.ones(batch, device=device)
    else:
        d = torch.as_tensor(dose, dtype=torch.float32, device=device).reshape(-1)
        if d.numel() == 1 and batch != 1:
            d = d.expand(batch)
        if d.numel() != batch:
            raise ValueError(f"dose has {d.numel()} values for a batch of {batch}")
    return torch.log(d.float().clamp(1e-3, 1.0)).unsqueeze(1)


class DoseMLP(nn.Module):
    """Dose -> per-block (scale, shift).

    Args:
        channels: channel count of each conditioned block, in the order :meth:`forward` returns them.
        hidden: width of the trunk (the dose embedding).
    """

    def __init__(self, *, channels: list[int] | tuple[int, ...], hidden: int = 64):
        super().__init__()
        self.channels = [int(c) for c in channels]
        self.trunk = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.heads = nn.ModuleList(nn.Linear(hidden, 2 * c) for c in self.channels)
        for head in self.heads:  # identity modulation at initialisation
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, dose: torch.Tensor | float | None, batch: int, device: torch.device) -> list[Modulation]:
        """(B,) dose fractions -> one ``(scale, shift)`` pair of (B, C_i, 1, 1) tensors per block."""
        emb = self.trunk(dose_feature(dose, batch, device))
        out = []
        for head, c in zip(self.heads, self.channels, strict=True):
            scale, shift = head(emb).view(batch, 2 * c, 1, 1).chunk(2, dim=1)
            out.append((scale, shift))
        return out
