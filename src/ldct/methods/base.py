"""The contract between a training method and the engine.

A :class:`Method` owns its networks, their optimizers (and schedulers) and ``training_step``; each
optimizer is zeroed, back-propagated and stepped inside ``training_step`` in one visible place. The
engine (``ldct.engine``) owns everything else: devices, precision, DDP, the loop, checkpoints, logging,
validation, NaN stops. Every method (supervised, GANs, distillation) plugs into the same engine.

Batches are dicts of tensors in network range ([-1, 1] for the default HU window):

- ``"ld"``: (B, C, h, w) low-dose input (low resolution for super-resolution methods)
- ``"nd"``: (B, C, H, W) normal-dose target (for unpaired data: an unrelated normal-dose image)
- ``"dose"``: (B,) float dose fraction of ``ld`` (1.0 when unknown)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from ldct.denoiser import Denoiser
from ldct.hu import DEFAULT_NET_WINDOW, Window
from ldct.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")


class Method:
    """Base class. Subclasses call :meth:`add_net` in ``__init__`` and implement :meth:`training_step`."""

    name: ClassVar[str] = ""
    #: name of the network that denoises (what :meth:`denoiser` wraps), e.g. "net" or "G"
    inference_net: ClassVar[str] = "net"
    #: True when the method's inference network takes a dose argument
    dose_conditioned: bool = False
    #: output/input size ratio (4 for x4 super-resolution)
    scale: int = 1

    def __init__(self) -> None:
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self._opt_net: dict[str, str] = {}
        self._frozen: set[str] = set()
        self.fabric: Any = None

    # building ---------------------------------------------------------------------------------
    def add_net(
        self,
        name: str,
        net: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        frozen: bool = False,
    ) -> None:
        """Register a network; with ``optimizer`` it is trained, with ``frozen`` it never changes."""
        self.nets[name] = net
        if optimizer is not None:
            self.optimizers[name] = optimizer
            self._opt_net[name] = name
        if frozen:
            self._frozen.add(name)
            net.requires_grad_(False)
            net.eval()

    def setup(self, fabric: Any) -> None:
        """Move nets to the device and wrap them (DDP, precision) through Lightning Fabric."""
        self.fabric = fabric
        for name, net in list(self.nets.items()):
            if name in self.optimizers:
                wrapped, opt = fabric.setup(net, self.optimizers[name])
                self.nets[name], self.optimizers[name] = wrapped, opt
            elif name in self._frozen:
                # nothing to train: DDP refuses modules without gradients, so only move it
                self.nets[name] = fabric.to_device(net)
                self.nets[name].eval()
            else:
                self.nets[name] = fabric.setup_module(net)

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate through Fabric (handles precision scaling and DDP)."""
        if self.fabric is not None:
            self.fabric.backward(loss)
        else:
            loss.backward()

    def train(self, mode: bool = True) -> None:
        for name, net in self.nets.items():
            net.train(mode and name not in self._frozen)

    def parameters_of(self, *names: str) -> Iterator[nn.Parameter]:
        for n in names:
            yield from self.nets[n].parameters()

    # the step -----------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """One optimisation step (all phases of it). Returns scalars to log; must include ``loss``."""
        raise NotImplementedError

    def on_step_end(self, step: int, max_steps: int) -> None:
        """Called after each step (learning-rate schedules)."""
        for sched in self.schedulers.values():
            sched.step()

    # inference ----------------------------------------------------------------------------------
    def denoiser(self, window: Window = DEFAULT_NET_WINDOW, channels: int = 1, *,
                 meta: dict[str, Any] | None = None) -> Denoiser:
        """The trained denoising network as a :class:`ldct.Denoiser` (the same module, not a copy: it
        follows training). ``window``/``channels`` are the data's; the method says its scale and whether
        the network takes the dose. A distillation student is self-contained (encoder + decoder)."""
        net = self.nets[self.inference_net]
        net = getattr(net, "module", net)  # unwrap Fabric/DDP
        net = getattr(net, "module", net)
        return Denoiser(net, window=window, scale=int(self.scale), channels=int(channels),
                        dose_conditioned=bool(self.dose_conditioned), name=self.name or "model",
                        meta={"method": self.name, "inference_net": self.inference_net, **(meta or {})})

    # checkpoint ---------------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        """All network weights, flattened as ``<net>.<param>`` (saved with safetensors)."""
        out: dict[str, torch.Tensor] = {}
        for name, net in self.nets.items():
            module = getattr(net, "module", net)  # unwrap Fabric/DDP
            module = getattr(module, "module", module)
            for k, v in module.state_dict().items():
                out[f"{name}.{k}"] = v.detach().cpu().contiguous()
        return out

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Training state beyond weights/optimizers/schedulers (e.g. GAN image pools), saved for exact
        resume with the optimizer state. Default: none."""
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`extra_state` returned (called on resume after the weights are loaded)."""

    def load_weights(self, weights: dict[str, torch.Tensor], strict: bool = True) -> None:
        for name, net in self.nets.items():
            module = getattr(net, "module", net)
            module = getattr(module, "module", module)
            sub = {k[len(name) + 1 :]: v for k, v in weights.items() if k.startswith(name + ".")}
            module.load_state_dict(sub, strict=strict)
