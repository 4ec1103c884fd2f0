"""Procedural examples for the first lessons (no download, any size).

A round, radially shaded "cap" with a printed ring and notches on a fine woven background:
enough structure (edges, texture, flat areas) to watch diffusion destroy it.
"""

from __future__ import annotations

import math

import numpy as np
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


def toy_defects(
    n: int, size: int, defect_frac: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(large, small)``, each (n, size, size), for metric examples and
    benchmarks: a ``defect_frac`` share of the images gets one large elliptic defect (radii
    size/12..size/5) and one or two small ones (radii 1..3 px); the others stay clean."""
    rng = np.random.default_rng(seed)
    large = np.zeros((n, size, size), dtype=bool)
    small = np.zeros_like(large)
    yy, xx = np.mgrid[:size, :size]

    def ellipse(rmin: float, rmax: float) -> np.ndarray:
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(rmin, rmax, 2)
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1

    for i in np.flatnonzero(rng.random(n) < defect_frac):
        large[i] = ellipse(max(size / 12, 2), max(size / 5, 3))
        for _ in range(rng.integers(1, 3)):
            small[i] |= ellipse(1, 3) & ~large[i]
    return large, small
