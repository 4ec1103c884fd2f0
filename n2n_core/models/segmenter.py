"""The segmentation sub-network of DiffusionAD (§3.2): a U-Net (DRAEM's discriminative
network) on the channel concatenation of the input x0 and its estimate x̂0, ending in a
1-channel sigmoid anomaly map.

Paper/DRAEM configuration: encoder of 6 blocks (conv3×3-BN-ReLU ×2) of widths
64, 128, 256, 512, 512, 512 with max-pooling; decoder with bilinear upsampling and skip
concatenations. Two decoders (``SegmenterConfig.decoder``):

- ``"draem"``: DRAEM's discriminative decoder, which the official DiffusionAD code uses
  (models/Seg_subnetwork.py): each upsampling convolution narrows to the width of the level
  below the skip it meets (512, 256, 128, 64, 64), so the decoder halves as it climbs;
  28.4 M parameters at base 64 with 6 input channels. The paper and official profiles.
- ``"wide"``: the decoder n2n started with, which widens each upsampling to its skip's width
  (512, 512, 256, 128, 64): 36.9 M parameters at base 64. Kept for the smoke profile (its
  tiny segmenter is cheap either way) and for run folders made before the option existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from n2n_core.config import renamed

__all__ = ["SegmentationNet", "SegmenterConfig"]


DECODERS = ("draem", "wide")


@dataclass(frozen=True)
class SegmenterConfig:
    in_channels: int = 6
    base: int = 64
    multipliers: tuple[int, ...] = (1, 2, 4, 8, 8, 8)
    decoder: str = "wide"  # "draem" (official, paper) | "wide" (the smoke profile)

    @staticmethod
    def legacy(data: dict[str, Any]) -> dict[str, Any]:
        """A run.json entry of an older n2n, which called the wide decoder "n2n"."""
        return renamed(data, "n2n", {"decoder": "wide"})

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"segmenter.decoder must be one of {DECODERS}, got {self.decoder!r}")


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SegmentationNet(nn.Module):
    def __init__(self, cfg: SegmenterConfig = SegmenterConfig()) -> None:
        super().__init__()
        widths = [cfg.base * m for m in cfg.multipliers]
        self.encoder = nn.ModuleList()
        cin = cfg.in_channels
        for w in widths:
            self.encoder.append(_block(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(len(widths) - 1)):  # upsample, narrow, fuse with the skip
            skip = widths[level]
            out = widths[max(level - 1, 0)] if cfg.decoder == "draem" else skip
            self.up.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                    nn.Conv2d(cin, out, 3, padding=1),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                )
            )
            self.decoder.append(_block(out + skip, out))
            cin = out
        self.head = nn.Conv2d(cin, 1, 3, padding=1)
        self.depth = len(widths)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) → anomaly probabilities (B, 1, H, W); H, W divisible by
        2^(depth−1)."""
        if x.shape[-1] % 2 ** (self.depth - 1) or x.shape[-2] % 2 ** (self.depth - 1):
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} must be divisible by {2 ** (self.depth - 1)}"
            )
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for up, dec, skip in zip(self.up, self.decoder, reversed(skips[:-1]), strict=True):
            x = dec(torch.cat([up(x), skip], 1))
        return torch.sigmoid(self.head(x))
