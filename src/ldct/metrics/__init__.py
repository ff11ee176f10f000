"""Metrics in HU: full-reference image metrics per named window (:mod:`ldct.metrics.image`) and noise
measurements, body/soft-tissue ROIs and noise power spectra (:mod:`ldct.metrics.noise`); for photographs
(intensities, not HU) :func:`photo_metrics`."""

from ldct.metrics.image import (
    compute_metrics,
    compute_metrics_batch,
    describe_metrics,
    metric_keys,
    photo_metrics,
    ssim_torch,
)
from ldct.metrics.noise import (
    NPS,
    body_mask,
    noise_correlation,
    noise_power_spectrum,
    noise_std_hu,
    soft_tissue_roi,
)

__all__ = [
    "NPS",
    "body_mask",
    "compute_metrics",
    "compute_metrics_batch",
    "describe_metrics",
    "metric_keys",
    "noise_correlation",
    "noise_power_spectrum",
    "noise_std_hu",
    "photo_metrics",
    "soft_tissue_roi",
    "ssim_torch",
]
