"""What the four GAN methods share: building networks and losses from recipe specs, freezing a
discriminator, losses built on first use (a feature loss reads a weights file), and the image pools
that belong to the training state.

Logged scalars follow the engine's convention: ``loss`` (the generator's total, shown in the progress
bar), ``loss_g`` and ``loss_d`` (every ``loss*`` key is checked for NaN/Inf and drawn in the loss
figure), and components without the prefix (``g_adv``, ``g_content``, ``d_real``, ``d_fake``, ...).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ldct.errors import LdctError
from ldct.losses.adversarial import ImagePool
from ldct.losses.build import build_loss
from ldct.methods.base import Method
from ldct.models.specs import NetSpec, build_network
from ldct.registry import signature_params, split_spec

#: Annotation for method arguments that are loss specs (a name, or {"name": ..., **kwargs}); the recipe
#: validator checks them against ``ldct.losses.LOSSES``.
LossSpec = str | dict[str, Any]


def build_net(spec: NetSpec | str, where: str, **force: Any) -> nn.Module:
    """Build a registered network from its recipe spec, with ``force`` keys (e.g. ``in_channels`` of a
    discriminator, which follows from the generator) overriding the spec's."""
    name, kwargs = split_spec(spec, where)
    return build_network({"name": name, **kwargs, **force}, where)


def spec_value(spec: NetSpec | str, key: str, default: Any) -> Any:
    """A keyword of a network spec, or the network class's default for it."""
    import ldct.models  # noqa: F401
    from ldct.models.registry import NETWORKS

    name, kwargs = split_spec(spec, "network")
    if key in kwargs:
        return kwargs[key]
    p = signature_params(NETWORKS.get(name)).get(key)
    return default if p is None or p.default is inspect.Parameter.empty else p.default


def accepts(spec: NetSpec | str, key: str) -> bool:
    """Whether the spec's network constructor takes keyword ``key``."""
    import ldct.models  # noqa: F401
    from ldct.models.registry import NETWORKS

    return key in signature_params(NETWORKS.get(split_spec(spec, "network")[0]))


def out_channels_of(spec: NetSpec | str) -> int:
    """The output channels a generator spec produces (``out_channels`` or, when None, ``in_channels``)."""
    out = spec_value(spec, "out_channels", None)
    return int(spec_value(spec, "in_channels", 1) if out is None else out)


class LazyLoss:
    """A loss built from its spec on first use: a feature loss reads a weights file, which only training
    needs (``ldct evaluate``/``denoise`` rebuild the method from the recipe without it).

    ``loss(pred, target) -> scalar`` with (B, C, H, W) tensors.
    """

    def __init__(self, spec: LossSpec, where: str):
        self.spec = spec
        self.where = where
        self.module: nn.Module | None = None

    def build(self, device: torch.device | str) -> nn.Module:
        if self.module is None:
            self.module = build_loss(self.spec, self.where).to(device)
        return self.module

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.build(pred.device)(pred, target)


def set_requires_grad(net: nn.Module, flag: bool) -> None:
    """Freeze (False) or unfreeze (True) every parameter of ``net``."""
    for p in net.parameters():
        p.requires_grad_(flag)


def adam(net: nn.Module, lr: float, betas: tuple[float, float] | list[float]) -> torch.optim.Adam:
    return torch.optim.Adam(net.parameters(), lr=lr, betas=(float(betas[0]), float(betas[1])))


class GANMethod(Method):
    """A :class:`Method` with lazily built losses and image pools that belong to the training state."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: dict[str, LazyLoss] = {}
        self.pools: dict[str, ImagePool] = {}

    def add_loss(self, name: str, spec: LossSpec | None, where: str) -> None:
        if spec is not None:
            self.losses[name] = LazyLoss(spec, where)

    def setup(self, fabric: Any) -> None:
        """Fabric setup of the networks; build the losses now so a bad feature-loss file fails early."""
        super().setup(fabric)
        for loss in self.losses.values():
            loss.build(fabric.device)

    # training state beyond weights and optimizers ------------------------------------------------
    def extra_state(self) -> dict[str, torch.Tensor]:
        """The image pools, as ``pool.<name>.images`` (N, C, H, W) tensors."""
        out: dict[str, torch.Tensor] = {}
        for name, pool in self.pools.items():
            for k, v in pool.state_dict().items():
                out[f"pool.{name}.{k}"] = v
        return out

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        device = next(self.parameters_of(self.inference_net)).device
        for name, pool in self.pools.items():
            prefix = f"pool.{name}."
            pool.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, device
            )


def check_output_size(fake: torch.Tensor, target: torch.Tensor, who: str) -> None:
    """A generator output (B, C, H, W) must match its target; say how to fix a scale mismatch."""
    if fake.shape[1:] != target.shape[1:]:
        raise LdctError(
            f"{who}: the generator makes {tuple(fake.shape[1:])} images but the targets are "
            f"{tuple(target.shape[1:])} (C, H, W); check the networks' in/out_channels and, for "
            "super-resolution, that data.downsample equals args.scale"
        )
