"""Building registered networks from recipe specs, and the size caps every network spec must respect.

A network spec is ``{"name": <registered network>, **kwargs}`` (or just the name), e.g.
``{"name": "nafnet", "width": 32}``; its keyword arguments are checked against the constructor
(:func:`ldct.registry.check_spec`). Methods build their networks with :func:`build_network` so every
network carries its spec (``module.ldct_spec``) into checkpoint metadata. :func:`network_skeleton`
checks a spec against the caps below and builds it on PyTorch's ``meta`` device (no memory) before
anything real is allocated (recipes, checkpoint metadata).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ldct.errors import LdctError
from ldct.models.registry import (
    NETWORKS,  # importing ldct.models.* runs ldct/models/__init__: every network registers
)
from ldct.registry import check_spec

#: Annotation for method arguments that are network specs ({"name": ..., **kwargs}); the recipe
#: validator checks such arguments against the network's constructor.
NetSpec = dict[str, Any]

MAX_NET_WIDTH = 16384  # channels / features / hidden units of a layer (and any other integer argument)
MAX_NET_DEPTH = 1000  # layers / blocks / stages (arguments whose name says so)
MAX_NET_VALUES = 1_000_000_000  # parameters + buffers of one network (4 GB in float32)
DEPTH_WORDS = ("depth", "blk", "block", "layer", "num", "stage")
WIDTH_WORDS = ("width", "channel", "hidden", "feature")


def build_network(spec: NetSpec | str, where: str = "net") -> nn.Module:
    """Build a registered network from ``{"name": ..., **kwargs}``; the module remembers its spec.

    The returned module maps (B, C, H, W) -> (B, C, H', W') as the network defines; its resolved spec
    (all constructor arguments) is stored as ``module.ldct_spec`` for checkpoint metadata.
    """
    resolved = check_spec(NETWORKS, spec, where)
    kwargs = {k: v for k, v in resolved.items() if k != "name"}
    module = NETWORKS.get(resolved["name"])(**kwargs)
    module.ldct_spec = resolved  # type: ignore[assignment]
    return module


def check_net_values(kwargs: Mapping[str, Any], where: str, path: Any, key: str = "") -> None:
    """Bound a network spec's keyword arguments (nested mappings included): every integer in
    [0, MAX_NET_WIDTH] ([0, MAX_NET_DEPTH] for depths, blocks and layers), every float finite.
    Raises :class:`LdctError` naming ``where`` and ``path``."""
    for k, v in kwargs.items():
        name = f"{where}.{k}"
        if isinstance(v, Mapping):
            check_net_values(v, name, path, k)
            continue
        for x in v if isinstance(v, (list, tuple)) else [v]:
            if isinstance(x, bool) or x is None or isinstance(x, str):
                continue
            if isinstance(x, float) and not math.isfinite(x):
                raise LdctError(f"{name} must be a finite number, got {x!r}", path)
            if isinstance(x, int):
                deep = any(w in k.lower() for w in DEPTH_WORDS) and not any(w in k.lower() for w in WIDTH_WORDS)
                cap = MAX_NET_DEPTH if deep else MAX_NET_WIDTH
                if not 0 <= x <= cap:
                    raise LdctError(f"{name} = {x} is outside [0, {cap}] (not a network ldct can build)", path)


def network_skeleton(spec: Mapping[str, Any], where: str = "net", path: Any = None) -> Any:
    """Check a resolved network spec before anything is allocated; return the network built on PyTorch's
    ``meta`` device (parameter shapes, no memory).

    Every integer argument must lie in [0, MAX_NET_WIDTH] ([0, MAX_NET_DEPTH] for depths, blocks and
    layers), every float must be finite, and the network must have at most ``MAX_NET_VALUES``
    parameters and buffers. Raises :class:`LdctError` naming ``where`` and ``path``.
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise LdctError(f"{where} must be a network spec {{name: ..., ...}}, got {spec!r}", path)
    check_net_values({k: v for k, v in spec.items() if k != "name"}, where, path)
    try:
        with torch.device("meta"):
            net = build_network(dict(spec), where=where)
    except LdctError as exc:
        raise LdctError(str(exc), path) from None
    except Exception as exc:  # noqa: BLE001  (any constructor refusal: these arguments cannot be built)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise LdctError(f"{where}: {spec['name']} cannot be built with these arguments ({reason})", path) from None
    n = sum(t.numel() for t in net.state_dict().values())
    if n > MAX_NET_VALUES:
        raise LdctError(f"{where}: {spec['name']} with these arguments has {n:,} parameters (at most "
                        f"{MAX_NET_VALUES:,}); check its widths and depths", path)
    return net
