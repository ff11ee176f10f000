"""RED-CNN: Residual Encoder-Decoder CNN (Chen et al., IEEE TMI 36(12), 2017).

Ten layers: five 5x5 convolutions without padding (each shrinks H and W by 4) and five 5x5 transposed
convolutions that grow them back, 96 channels, ReLU. Three residual shortcuts: the input is added to the
last deconvolution's output, the 2nd conv's output to the 3rd deconvolution's output and the 4th conv's
output to the 1st deconvolution's output (each followed by ReLU, as in the paper).

The paper trains on [0, 1] images and ends with a ReLU; ldct's network range is [-1, 1], so the output
is left linear by default (``final_relu=False``), otherwise air (-1) would be unreachable.
Inputs smaller than 21 px (the 20 px the five valid convolutions remove, plus one) are padded and cropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ldct.models.common import crop_to, pad_to_multiple, resolve_out_channels
from ldct.models.registry import NETWORKS


@NETWORKS.register("redcnn")
class REDCNN(nn.Module):
    """forward: (B, in_channels, H, W) -> (B, out_channels, H, W), any H, W.

    Args:
        in_channels: image channels (1 for CT, 3 for RGB).
        out_channels: defaults to ``in_channels`` (the input shortcut needs them equal).
        channels: feature width (96 in the paper).
        kernel_size: 5 in the paper (odd).
        final_relu: apply ReLU to the output as in the paper (only for [0, 1] data).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int | None = None,
        channels: int = 96,
        kernel_size: int = 5,
        final_relu: bool = False,
    ):
        super().__init__()
        out_channels = resolve_out_channels(in_channels, out_channels, True, "redcnn")
        k, c = kernel_size, channels
        self.shrink = 5 * (k - 1)
        self.min_size = self.shrink + 1  # inputs are padded to at least this (also what ONNX export pads to)
        self.final_relu = final_relu
        self.conv = nn.ModuleList([nn.Conv2d(in_channels, c, k)] + [nn.Conv2d(c, c, k) for _ in range(4)])
        self.deconv = nn.ModuleList(
            [nn.ConvTranspose2d(c, c, k) for _ in range(4)] + [nn.ConvTranspose2d(c, out_channels, k)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, 1, min_size=self.min_size)
        res1 = x
        out = F.relu(self.conv[0](x))
        out = F.relu(self.conv[1](out))
        res2 = out
        out = F.relu(self.conv[2](out))
        out = F.relu(self.conv[3](out))
        res3 = out
        out = F.relu(self.conv[4](out))
        out = self.deconv[0](out) + res3
        out = self.deconv[1](F.relu(out))
        out = self.deconv[2](F.relu(out)) + res2
        out = self.deconv[3](F.relu(out))
        out = self.deconv[4](F.relu(out)) + res1
        if self.final_relu:
            out = F.relu(out)
        return crop_to(out, size)
