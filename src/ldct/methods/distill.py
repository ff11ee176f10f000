"""Anatomy-aware teacher-student distillation with dose conditioning.

Two methods, trained one after the other:

``teacher``
    An encoder-decoder (:class:`~ldct.models.encdec.EncoderDecoder`) learns to reconstruct
    *normal-dose* images (``batch["nd"]`` in, ``batch["nd"]`` out; loss L1 + 0.2 (1 - SSIM)). Its
    encoding is a representation of normal-dose anatomy.

``distill``
    A student encoder of the same family, fed the low-dose image and its dose, learns to produce the
    teacher's encoding of the matching normal-dose image; the teacher's decoder turns it into an image::

        loss = lambda_lat  * mean_k MSE(student_k, teacher_k)      k: latent (+ skips if the decoder uses them)
             + lambda_feat * mean_j MSE(student stage j, teacher stage j)   (optional layer-wise term)
             + lambda_rec  * L1(decoder(student encoding), normal dose)
             + lambda_prior * feature loss on a frozen network (optional anatomy prior)

    The teacher (encoder and decoder) is loaded from its run folder / checkpoint and frozen; the
    student starts as a copy of it (``init_from_teacher``) with an identity dose modulation. The
    decoder it uses is the teacher's, frozen unless ``finetune_decoder``. The anatomy prior compares
    features of the student's output and of the normal dose under a frozen network: by default the
    normal-dose teacher's own encoder (no pretrained weights can be downloaded), or any registered
    ldct network loaded from ``prior_weights`` (a safetensors file or ldct run).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ldct.errors import LdctError
from ldct.losses.build import build_loss
from ldct.methods.base import METHODS, Method
from ldct.models.encdec import Encoded, EncoderDecoder
from ldct.models.specs import NetSpec, build_network

#: The default family of the distillation recipes (a CPU-sized NAFNet encoder-decoder).
DEFAULT_FAMILY: dict[str, Any] = {
    "name": "nafnet", "width": 32, "enc_blk_nums": [2, 2], "middle_blk_num": 4, "dec_blk_nums": [2, 2]}


def _per_sample(err: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``err`` (B, ...), each sample weighted by ``w`` (B,) when given."""
    if w is None:
        return err.mean()
    return (err.flatten(1).mean(1) * w).mean()


