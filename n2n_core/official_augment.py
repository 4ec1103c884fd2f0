"""The official DiffusionAD code's anomaly-appearance operations (data/dataset_beta_thresh.py:
ten imgaug augmenters, three drawn per anomaly, applied to the image itself and to DTD
textures alike; then the image is cut into strips that are shuffled), written in torch with an
explicit generator. Each takes and returns a (3, H, W) image in [0, 1]; ranges are imgaug's
defaults where the code gives none. ``synthesis.SynthesisConfig(augmenter="official")`` uses
them."""

from __future__ import annotations

import torch
from torch import Tensor

from n2n_core.synthesis import (
    _randint,
    _rotate,
    _uniform,
    autocontrast,
    equalize,
    invert,
    keep_bits,
    sharpen,
    solarize,
)

__all__ = ["OFFICIAL_AUGMENTATIONS", "scale_luma", "shift_hsv", "strip_shuffle"]


def gamma_per_channel(x: Tensor, g: torch.Generator) -> Tensor:
    """GammaContrast((0.5, 2.0), per_channel=True): x^γ with one γ per channel."""
    gammas = torch.tensor([_uniform(g, 0.5, 2.0) for _ in range(x.shape[0])])
    return x.clamp(0, 1) ** gammas[:, None, None]


def scale_luma(x: Tensor, mul: float, add: float) -> Tensor:
    """The luma Y of YCrCb becomes mul·Y + add with the chroma kept (R − Y and B − Y fixed),
    i.e. every channel moves by Y' − Y; ``add`` in [0, 1] units."""
    y = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    return (x + (y * (mul - 1) + add)[None]).clamp(0, 1)


def brightness(x: Tensor, g: torch.Generator) -> Tensor:
    """MultiplyAndAddToBrightness(mul=(0.8, 1.2), add=(-30, 30)) (add in 0-255 units)."""
    return scale_luma(x, _uniform(g, 0.8, 1.2), _uniform(g, -30, 30) / 255)


def hue_saturation(x: Tensor, g: torch.Generator) -> Tensor:
    """AddToHueAndSaturation((-50, 50), per_channel=True): hue moved by v_h / 255 of the
    circle, saturation by v_s / 255, the two drawn independently."""
    return shift_hsv(x, _uniform(g, -50, 50) / 255, _uniform(g, -50, 50) / 255)


def shift_hsv(x: Tensor, dh: float, ds: float) -> Tensor:
    """In HSV: hue + dh (a fraction of the circle), saturation + ds (clipped to [0, 1])."""
    r, gr, b = x.clamp(0, 1)
    v, _ = x.max(0)
    c = v - x.min(0).values
    s = torch.where(v > 0, c / v.clamp_min(1e-12), torch.zeros_like(v))
    h = torch.zeros_like(v)
    safe = c.clamp_min(1e-12)
    h = torch.where(v == r, ((gr - b) / safe) % 6, h)
    h = torch.where(v == gr, (b - r) / safe + 2, h)
    h = torch.where(v == b, (r - gr) / safe + 4, h)
    h = torch.where(c > 0, h / 6, torch.zeros_like(h))
    h, s = (h + dh) % 1.0, (s + ds).clamp(0, 1)
    k = (torch.tensor([5.0, 3.0, 1.0])[:, None, None] + h[None] * 6) % 6
    return v[None] - v[None] * s[None] * (torch.minimum(k, 4 - k).clamp(0, 1))


def solarize_half(x: Tensor, g: torch.Generator) -> Tensor:
    """Solarize(0.5, threshold=(32, 128)): with p = 0.5, values above the threshold inverted."""
    return solarize(x, g) if float(torch.rand((), generator=g)) < 0.5 else x


def posterize_1_8(x: Tensor, g: torch.Generator) -> Tensor:
    """Posterize(): keep 1-8 of the 8 bits (imgaug's default)."""
    return keep_bits(x, _randint(g, 1, 9))


def sharpness_0_2(x: Tensor, g: torch.Generator) -> Tensor:
    """pillike.EnhanceSharpness(): factor in [0, 2] against PIL's smoothing kernel."""
    return sharpen(x, _uniform(g, 0.0, 2.0))


def autocontrast_cutoff(x: Tensor, g: torch.Generator) -> Tensor:
    """pillike.Autocontrast(): cut 0-20 % of each end of every channel's histogram, then
    stretch to the full range."""
    cut = _randint(g, 0, 21) / 100
    if cut == 0:
        return autocontrast(x, g)
    flat = x.reshape(x.shape[0], -1)
    lo = torch.quantile(flat, cut, dim=1)[:, None, None]
    hi = torch.quantile(flat, 1 - cut, dim=1)[:, None, None]
    return ((x - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)


def rotate_45(x: Tensor, g: torch.Generator) -> Tensor:
    """Affine(rotate=(-45, 45)): bilinear, about the centre, black outside."""
    return _rotate(x, _uniform(g, -45, 45))


OFFICIAL_AUGMENTATIONS = {
    f.__name__: f
    for f in (
        gamma_per_channel, brightness, sharpness_0_2, hue_saturation, solarize_half,
        posterize_1_8, invert, autocontrast_cutoff, equalize, rotate_45,
    )
}  # fmt: skip


def strip_shuffle(x: Tensor, g: torch.Generator, strips: int = 8) -> Tensor:
    """The official self-augmentation's rearrangement: cut the width into ``strips`` strips,
    shuffle the even-indexed and the odd-indexed ones among themselves and put the even ones
    first; then cut the height into strips, shuffle them, and do the same even / odd regrouping."""

    def cut(t: Tensor, dim: int) -> list[Tensor]:
        return list(torch.split(t, max(1, t.shape[dim] // strips), dim=dim))

    def regroup(parts: list[Tensor], dim: int) -> Tensor:
        even, odd = parts[::2], parts[1::2]
        even = [even[i] for i in torch.randperm(len(even), generator=g)]
        odd = [odd[i] for i in torch.randperm(len(odd), generator=g)]
        return torch.cat(even + odd, dim=dim)

    x = regroup(cut(x, 2), 2)
    rows = cut(x, 1)
    rows = [rows[i] for i in torch.randperm(len(rows), generator=g)]
    return regroup(rows, 1)
