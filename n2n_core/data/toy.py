"""A single procedurally drawn image for the first lessons (no download, any size).

A round, radially shaded "cap" with a printed ring and notches on a fine woven background:
enough structure (edges, texture, flat areas) to watch diffusion destroy it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def toy_image(size: int = 64, seed: int = 0) -> Tensor:
    """A deterministic RGB image in [-1, 1], shape (3, size, size)."""
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    g = torch.Generator().manual_seed(seed)
    ax = torch.linspace(-1, 1, size, dtype=torch.float64)
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    r, theta = torch.hypot(x, y), torch.atan2(y, x)
    weave = 0.5 + 0.15 * torch.sin(12 * math.pi * x) * torch.sin(12 * math.pi * y)
    background = torch.stack([weave * 0.55, weave * 0.6, weave * 0.7])
    rot = float(torch.rand((), generator=g, dtype=torch.float64)) * 2 * math.pi
    radius = 0.62 + 0.03 * torch.cos(8 * (theta - rot))  # notched rim
    shade = (1.1 - 0.6 * r) * (1 + 0.15 * x)
    ring = ((r - 0.38).abs() < 0.05).double()
    cap = torch.stack([0.85 * shade, 0.35 * shade + 0.4 * ring, 0.2 * shade + 0.5 * ring])
    inside = (r < radius).double()
    img = inside * cap + (1 - inside) * background
    img = img + 0.02 * torch.randn(img.shape, generator=g, dtype=torch.float64)
    return (img.clamp(0, 1) * 2 - 1).float()