def _mean_mse(a: list[torch.Tensor], b: list[torch.Tensor], w: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over pairs of MSE(a_k, b_k) (samples weighted by ``w`` when given)."""
    return torch.stack([_per_sample((x.float() - y.float()) ** 2, w) for x, y in zip(a, b, strict=True)]).mean()


def _weighted_l1(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """L1(a, b) (samples weighted by ``w`` when given)."""
    return _per_sample((a.float() - b.float()).abs(), w)


def _adam(params: list[nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    if not lr > 0:
        raise LdctError(f"args.lr must be positive, got {lr!r}")
    return torch.optim.Adam(params, lr=float(lr), betas=(float(betas[0]), float(betas[1])))


class _FrozenSetup:
    """Frozen nets are moved to the device but never wrapped (DDP refuses modules with nothing to train)."""

    def setup(self: Any, fabric: Any) -> None:
        frozen = {n: self.nets.pop(n) for n in list(self.nets) if n in self._frozen}
        Method.setup(self, fabric)
        for name, net in frozen.items():
            self.nets[name] = fabric.to_device(net).eval()
        self.nets = {n: self.nets[n] for n in self._order}


@METHODS.register("teacher")
class DistillTeacher(_FrozenSetup, Method):
    """Encoder-decoder trained to reconstruct normal-dose images (the distillation teacher).

    Args:
        net: the family network spec (autoencoder, nafnet, resnet or unet, with its keyword arguments).
        skips: decoder sees the encoder's skip features (None: only for U-Net).
        lr, betas: Adam (2e-4 as in the anatomy-aware project).
        alpha: SSIM weight: loss = L1 + alpha (1 - SSIM).
    """

    name = "teacher"
    inference_net = "net"

    def __init__(
        self,
        net: NetSpec = DEFAULT_FAMILY,
        skips: bool | None = None,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        alpha: float = 0.2,
    ) -> None:
        super().__init__()
        model = build_network({"name": "encdec", "family": dict(net), "skips": skips}, where="args.net")
        self.add_net("net", model, _adam(list(model.parameters()), lr, betas))
        self._order = ["net"]
        self.loss_fn = build_loss("l1_ssim", where="loss", alpha=float(alpha))

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """Reconstruct ``batch["nd"]`` (B, C, H, W) from itself. Returns ``{"loss"}``."""
        net, opt = self.nets["net"], self.optimizers["net"]
        nd = batch["nd"]
        opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(net(nd).float(), nd.float())
        self.backward(loss)
        opt.step()
        return {"loss": float(loss.detach())}


def load_teacher(path: str) -> EncoderDecoder:
    """The teacher network of a ``teacher`` run / checkpoint folder / weights file (CPU, eval mode)."""
    from ldct.models.files import load_inference_network

    net, meta, _ = load_inference_network(path, prefer="last")
    if meta.get("method") != "teacher" or not isinstance(net, EncoderDecoder):
        raise LdctError(
            f"not a distillation teacher (method {meta.get('method')!r}); train one first with "
            "`ldct train distill_teacher ...`", path)
    return net


@METHODS.register("distill")
class Distill(_FrozenSetup, Method):
    """Student encoder (low dose + dose -> the teacher's encoding of the normal dose) + teacher's decoder.

    Args:
        teacher: run folder, checkpoint folder or weights file of a trained ``teacher`` run.
        dose_conditioned: modulate the student's encoder stages by the dose (the ablation turns it off).
        lambda_lat: weight of the latent (and, for skip families, skip-feature) MSE.
        lambda_rec: weight of L1(decoded student encoding, normal dose).
        lambda_feat: weight of the layer-wise MSE on the encoder's stage outputs (families with stages).
        lambda_prior: weight of the anatomy-prior feature loss (0: off).
        prior_weights: safetensors file / ldct run of the prior network (None: the teacher's encoder).
        prior_network: network spec of ``prior_weights`` (None: read from its metadata).
        prior_net: sub-network of an ldct checkpoint to use as the prior (e.g. "net.net" for a teacher run).
        finetune_decoder: train the decoder too (default: keep the teacher's decoder frozen).
        init_from_teacher: start the student encoder from the teacher's weights (else random init).
        dose_balanced: weight each sample's loss terms by ``mean_batch(e) / e``, ``e`` its low-dose input's
            L1 error (detached): every dose counts by its *relative* improvement, so the noisiest level no
            longer dominates the gradient and high doses are not traded away.
        output: what the student decodes (ldct's addition; see :class:`~ldct.models.encdec.EncoderDecoder`):
            ``"decoder"`` (the original method: the decoded encoding) or ``"residual"``
            (``x + decoder(student encoding) - teacher(x)``: the teacher's reconstruction error cancels and an
            untrained student returns its input).
        blend: share of the input kept in the output, ``out = w x + (1 - w) decoded`` (ldct's addition):
            ``"none"`` (the original method), ``"dose"`` (``w`` = the dose fraction: the least-squares estimate
            of a normal dose that keeps its own noise; the decoded image is then asked for the clean image at
            every dose) or ``"learned"`` (``w`` learned per dose).
        lr, betas: Adam.
        dose_hidden: width of the dose MLP.
    """

    name = "distill"
    inference_net = "student"

    def __init__(
        self,
        teacher: str,
        dose_conditioned: bool = True,
        lambda_lat: float = 1.0,
        lambda_rec: float = 1.0,
        lambda_feat: float = 0.0,
        lambda_prior: float = 0.0,
        prior_weights: str | None = None,
        prior_network: dict[str, Any] | None = None,
        prior_net: str | None = None,
        finetune_decoder: bool = False,
        init_from_teacher: bool = True,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        dose_hidden: int = 64,
        output: str = "decoder",
        blend: str = "none",
        dose_balanced: bool = False,
    ) -> None:
        super().__init__()
        if not teacher:
            raise LdctError("args.teacher: give the teacher's run folder (train it with `ldct train "
                            "distill_teacher ...`, then --set args.teacher=RUN_DIR)")
        for k, v in (("lambda_lat", lambda_lat), ("lambda_rec", lambda_rec), ("lambda_feat", lambda_feat),
                     ("lambda_prior", lambda_prior)):
            if not v >= 0:
                raise LdctError(f"args.{k} must be >= 0, got {v!r}")
        self.teacher_path = str(teacher)
        t = load_teacher(teacher)
        t.requires_grad_(False).eval()
        self.dose_conditioned = bool(dose_conditioned)
        student = build_network({"name": "encdec", "family": t.family, "skips": t.skips,
                                 "dose_conditioned": self.dose_conditioned, "dose_hidden": int(dose_hidden),
                                 "output": str(output), "blend": str(blend)},
                                where="student")
        if student.reference is not None:
            student.reference.load_state_dict(t.state_dict())
        if init_from_teacher:
            student.net.load_state_dict(t.net.state_dict())
        else:  # the decoder is still the teacher's
            dec = {id(p) for p in student.decoder_parameters()}
            names = {n for n, p in student.net.named_parameters() if id(p) in dec}
            own = student.net.state_dict()
            own.update({k: v for k, v in t.net.state_dict().items() if k in names})
            student.net.load_state_dict(own)
        if not finetune_decoder:
            student.freeze_decoder()
        trainable = [p for p in student.parameters() if p.requires_grad]
        self.add_net("student", student, _adam(trainable, lr, betas))
        self.add_net("teacher", t, frozen=True)
        self._order = ["student", "teacher"]
        self.prior: nn.Module | None = None
        if lambda_prior > 0 and prior_weights:
            self.prior = build_loss({"name": "feature", "weights": str(prior_weights), "network": prior_network,
                                     "net": prior_net, "criterion": "mse"}, where="args.prior_weights")
        self.lambdas = {"lat": float(lambda_lat), "rec": float(lambda_rec), "feat": float(lambda_feat),
                        "prior": float(lambda_prior)}
        self.finetune_decoder = bool(finetune_decoder)
        self.dose_balanced = bool(dose_balanced)
        if self.lambdas["feat"] > 0 and not student.num_skips:
            raise LdctError(f"args.lambda_feat: the {t.family['name']} family has no encoder stages to "
                            "distill layer by layer; set it to 0")

    def setup(self, fabric: Any) -> None:
        super().setup(fabric)
        if self.prior is not None:
            self.prior = self.prior.to(fabric.device)

    # the step -------------------------------------------------------------------------------------
    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every loss term for one batch (``ld``, ``nd``: (B, C, H, W); ``dose``: (B,)), with graph."""
        student, teacher = self.nets["student"], self.nets["teacher"]
        ld, nd = batch["ld"], batch["nd"]
        dose = batch.get("dose") if self.dose_conditioned else None
        with torch.no_grad():
            t_enc: Encoded = teacher.encode(nd)
        out, s_enc = student(ld, dose, return_encoding=True)
        w = None
        if self.dose_balanced:  # (B,) weights: the batch's mean input error / each sample's
            e = (ld.float() - nd.float()).abs().flatten(1).mean(1).detach().clamp_min(1e-6)
            w = e.mean() / e
        terms = {"lat": _mean_mse(teacher.distilled(s_enc), teacher.distilled(t_enc), w),
                 "rec": _weighted_l1(out, nd, w)}
        if self.lambdas["feat"] > 0:
            terms["feat"] = _mean_mse(s_enc.skips, t_enc.skips, w)
        if self.lambdas["prior"] > 0:
            if self.prior is not None:
                terms["prior"] = self.prior(out, nd)
            else:  # default anatomy prior: the normal-dose teacher's own encoder
                with torch.no_grad():
                    ref = teacher.encode(nd)
                got = teacher.encode(out)
                terms["prior"] = _mean_mse([got.latent, *got.skips], [ref.latent, *ref.skips])
        terms["loss"] = sum(self.lambdas[k] * v for k, v in terms.items())  # type: ignore[assignment]
        return terms

    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """One Adam step on the student encoder (+ decoder if fine-tuned). Returns every loss term."""
        opt = self.optimizers["student"]
        opt.zero_grad(set_to_none=True)
        terms = self.losses(batch)
        self.backward(terms["loss"])
        opt.step()
        return {k: float(v.detach()) for k, v in terms.items()}
