"""Inference: whole-slice and tiled prediction, HU volumes in -> HU volumes out (streamed in slice batches)."""

from ldct.infer.predict import iter_predict, predict_volume, resolve_device
from ldct.infer.tiling import tile_starts, tiled_forward

__all__ = ["iter_predict", "predict_volume", "resolve_device", "tile_starts", "tiled_forward"]
