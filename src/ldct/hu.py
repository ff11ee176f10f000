"""The only place that converts between Hounsfield units and network range, and defines windows.

Networks see HU clipped to a window [lo, hi] and mapped linearly to [-1, 1]. Metrics and display use
named windows given as (centre, width) or (lo, hi).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ldct.errors import LdctError


@dataclass(frozen=True)
class Window:
    """An HU interval [lo, hi]."""

    lo: float
    hi: float
    name: str = ""

    @classmethod
    def from_cw(cls, centre: float, width: float, name: str = "") -> Window:
        return cls(centre - width / 2.0, centre + width / 2.0, name)

    @property
    def centre(self) -> float:
        return (self.lo + self.hi) / 2.0

    @property
    def width(self) -> float:
        return self.hi - self.lo

    def describe(self) -> str:
        return f"{self.name} [{self.lo:g}, {self.hi:g}] HU" if self.name else f"[{self.lo:g}, {self.hi:g}] HU"


#: Display presets (centre/width): soft tissue C40/W400, lung C-600/W1500, bone C400/W1800, brain C40/W80.
DISPLAY_WINDOWS: dict[str, Window] = {
    "soft": Window.from_cw(40, 400, "soft"),
    "lung": Window.from_cw(-600, 1500, "lung"),
    "bone": Window.from_cw(400, 1800, "bone"),
    "brain": Window.from_cw(40, 80, "brain"),
}

#: Metric windows: full [-1000, 1000], soft tissue [-160, 240], chest C-600/W1500, abdomen C50/W400, head C40/W80.
METRIC_WINDOWS: dict[str, Window] = {
    "full": Window(-1000.0, 1000.0, "full"),
    "soft_tissue": Window(-160.0, 240.0, "soft_tissue"),
    "chest": Window.from_cw(-600, 1500, "chest"),
    "abdomen": Window.from_cw(50, 400, "abdomen"),
    "head": Window.from_cw(40, 80, "head"),
}

#: Default network window: [-1000, 1000] HU -> [-1, 1].
DEFAULT_NET_WINDOW = Window(-1000.0, 1000.0, "net")


def parse_window(spec: str) -> Window:
    """Parse 'soft' / 'lung' / 'bone' / 'brain' or 'C,W' (also 'C W')."""
    s = spec.strip().lower()
    if s in DISPLAY_WINDOWS:
        return DISPLAY_WINDOWS[s]
    parts = s.replace(",", " ").split()
    try:
        c, w = (float(p) for p in parts)
    except ValueError:
        raise LdctError(
            f"bad window {spec!r}: use one of {', '.join(DISPLAY_WINDOWS)} or 'C,W' (centre,width in HU)"
        ) from None
    if w <= 0:
        raise LdctError(f"bad window {spec!r}: width must be positive")
    return Window.from_cw(c, w, f"C{c:g}/W{w:g}")


def _is_tensor(x: object) -> bool:
    """True for a torch.Tensor, without importing torch (if torch isn't loaded, x can't be a tensor)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def hu_to_net(x, window: Window = DEFAULT_NET_WINDOW):
    """HU -> network range [-1, 1] (clipped to the window); numpy arrays or torch tensors."""
    scale = 2.0 / window.width
    if _is_tensor(x):
        return (x.clamp(window.lo, window.hi) - window.lo) * scale - 1.0
    return ((np.clip(x, window.lo, window.hi) - window.lo) * scale - 1.0).astype(np.float32)


def net_to_hu(y, window: Window = DEFAULT_NET_WINDOW):
    """Network range -> HU (inverse of :func:`hu_to_net` inside the window); numpy arrays or torch tensors."""
    if _is_tensor(y):
        return (y + 1.0) * (window.width / 2.0) + window.lo
    return ((np.asarray(y) + 1.0) * (window.width / 2.0) + window.lo).astype(np.float32)


def to_display(x: np.ndarray, window: Window) -> np.ndarray:
    """HU -> uint8 grey levels for a display window."""
    y = (np.clip(x, window.lo, window.hi) - window.lo) / window.width
    return np.round(y * 255.0).astype(np.uint8)
