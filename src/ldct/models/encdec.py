"""Encoder-decoder wrapper for teacher-student distillation, optionally dose-conditioned.

Any registered network with the two halves ``encode(x, mods) -> (latent, skips)`` and
``decode(latent, skips) -> y`` (autoencoder, NAFNet, ResNet, U-Net in :mod:`ldct.models`) becomes a
*family* here. :class:`EncoderDecoder` adds what distillation needs:

- explicit halves that pass an :class:`Encoded` (latent, skips, input size) between them, so a
  student's encoding can be fed to the teacher's decoder;
- a tanh output in the network range [-1, 1] and no global residual: everything the decoder produces
  comes from the encoding (otherwise a teacher would learn the identity through the shortcut);
- ``skips``: whether the decoder sees the encoder's skip features. On for U-Net (they are the point of
  it; a distilling student must then match them too), off by default for the others, whose decoder
  then sees zeros in their place and the latent is a true bottleneck;
- dose conditioning: a :class:`~ldct.models.dose.DoseMLP` turns the dose into a (scale, shift) per
  encoder stage (``family.encoder_channels``), identity at initialisation;
- :meth:`encoder_parameters` / :meth:`decoder_parameters`: which weights each half uses, found by
  tracing ``encode`` once (so a student can freeze the decoder it borrowed from its teacher).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import nn

from ldct.errors import LdctError
from ldct.models.autoencoder import AutoEncoder
from ldct.models.common import crop_to, pad_to_multiple
from ldct.models.dose import DoseMLP, dose_feature
from ldct.models.registry import NETWORKS


class Encoded(NamedTuple):
    """What an encoder hands to a decoder."""

    latent: torch.Tensor
    """(B, C_lat, H'/s, W'/s) bottleneck features (H', W' = input padded to a multiple of s)."""
    skips: list[torch.Tensor]
    """Encoder stage outputs, finest first (empty for families without stages)."""
    size: tuple[int, int]
    """(H, W) of the input before padding; the decoder crops back to it."""


#: Families whose decoder uses the skip features by default.
SKIP_FAMILIES = ("unet",)

#: What an :class:`EncoderDecoder` can output (see its ``output`` argument).
OUTPUTS = ("decoder", "residual")
#: How an :class:`EncoderDecoder` keeps part of its input (see its ``blend`` argument).
BLENDS = ("none", "dose", "learned")


@NETWORKS.register("encdec")
class EncoderDecoder(nn.Module):
    """forward: (B, C, H, W) [, dose (B,)] -> (B, C, H, W) in [-1, 1], any H, W.

    Args:
        family: network spec ``{"name": "nafnet"|"unet"|"resnet"|"autoencoder", **kwargs}`` of a
            registered network with ``encode``/``decode`` halves.
        skips: feed the encoder's skip features to the decoder (None: only for U-Net).
        dose_conditioned: modulate every encoder stage by the dose (FiLM, identity at init).
        dose_hidden: width of the dose MLP.
        output: what the model decodes, ``d = decode(encode(x, dose))`` being the decoded encoding:

            - ``"decoder"`` (default, the original method): ``y = d``.
            - ``"residual"``: ``y = x + d - reference(x)``, where ``reference`` is a frozen copy of the
              teacher (same family, loaded by the distillation method) run on the input. The teacher's own
              reconstruction error cancels: at initialisation (student = teacher) ``y`` is exactly the input,
              and the student learns only the correction. Costs one extra teacher pass at inference.
        blend: how much of the input the output keeps: ``out = w x + (1 - w) y``.

            - ``"none"`` (default): ``w = 0``.
            - ``"dose"``: ``w`` = the dose fraction (needs ``dose_conditioned``). The normal-dose target keeps
              its own noise: with low dose = normal dose + extra noise of variance ``(1/dose - 1)`` times the
              normal dose's (photon noise), the least-squares estimate of the normal dose is
              ``dose x + (1 - dose) clean``, so ``y`` is asked for the *clean* image at every dose (one task
              for all levels) and the dose-dependent share of input texture is put back in closed form.
            - ``"learned"``: ``w = sigmoid(mlp(log dose))`` (one learned constant when not dose-conditioned),
              0.5 at initialisation.
    """

    def __init__(
        self,
        *,
        family: dict[str, Any] | str = "nafnet",
        skips: bool | None = None,
        dose_conditioned: bool = False,
        dose_hidden: int = 64,
        output: str = "decoder",
        blend: str = "none",
    ):
        super().__init__()
        from ldct.models.specs import build_network  # lazy: ldct.models.specs imports ldct.models

        self.net = build_network(family, where="family")
        self.family = dict(self.net.ldct_spec)  # resolved spec, all keyword arguments
        for half in ("encode", "decode"):
            if not callable(getattr(self.net, half, None)):
                raise LdctError(f"family: network {self.family['name']!r} has no {half}() half; use one of "
                                "autoencoder, nafnet, resnet, unet")
        self.skips = self.family["name"] in SKIP_FAMILIES if skips is None else bool(skips)
        self.dose_conditioned = bool(dose_conditioned)
        channels = list(getattr(self.net, "encoder_channels", []))
        self.dose_mlp = DoseMLP(channels=channels, hidden=dose_hidden) if dose_conditioned else None
        self.size_multiple = int(getattr(self.net, "size_multiple", 1))
        # the autoencoder's decode() already ends in tanh (unless it is built residual)
        self._tanh = not (isinstance(self.net, AutoEncoder) and not self.net.residual)
        self.in_channels = int(self.family.get("in_channels", 1))
        self._encoder_names: frozenset[str] | None = None
        self._n_skips = 0
        self._kept_eval: list[nn.Module] = []  # modules that stay in eval mode (see freeze_decoder)
        if output not in OUTPUTS:
            raise LdctError(f"output: {output!r} is not one of {', '.join(OUTPUTS)}")
        if blend not in BLENDS:
            raise LdctError(f"blend: {blend!r} is not one of {', '.join(BLENDS)}")
        if blend == "dose" and not self.dose_conditioned:
            raise LdctError("blend: 'dose' blends by the dose, so the model must be dose-conditioned")
        self.output, self.blend = output, blend
        self.reference: EncoderDecoder | None = None
        if output == "residual":  # frozen, always in eval mode; its weights come from the teacher
            self.reference = EncoderDecoder(family=self.family, skips=self.skips).requires_grad_(False).eval()
            self._kept_eval.append(self.reference)
        self.dose_gate: nn.Sequential | None = None
        self.blend_logit: nn.Parameter | None = None
        if blend == "learned" and self.dose_conditioned:
            self.dose_gate = nn.Sequential(nn.Linear(1, 16), nn.SiLU(), nn.Linear(16, 1))
            nn.init.zeros_(self.dose_gate[2].weight)
            nn.init.zeros_(self.dose_gate[2].bias)
        elif blend == "learned":  # without dose: one learned logit
            self.blend_logit = nn.Parameter(torch.zeros(()))

    # halves -------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, dose: torch.Tensor | float | None = None) -> Encoded:
        """(B, C, H, W) [+ (B,) dose fractions; None = 1.0] -> :class:`Encoded`.

        The dose is ignored unless the model is dose-conditioned."""
        xp, size = pad_to_multiple(x, self.size_multiple)
        mods = None
        if self.dose_mlp is not None:
            mods = self.dose_mlp(dose, xp.shape[0], xp.device)
        out = self.net.encode(xp, mods) if mods is not None else self.net.encode(xp)
        latent, skips = (out, []) if isinstance(out, torch.Tensor) else out  # the autoencoder: latent only
        return Encoded(latent, list(skips), size)

    def decode(self, enc: Encoded) -> torch.Tensor:
        """:class:`Encoded` -> (B, C, H, W) image in [-1, 1]."""
        if isinstance(self.net, AutoEncoder):
            y = self.net.decode(enc.latent)
        else:
            skips = enc.skips if self.skips else [torch.zeros_like(s) for s in enc.skips]
            y = self.net.decode(enc.latent, skips)
        if self._tanh:
            y = torch.tanh(y)
        return crop_to(y, enc.size)

    def distilled(self, enc: Encoded) -> list[torch.Tensor]:
        """The tensors a student must match: the latent, plus the skips when the decoder uses them."""
        return [enc.latent, *enc.skips] if self.skips else [enc.latent]

    def forward(
        self, x: torch.Tensor, dose: torch.Tensor | float | None = None, return_encoding: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, Encoded]:
        """(B, C, H, W) [+ (B,) dose] -> (B, C, H, W) in [-1, 1]; with ``return_encoding`` also the
        :class:`Encoded` it was decoded from (training goes through forward so DDP sees it)."""
        enc = self.encode(x, dose)
        y = self.decode(enc)
        if self.reference is not None:
            with torch.no_grad():
                ref = self.reference(x)
            y = x + y - ref
        if self.blend != "none":
            w = self._input_share(x, dose).to(y.dtype)
            y = w * x + (1 - w) * y
        return (y, enc) if return_encoding else y

    def _input_share(self, x: torch.Tensor, dose: torch.Tensor | float | None) -> torch.Tensor:
        """(B, 1, 1, 1) blend weight ``w`` of the input for a batch ``x`` at ``dose`` (None = 1.0)."""
        if self.blend == "dose":
            return dose_feature(dose, x.shape[0], x.device).exp().view(-1, 1, 1, 1)
        if self.dose_gate is not None:
            return self.dose_gate(dose_feature(dose, x.shape[0], x.device)).sigmoid().view(-1, 1, 1, 1)
        assert self.blend_logit is not None
        return self.blend_logit.sigmoid().expand(x.shape[0], 1, 1, 1)

    def blend_weight(self, dose: float | None = None) -> float:
        """The input's share ``w`` of the output at ``dose`` (0 without blending)."""
        if self.blend == "none":
            return 0.0
        p = next(self.parameters())
        with torch.no_grad():
            return float(self._input_share(torch.zeros(1, 1, 1, 1, device=p.device), dose))

    # which weights belong to which half -----------------------------------------------------------
    def _trace_encoder(self) -> frozenset[str]:
        """Names of the parameters ``encode`` uses, found by back-propagating from a tiny probe once
        (in eval mode, so BatchNorm statistics do not move). Also counts the encoder's skip outputs."""
        if self._encoder_names is None:
            named = [(n, p) for n, p in self.named_parameters() if not n.startswith("reference.")]
            names = [n for n, _ in named]
            params = [p for _, p in named]
            was_training = self.training
            self.eval()
            try:
                with torch.enable_grad():
                    probe = torch.zeros(1, self.in_channels, self.size_multiple, self.size_multiple,
                                        device=params[0].device)
                    enc = self.encode(probe, 0.5)
                    total = sum(t.sum() for t in [enc.latent, *enc.skips])
                    grads = torch.autograd.grad(total, params, allow_unused=True)
            finally:
                self.train(was_training)
            self._encoder_names = frozenset(n for n, g in zip(names, grads, strict=True) if g is not None)
            self._n_skips = len(enc.skips)
        return self._encoder_names

    @property
    def num_skips(self) -> int:
        """How many skip / stage features ``encode`` returns (0 for the autoencoder and ResNet)."""
        self._trace_encoder()
        return self._n_skips

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters ``encode`` uses (incl. the dose MLP)."""
        enc = self._trace_encoder()
        return (p for n, p in self.named_parameters() if n in enc)

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the wrapped network that only ``decode`` uses (never the dose MLP, gate or blend
        weight, nor the frozen reference of a residual model)."""
        enc = self._trace_encoder()
        return (p for n, p in self.net.named_parameters(prefix="net") if n not in enc)

    def freeze_decoder(self) -> None:
        """Stop training the decoder half: no gradients, and its normalisation layers keep their running
        statistics (they stay in eval mode, whatever ``train()`` says), so the decoder computes exactly what
        the teacher's does."""
        dec = set(self.decoder_parameters())
        for p in dec:
            p.requires_grad_(False)
        self._kept_eval += [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                           and m.weight is not None and m.weight in dec]
        self.train(self.training)

    def train(self, mode: bool = True) -> EncoderDecoder:
        """As :meth:`nn.Module.train`, but a frozen decoder's normalisation layers stay in eval mode."""
        super().train(mode)
        for m in self._kept_eval:
            m.eval()
        return self
