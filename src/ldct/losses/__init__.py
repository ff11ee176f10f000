"""Losses, one signature: ``loss(pred, target) -> scalar`` on (B, C, H, W) tensors in network range.

Importing this package registers every loss into :data:`ldct.losses.registry.LOSSES`; build one by name
with ``LOSSES.build("l1_ssim", alpha=0.2)``. Explicit imports, one line per module (no auto-import).
"""

from ldct.losses import adversarial as adversarial
from ldct.losses import feature as feature
from ldct.losses import pixel as pixel
from ldct.losses.registry import LOSSES as LOSSES
