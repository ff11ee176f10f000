"""Per-scan adaptation: fine-tune a copy of a model on the scan it is about to denoise, self-supervised.

``ldct denoise SCAN --adapt STEPS`` (and :func:`adapt`) trains a copy of the model's network for a few
steps with the Neighbor2Neighbor objective (:mod:`ldct.losses.self_supervised`) on random patches of the
input scan itself, then denoises with the copy. No reference is needed: the model fits the noise of this
scanner, kernel and dose. The loaded model (and its file) is never changed; the copy lives in memory.
Patches, sub-sampling cells and initial state are drawn from ``seed``: two runs with the same seed give
the same result on the same machine.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ldct.data.patches import body_mask, dihedral, sample_crop
from ldct.denoiser import Denoiser
from ldct.errors import LdctError
from ldct.hu import hu_to_net
from ldct.losses.self_supervised import neighbor2neighbor_loss

#: above this noise correlation between neighbouring pixels Neighbor2Neighbor's two sub-images share noise
#: and the network learns to keep it: measured on the AAPM-Mayo quarter dose, adapting the default model
#: gained 0.4-0.6 dB on the sharp kernel (correlation -0.03 to 0.10) and lost 2.9 dB on the smooth one (0.43);
#: the bundled sample (Br38f) reads 0.50
MAX_NOISE_CORRELATION = 0.25


@dataclass
class AdaptReport:
    """What an adaptation did: steps run, seconds, why it stopped (``"steps"`` or ``"time"``), and the
    self-supervised error before and after: the Neighbor2Neighbor reconstruction term (MSE between the
    network's output on one sub-image and the other sub-image, network range) on one fixed batch of the
    scan's patches, which falls as the network removes more of the scan's noise (the regulariser is left
    out: it compares the network with itself and need not fall)."""

    steps: int
    seconds: float
    loss_before: float
    loss_after: float
    stopped_by: str
    #: the scan's noise correlation between neighbouring pixels (:func:`ldct.metrics.noise_correlation`)
    noise_correlation: float = float("nan")
    #: why the model was not adapted (None: it was)
    skipped: str | None = None

    def describe(self) -> str:
        if self.skipped:
            return f"not adapted: {self.skipped}"
        return (f"adapted to this scan: {self.steps} steps in {self.seconds:.1f} s (stopped by {self.stopped_by}), "
                f"self-supervised loss {self.loss_before:.4g} -> {self.loss_after:.4g}")


def _patches(hu: np.ndarray, n: int, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """(n, channels, size, size) HU patches of random slices of ``hu`` (z, y, x), on the body when possible,
    each under one random flip/rotation."""
    z = hu.shape[0]
    out = np.empty((n, channels, size, size), dtype=np.float32)
    for i in range(n):
        k = int(rng.integers(z))
        ks = np.clip(np.arange(k - channels // 2, k + channels // 2 + 1), 0, z - 1)
        stack = np.asarray(hu[ks], dtype=np.float32)
        crop = sample_crop(body_mask(stack[channels // 2: channels // 2 + 1], -500.0), size, rng, min_body=0.5)
        p = stack[:, crop.y: crop.y + size, crop.x: crop.x + size]
        out[i] = dihedral(p, int(rng.integers(4)), bool(rng.integers(2)))
    return out


def scan_noise_correlation(arr: np.ndarray, max_slices: int = 8) -> float:
    """Lag-1 noise correlation of up to ``max_slices`` evenly spread slices (NaN: no flat tissue, -> adapt)."""
    from ldct.metrics.noise import noise_correlation

    idx = np.unique(np.linspace(0, arr.shape[0] - 1, min(max_slices, arr.shape[0])).round().astype(int))
    c = noise_correlation(np.asarray(arr[idx], dtype=np.float32))
    return c if np.isfinite(c) else 0.0


def adapt(den: Denoiser, hu: np.ndarray, *, steps: int = 200, seconds: float | None = None, seed: int = 0,
          dose: float | None = None, patch_size: int = 96, batch_size: int = 8, lr: float = 2e-4, gamma: float = 2.0,
          device: str | torch.device = "cpu", max_correlation: float = MAX_NOISE_CORRELATION,
          progress: Callable[[int, int], None] | None = None) -> tuple[Denoiser, AdaptReport]:
    """A copy of ``den`` fine-tuned on ``hu`` ((z, y, x) HU: the scan to denoise) with the Neighbor2Neighbor
    objective for ``steps`` steps or ``seconds`` seconds, whichever comes first. ``progress(done, steps)``
    after each step. Returns (adapted denoiser on PyTorch, report). A scan whose noise correlation between
    neighbouring pixels is above ``max_correlation`` (default :data:`MAX_NOISE_CORRELATION`) is not adapted:
    ``den`` itself comes back, and the report says why (``skipped``)."""
    if den.backend != "torch":
        raise LdctError("--adapt trains the network: it runs on PyTorch (use --backend torch or auto)")
    if den.data_kind != "ct" or den.scale != 1:
        raise LdctError(f"--adapt is for CT denoisers, not for {den.name}")
    if not (isinstance(steps, int) and steps >= 1):
        raise LdctError(f"--adapt {steps!r}: give the number of adaptation steps (at least 1)")
    if seconds is not None and not seconds > 0:
        raise LdctError(f"--adapt-time {seconds!r}: must be positive seconds")
    if den.dose_conditioned and dose is None:
        raise LdctError(f"model {den.name} is dose-conditioned: give the dose to adapt it")
    arr = hu[None] if hu.ndim == 2 else hu
    size = min(patch_size, arr.shape[-1], arr.shape[-2]) // 32 * 32
    if size < 32:
        raise LdctError(f"the scan ({arr.shape[-2]}x{arr.shape[-1]}) is too small to adapt on (needs 32x32)")
    corr = scan_noise_correlation(arr)
    if corr > max_correlation:
        why = (f"the scan's noise is correlated between neighbouring pixels ({corr:.2f} > {max_correlation:g}, "
               "a smooth reconstruction kernel): Neighbor2Neighbor would learn to keep it")
        return den, AdaptReport(0, 0.0, float("nan"), float("nan"), "skipped", corr, why)
    dev = torch.device(device)
    net = copy.deepcopy(getattr(den.net, "module", den.net)).to(dev)
    if not any(p.requires_grad for p in net.parameters()):
        net.requires_grad_(True)
    adapted = Denoiser(net, window=den.window, scale=den.scale, channels=den.channels,
                       dose_conditioned=den.dose_conditioned, data_kind=den.data_kind, name=f"{den.name}+adapted",
                       source=den.source, meta=den.meta)
    adapted.strength, adapted.grain = den.strength, den.grain
    rng = np.random.default_rng([seed, 17])
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    mse = torch.nn.MSELoss()

    def fn(t: torch.Tensor) -> torch.Tensor:
        return adapted.forward(t, dose)

    held = torch.from_numpy(hu_to_net(_patches(arr, batch_size, size, den.channels,
                                               np.random.default_rng([seed, 99])), den.window)).to(dev)

    def held_loss() -> float:
        net.eval()
        with torch.no_grad():
            loss, _ = neighbor2neighbor_loss(fn, held, gamma=0.0, loss_fn=mse,
                                             generator=torch.Generator().manual_seed(seed + 1))
        return float(loss)

    before = held_loss()
    losses: list[float] = []
    t0 = time.perf_counter()
    stopped_by = "steps"
    net.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(steps):
            batch = hu_to_net(_patches(arr, batch_size, size, den.channels, rng), den.window)
            loss, _ = neighbor2neighbor_loss(fn, torch.from_numpy(batch).to(dev), gamma=gamma, loss_fn=mse,
                                             generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step + 1, steps)
            if seconds is not None and time.perf_counter() - t0 >= seconds and step + 1 < steps:
                stopped_by = "time"
                break
    seconds_used = time.perf_counter() - t0
    report = AdaptReport(steps=len(losses), seconds=seconds_used, loss_before=before, loss_after=held_loss(),
                         stopped_by=stopped_by, noise_correlation=corr)
    net.eval()
    adapted.meta = {**den.meta, "adapted": {"steps": report.steps, "seed": seed, "lr": lr, "gamma": gamma,
                                            "patch_size": size, "batch_size": batch_size}}
    return adapted, report
