"""Tiled inference: cut slices into overlapping tiles, run the network per tile, blend smoothly.

Tile layout (per axis): tiles of ``tile`` pixels start every ``tile - overlap`` pixels and the last tile
ends flush with the image edge, so every pixel is covered and neighbours share at least ``overlap`` pixels.

Blending weights (per axis, then an outer product): at an edge a tile shares with a neighbour, the
outermost ``margin = round(3/8 * overlap)`` pixels get weight 0 (the network's output there sees the
artificial tile border), the next ``overlap - 2*margin`` pixels ramp up smoothly (raised cosine), and the
rest is 1. Edges on the image border are not ramped (the whole-slice network sees the same border).
The weighted sum is divided by the sum of weights, which is positive everywhere.

Consequence (tested): for a network whose receptive-field radius is at most ``margin`` pixels, tiled
inference equals whole-slice inference up to float rounding, because every pixel only takes values from
tiles in which it lies at least ``margin`` pixels away from any artificial border. For networks with a
larger receptive field (U-Net, NAFNet) the result differs slightly and the ramp hides the seams.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ldct.errors import LdctError


def check_tiling(tile: int, overlap: int) -> None:
    """Raise :class:`LdctError` for an unusable ``--tile``/``--overlap`` pair."""
    if tile < 16:
        raise LdctError(f"--tile {tile}: tiles must be at least 16 pixels")
    if overlap < 0 or 2 * overlap >= tile:
        raise LdctError(f"--overlap {overlap}: must be at least 0 and less than half the tile size ({tile})")


def margin_of(overlap: int) -> int:
    """Pixels at a shared tile edge that get weight 0 (3/8 of the overlap)."""
    return round(0.375 * overlap)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis of ``size`` pixels (one tile when it fits)."""
    if tile >= size:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def edge_weights(length: int, overlap: int, ramp_lo: bool, ramp_hi: bool) -> torch.Tensor:
    """(length,) 1-D blending weights; ``ramp_lo``/``ramp_hi``: whether that end is shared with a tile."""
    w = torch.ones(length, dtype=torch.float32)
    m = margin_of(overlap)
    r = overlap - 2 * m
    # raised-cosine ramp from ~0 to ~1 over r pixels (sampled at pixel centres)
    ramp = torch.tensor([0.5 - 0.5 * math.cos(math.pi * (i + 0.5) / r) for i in range(r)], dtype=torch.float32)
    prof = torch.cat([torch.zeros(m), ramp])
    n = min(len(prof), length)
    if ramp_lo:
        w[:n] = torch.minimum(w[:n], prof[:n])
    if ramp_hi:
        w[length - n :] = torch.minimum(w[length - n :], prof[:n].flip(0))
    return w


def tiled_forward(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    tile: int,
    overlap: int,
    scale: int = 1,
) -> torch.Tensor:
    """Run ``fn`` over overlapping tiles of ``x`` and blend the results.

    Args:
        fn: (B, C, t, t) -> (B, C', t*scale, t*scale), e.g. the denoising network.
        x: (B, C, H, W) input batch (network range).
        tile: tile side in input pixels; overlap: pixels shared by neighbouring tiles.
        scale: output/input size ratio of ``fn`` (super-resolution).
    Returns:
        (B, C', H*scale, W*scale) blended output, float32.
    """
    check_tiling(tile, overlap)
    b, _, h, w = x.shape
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return fn(x).float()
    out: torch.Tensor | None = None
    wsum = torch.zeros(h * scale, w * scale, dtype=torch.float32, device=x.device)
    for iy, y0 in enumerate(ys):
        th = min(tile, h)
        wy = edge_weights(th * scale, overlap * scale, iy > 0, iy < len(ys) - 1)
        for ix, x0 in enumerate(xs):
            tw = min(tile, w)
            wx = edge_weights(tw * scale, overlap * scale, ix > 0, ix < len(xs) - 1)
            pred = fn(x[:, :, y0 : y0 + th, x0 : x0 + tw]).float()
            if out is None:
                out = torch.zeros(b, pred.shape[1], h * scale, w * scale, dtype=torch.float32, device=x.device)
            wt = (wy[:, None] * wx[None, :]).to(x.device)
            sy, sx = y0 * scale, x0 * scale
            out[:, :, sy : sy + th * scale, sx : sx + tw * scale] += pred * wt
            wsum[sy : sy + th * scale, sx : sx + tw * scale] += wt
    assert out is not None
    return out / wsum
