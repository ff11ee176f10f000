"""Building registered losses from recipe specs (a name, or ``{"name": ..., **kwargs}``)."""

from __future__ import annotations

from typing import Any

from torch import nn

import ldct.losses  # noqa: F401  (registers losses)
from ldct.losses.registry import LOSSES
from ldct.registry import check_spec, signature_params, split_spec


def build_loss(spec: Any, where: str = "loss", **extra: Any) -> nn.Module:
    """Build a registered loss (``loss(pred, target) -> scalar``) from a name or spec.

    ``extra`` keyword arguments (e.g. ``alpha``) are passed only when the loss accepts them and the
    spec does not set them itself.
    """
    name, kwargs = split_spec(spec, where)
    if name in LOSSES:
        params = signature_params(LOSSES.get(name))
        for k, v in extra.items():
            if k in params and k not in kwargs:
                kwargs[k] = v
    resolved = check_spec(LOSSES, {"name": name, **kwargs}, where)
    return LOSSES.get(name)(**{k: v for k, v in resolved.items() if k != "name"})
