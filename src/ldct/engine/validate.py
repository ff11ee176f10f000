"""Periodic validation during training: PSNR/SSIM/RMSE in HU windows on validation slices, sample grids.

Runs on rank 0 only, on the unwrapped networks (no DDP collectives), under the run's precision.
Metrics come from :mod:`ldct.metrics` in the soft-tissue [-160, 240] HU and full [-1000, 1000] HU
windows (data range = window width), on whole validation slices mapped back to HU with the
network window of the data (``ldct.hu.net_to_hu``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ldct.hu import Window, net_to_hu

VAL_WINDOWS = ("soft_tissue", "full")
BEST_KEY = "val/psnr_soft_tissue"


@contextlib.contextmanager
def unwrapped(method: Any) -> Iterator[None]:
    """Temporarily replace Fabric/DDP-wrapped networks by the plain modules (eval mode)."""
    saved = dict(method.nets)
    try:
        for name, net in saved.items():
            method.nets[name] = getattr(net, "module", net) if type(net).__name__ == "_FabricModule" else net
        method.train(False)
        yield
    finally:
        method.nets.update(saved)


def _centre(x: torch.Tensor) -> torch.Tensor:
    """(C, H, W) or (B, C, H, W) -> the centre channel, (H, W) / (B, H, W)."""
    return x[..., x.shape[-3] // 2, :, :]


def _item(ds: Dataset, i: int) -> dict[str, Any]:
    item = ds[i]
    return {k: (torch.as_tensor(v) if isinstance(v, (np.ndarray, torch.Tensor, float, int)) else v)
            for k, v in item.items()}


@torch.no_grad()
def validate(method: Any, val_ds: Dataset, *, fabric: Any, window: Window, max_slices: int = 0,
             keep_samples: int = 0, input_metrics: bool = True) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Score the method on validation slices.

    Each item of ``val_ds`` is a dict with ``ld`` (C, h, w) and ``nd`` (C, H, W) in network range (and
    optionally ``dose``). Returns ``(metrics, samples)``: mean ``val/<metric>_<window>`` over slices (and
    ``val/input_<metric>_<window>`` for the low-dose input when ``input_metrics``), and the first
    ``keep_samples`` slices as HU arrays ``{"ld", "out", "nd"}`` each (n, H, W).
    """
    from ldct.metrics import compute_metrics_batch

    n = len(val_ds) if not max_slices else min(len(val_ds), max_slices)
    device = fabric.device
    metric_device = device if device.type == "cuda" else None
    rows: list[dict[str, float]] = []
    in_rows: list[dict[str, float]] = []
    samples: dict[str, list[np.ndarray]] = {"ld": [], "out": [], "nd": []}
    with unwrapped(method):
        den = method.denoiser(window)
        for i in range(n):
            item = _item(val_ds, i)
            ld = item["ld"].float()[None].to(device)
            nd = item["nd"].float()[None].to(device)
            dose = item.get("dose")
            dose_t = None
            if den.dose_conditioned and dose is not None:
                dose_t = torch.as_tensor(dose, dtype=torch.float32, device=device).reshape(1)
            with fabric.autocast():
                out = den.forward(ld, dose_t)
            out = out.float()
            out_c = _centre(out) if out.shape[1] > 1 else out[:, 0]
            nd_c = _centre(nd) if nd.shape[1] > 1 else nd[:, 0]
            ld_c = _centre(ld) if ld.shape[1] > 1 else ld[:, 0]
            if ld_c.shape[-2:] != nd_c.shape[-2:]:  # super-resolution: compare the input upsampled
                ld_c = F.interpolate(ld_c[:, None], size=nd_c.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            out_hu, nd_hu, ld_hu = (net_to_hu(t, window) for t in (out_c, nd_c, ld_c))
            rows += compute_metrics_batch(out_hu, nd_hu, VAL_WINDOWS, device=metric_device)
            if input_metrics:
                in_rows += compute_metrics_batch(ld_hu, nd_hu, VAL_WINDOWS, device=metric_device)
            if len(samples["nd"]) < keep_samples and (not samples["nd"] or samples["nd"][0].shape == nd_hu.shape[1:]):
                for key, t in (("ld", ld_hu), ("out", out_hu), ("nd", nd_hu)):
                    samples[key].append(t[0].cpu().numpy())
    metrics = {f"val/{k}": float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
    if in_rows:
        metrics.update({f"val/input_{k}": float(np.mean([r[k] for r in in_rows])) for k in in_rows[0]})
    metrics["val/slices"] = float(n)
    return metrics, {k: np.stack(v) for k, v in samples.items() if v}
