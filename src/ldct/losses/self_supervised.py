"""Self-supervised denoising objectives: training targets made from the noisy data alone.

- **Neighbor2Neighbor** (Huang et al., CVPR 2021): each 2x2 cell of a noisy image gives one pixel to a
  first sub-image and a *different, adjacent* pixel to a second one (:func:`neighbor_pairs`); the network
  maps the first sub-image to the second (the two share the signal up to one pixel of shift, and no
  pixel's noise), and a regulariser ties it to the network's full-resolution output:
  ``|f(g1(y)) - g2(y)|^2 + gamma |f(g1(y)) - g2(y) - (g1(f(y)) - g2(f(y)))|^2`` with ``f(y)`` not
  back-propagated (:func:`neighbor2neighbor_loss`).
- **Noise2Noise from adjacent slices** (Lehtinen et al., 2018): in a thin contiguous series neighbouring
  slices share the anatomy but not the noise, so the mean of slices z-1 and z+1 is a noisy target for slice z
  (:func:`noise2noise_loss`).

Both assume noise that is independent between the two halves: true for adjacent slices of separately
reconstructed images; for neighbouring pixels only approximately (CT noise is correlated over the
reconstruction kernel's width; sharp kernels are closer to the assumption than smooth ones).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: the 8 ordered pairs of edge-adjacent positions in a 2x2 cell (index = 2 * row + column)
ADJACENT_PAIRS = torch.tensor([[0, 1], [0, 2], [1, 0], [1, 3], [2, 0], [2, 3], [3, 1], [3, 2]])


def neighbor_pairs(batch: int, h2: int, w2: int, *, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Random positions (B, h2, w2) in [0, 4) of the first and second sub-image's pixel in each 2x2 cell:
    always different and edge-adjacent, so the two sub-images share no pixel."""
    k = torch.randint(0, len(ADJACENT_PAIRS), (batch, h2, w2), generator=generator)
    pairs = ADJACENT_PAIRS[k]
    return pairs[..., 0].to(device), pairs[..., 1].to(device)


def subsample(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H//2, W//2): the pixel at ``pos`` (B, H//2, W//2) of each 2x2 cell (the same
    position for every channel)."""
    b, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    cells = x[..., : 2 * h2, : 2 * w2].reshape(b, c, h2, 2, w2, 2).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h2, w2, 4)
    idx = pos[:, None, :, :, None].expand(b, c, h2, w2, 1)
    return torch.gather(cells, -1, idx)[..., 0]


def neighbor2neighbor_loss(net: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, *, gamma: float,
                           loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The Neighbor2Neighbor objective of a noisy (B, C, H, W) batch ``y`` (H, W even, network range).
    Returns (loss, {"rec": ..., "reg": ...}); centre channels are compared (2.5D input)."""
    b, c, h, w = y.shape
    p1, p2 = neighbor_pairs(b, h // 2, w // 2, generator=generator, device=y.device)
    mid = c // 2
    with torch.no_grad():
        fy = _centre(net(y).float())
    g1, g2 = subsample(y, p1), subsample(y[:, mid: mid + 1], p2)
    out = _centre(net(g1).float())
    rec = loss_fn(out, g2.float())
    reg = loss_fn(out - g2.float(), subsample(fy, p1) - subsample(fy, p2))
    loss = rec + gamma * reg
    return loss, {"rec": float(rec.detach()), "reg": float(reg.detach())}


def noise2noise_loss(net: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, target: torch.Tensor, *,
                     loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Noise2Noise: ``loss_fn(net(y), target)`` with ``target`` an independent noisy view of the same signal
    (the adjacent slice); the centre channel of ``target`` is used (2.5D input)."""
    return loss_fn(_centre(net(y).float()), _centre(target.float()))


def _centre(t: torch.Tensor) -> torch.Tensor:
    """The centre channel (B, 1, H, W) of a (B, C, H, W) batch (the slice itself of a 2.5D stack)."""
    c = t.shape[1]
    return t[:, c // 2: c // 2 + 1]
