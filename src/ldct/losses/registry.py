"""Loss registry. Every loss is an nn.Module with one signature: ``loss(pred, target) -> scalar tensor``
(both (B, C, H, W) in network range)."""

from __future__ import annotations

from torch import nn

from ldct.registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("loss")
