"""Network registry: ``@NETWORKS.register("nafnet")`` on an nn.Module class; build by name from a recipe."""

from __future__ import annotations

from torch import nn

from ldct.registry import Registry

NETWORKS: Registry[type[nn.Module]] = Registry("network")
