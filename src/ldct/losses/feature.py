"""Feature (perceptual) loss on a frozen network that ldct trained itself or that the user supplies.

No download is possible, so there is no ImageNet VGG: the feature network is any registered ldct network
(for example the normal-dose autoencoder teacher; its encoder sees CT, not photographs) loaded from a
safetensors file. The loss compares the network's activations on the prediction and on the target:
``sum over layers of mean((phi_l(pred) - phi_l(target))^2)`` (or L1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ldct.errors import LdctError
from ldct.losses.registry import LOSSES
from ldct.models.common import pad_to_multiple


class _Stop(Exception):
    """Raised by the last feature hook to skip the rest of the network's forward pass."""


def _load_network(weights: str, network: dict[str, Any] | None, net: str | None) -> nn.Module:
    """Build the feature network and load its weights (frozen, eval mode).

    ``weights``: an ldct run/checkpoint/model folder or a ``.safetensors`` file. The network spec comes
    from ``network`` or else from the checkpoint's metadata (``networks[net]``, default: the inference
    network). Keys are matched as is or under the ``<net>.`` prefix ldct checkpoints use.
    """
    from ldct.models.files import load_tensors, read_meta, resolve_weights
    from ldct.models.specs import build_network

    path = resolve_weights(Path(weights).expanduser(), prefer="best")
    tensors = load_tensors(path)
    if network is None:
        meta = read_meta(path)  # raises a clear LdctError for a file without ldct metadata
        net = net or str(meta.get("inference_net", "net"))
        network = (meta.get("networks") or {}).get(net) or (
            meta.get("network") if net == meta.get("inference_net") else None
        )
        if not network:
            known = sorted(meta.get("networks") or {})
            raise LdctError(f"feature loss: the checkpoint has no network {net!r}; networks: {known}", path)
    model = build_network(network, where="feature loss network")
    model.load_state_dict(_match_prefix(model, tensors, net, path))
    model.requires_grad_(False)
    model.eval()
    return model


def _match_prefix(
    net: nn.Module, tensors: dict[str, torch.Tensor], prefix: str | None, path: Path
) -> dict[str, torch.Tensor]:
    """The part of ``tensors`` that is ``net``'s state dict: as is, or under ``<prefix>.`` (ldct
    checkpoints store ``<net>.<param>``), or under the one ``<name>.`` prefix that matches exactly."""
    want = set(net.state_dict())
    if set(tensors) == want:
        return tensors
    heads = [prefix] if prefix else sorted({k.split(".", 1)[0] for k in tensors if "." in k})
    hits = []
    for h in heads:
        sub = {k[len(h) + 1 :]: v for k, v in tensors.items() if k.startswith(h + ".")}
        if set(sub) == want:
            hits.append((h, sub))
    if len(hits) == 1:
        return hits[0][1]
    if hits:
        raise LdctError(
            f"feature loss: several networks fit ({', '.join(h for h, _ in hits)}); choose one with 'net'",
            path,
        )
    raise LdctError(
        "feature loss: these weights do not fit the feature network"
        + (f" under {prefix!r}" if prefix else ""),
        path,
    )


@LOSSES.register("feature")
class FeatureLoss(nn.Module):
    """``loss(pred, target) -> scalar``; pred/target (B, C, H, W) in network range.

    Args:
        weights: a safetensors file (or a folder holding one, e.g. an ldct run) with the network's weights.
        network: network spec ``{"name": ..., **kwargs}``; read from the checkpoint's metadata when omitted.
        net: which sub-network of an ldct checkpoint (keys ``<net>.<param>``), e.g. "net" or "G"; found
            automatically when only one matches.
        layers: module names (``dict(network.named_modules())``) whose outputs are the features, e.g.
            ``["encoder"]`` or ``["encoder.0", "encoder.2"]``. Default: the network's ``encode(x)`` output
            when it has one, else its output.
        criterion: "mse" or "l1".
    """

    def __init__(
        self,
        *,
        weights: str,
        network: dict[str, Any] | None = None,
        net: str | None = None,
        layers: list[str] | None = None,
        criterion: str = "mse",
    ):
        super().__init__()
        if criterion not in ("mse", "l1"):
            raise LdctError(f"feature loss criterion must be 'mse' or 'l1', not {criterion!r}")
        model = _load_network(weights, network, net)
        self.network = model
        self.criterion = criterion
        self.layers = list(layers or [])
        modules = dict(model.named_modules())
        missing = [n for n in self.layers if n not in modules]
        if missing:
            raise LdctError(
                f"feature loss: the network has no module(s) {missing}; e.g. {list(modules)[1:8]}", weights
            )
        self._store: dict[str, torch.Tensor] = {}
        for n in self.layers:
            modules[n].register_forward_hook(self._hook(n))

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self._store[name] = output
            if len(self._store) == len(self.layers):
                raise _Stop

        return hook

    def train(self, mode: bool = True) -> FeatureLoss:  # the feature network stays in eval mode
        super().train(mode)
        self.network.eval()
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) -> the list of feature tensors."""
        if not self.layers:
            if hasattr(self.network, "encode"):
                multiple = int(getattr(self.network, "size_multiple", 1))
                out = self.network.encode(pad_to_multiple(x, multiple)[0] if multiple > 1 else x)
            else:
                out = self.network(x)
            flat: list[torch.Tensor] = []
            stack = [out]
            while stack:
                o = stack.pop(0)
                if isinstance(o, torch.Tensor):
                    flat.append(o)
                elif isinstance(o, (list, tuple)):
                    stack.extend(o)
            return flat
        self._store = {}
        try:
            self.network(x)
        except _Stop:
            pass
        feats = [self._store[n] for n in self.layers]
        self._store = {}
        return feats

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ft = self.features(target)
        fp = self.features(pred)
        dist = F.mse_loss if self.criterion == "mse" else F.l1_loss
        return sum(dist(a, b) for a, b in zip(fp, ft, strict=True))
