"""Helpers for the GAN tests: real CT crops with noise, and an optimizer-event recorder that checks
which networks each optimizer step changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from ldct.hu import hu_to_net

MAYO = ("L067_FD_3mm_smooth_0040.raw", "L067_FD_3mm_sharp_000149.raw")
# (row, col) top-left corners of 64x64 crops inside the body (liver, kidneys, spine region)
CORNERS = ((200, 160), (260, 300), (300, 200), (180, 260))


@pytest.fixture
def one_thread():
    """Tiny networks: one intra-op thread is faster than two, and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def mayo_slice(shared_data: Path, name: str) -> np.ndarray:
    """(512, 512) float32 HU of one raw Mayo L067 slice (HU = value - 1024)."""
    raw = np.fromfile(shared_data / "mayo_L067_fd_raw" / name, dtype="<u2").reshape(512, 512)
    return raw.astype(np.float32) - 1024.0


def ct_batch(
    shared_data: Path, size: int = 64, noise_hu: float = 40.0, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A batch of 4 real CT crops, (4, 1, size, size) in network range: ``nd`` the scan, ``ld`` the scan
    plus correlated Gaussian noise of ``noise_hu`` HU std."""
    rng = np.random.default_rng(seed)
    nds, lds = [], []
    for i, (r, c) in enumerate(CORNERS):
        img = mayo_slice(shared_data, MAYO[i % 2])[r : r + size, c : c + size]
        n = ndi.gaussian_filter(rng.standard_normal(img.shape), 0.7)
        n *= noise_hu / n.std()
        nds.append(hu_to_net(img))
        lds.append(hu_to_net(img + n.astype(np.float32)))
    nd = torch.from_numpy(np.stack(nds)[:, None])
    ld = torch.from_numpy(np.stack(lds)[:, None])
    return {"ld": ld, "nd": nd, "dose": torch.full((4,), 0.25)}


def photo_batch(size: int = 64, sigma: float = 0.1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two (3, size, size) crops of scikit-image's bundled retina fundus photograph in [-1, 1], and the
    same with Gaussian noise of ``sigma``."""
    from skimage import data

    img = data.retina().astype(np.float32) / 127.5 - 1.0  # (H, W, 3)
    crops = [img[600 : 600 + size, 500 : 500 + size], img[700 : 700 + size, 800 : 800 + size]]
    nd = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    g = torch.Generator().manual_seed(seed)
    ld = nd + sigma * torch.randn(nd.shape, generator=g)
    return {"ld": ld, "nd": nd, "dose": torch.ones(2)}


def params_of(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def grads_of(net: torch.nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.detach().clone() for p in net.parameters()]


def same(a: list[Any], b: list[Any]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if (x is None) != (y is None):
            return False
        if x is not None and not torch.equal(x, y):
            return False
    return True


class Recorder:
    """Record every ``zero_grad`` and ``step`` of a method's optimizers, with snapshots of every
    network's parameters and gradients around each step. Calls go through to the real optimizers."""

    def __init__(self, method: Any):
        self.method = method
        self.events: list[tuple[str, str]] = []  # ("zero" | "step", optimizer name)
        self.steps: list[dict[str, Any]] = []  # per step: name, params/grads before and after
        for name, opt in method.optimizers.items():
            self._wrap(name, opt)

    def snapshot(self) -> dict[str, Any]:
        return {
            "params": {n: params_of(net) for n, net in self.method.nets.items()},
            "grads": {n: grads_of(net) for n, net in self.method.nets.items()},
        }

    def _wrap(self, name: str, opt: Any) -> None:
        zero, step = opt.zero_grad, opt.step

        def zero_grad(*a: Any, **k: Any) -> Any:
            self.events.append(("zero", name))
            return zero(*a, **k)

        def do_step(*a: Any, **k: Any) -> Any:
            before = self.snapshot()
            out = step(*a, **k)
            self.events.append(("step", name))
            self.steps.append({"name": name, "before": before, "after": self.snapshot()})
            return out

        opt.zero_grad = zero_grad
        opt.step = do_step

    def step_names(self) -> list[str]:
        return [s["name"] for s in self.steps]

    def check_each_step_changes_only_its_net(self, net_of: dict[str, str]) -> None:
        """Every optimizer step changed its own network's parameters and no other network's."""
        for s in self.steps:
            own = net_of[s["name"]]
            for n in self.method.nets:
                unchanged = same(s["before"]["params"][n], s["after"]["params"][n])
                if n == own:
                    assert not unchanged, f"step of {s['name']} did not change {n}"
                else:
                    assert unchanged, f"step of {s['name']} changed {n}"

    def check_nothing_changes_between_steps(self) -> None:
        """No parameter moves outside an optimizer step."""
        for prev, nxt in zip(self.steps, self.steps[1:]):
            for n in self.method.nets:
                assert same(prev["after"]["params"][n], nxt["before"]["params"][n]), (
                    f"{n} changed between the {prev['name']} and {nxt['name']} steps"
                )
