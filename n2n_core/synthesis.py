"""Training-time anomaly synthesis of DiffusionAD §3.3 (Fig. 4), vectorised in torch.

    N  a normal image, (3, H, W) in [0, 1]
    P  a random region: rotated Perlin noise thresholded at 0.5, redrawn until non-empty
    F  the object foreground (textures: a random part of the image)
    M  = P ⊙ F, the ground-truth mask
    A  the anomaly appearance: self-augmentation of N (two random ops from {equalize,
       sharpness, auto-contrast, solarize, posterize, invert, gamma-contrast}, then an 8 × 8
       grid rearrangement), or a texture image (DTD folder, else procedural textures)
    S  = β (M ⊙ N) + (1 − β)(M ⊙ A) + M̄ ⊙ N          (DiffusionAD Eq. 9)

Every random choice comes from an explicit ``torch.Generator``: same seed, same output.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as Fn
from torch import Tensor

from n2n_core.config import renamed

__all__ = [
    "AUGMENTATIONS",
    "AnomalySynthesizer",
    "Synthesis",
    "SynthesisConfig",
    "TextureSource",
    "blend",
    "grid_shuffle",
    "perlin_noise",
    "procedural_texture",
]


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """An int in [lo, hi)."""
    return int(torch.randint(lo, hi, (), generator=g))


# ------------------------------------------------------------------------------ Perlin
def _fade(t: Tensor) -> Tensor:
    return t * t * t * (t * (6 * t - 15) + 10)  # Perlin's quintic 6t⁵ − 15t⁴ + 10t³


def perlin_noise(h: int, w: int, res: tuple[int, int], g: torch.Generator) -> Tensor:
    """2-D gradient (Perlin) noise with ``res = (ry, rx)`` lattice cells per axis, (h, w),
    values roughly in [-1, 1] (scaled by √2 as in DRAEM's generator)."""
    ry, rx = res
    angles = 2 * math.pi * torch.rand(ry + 1, rx + 1, generator=g)
    grads = torch.stack([torch.sin(angles), torch.cos(angles)], -1)  # (y, x) components
    y = torch.arange(h, dtype=torch.float32) * ry / h
    x = torch.arange(w, dtype=torch.float32) * rx / w
    yi, xi = y.floor().long(), x.floor().long()
    fy, fx = (y - yi)[:, None], (x - xi)[None, :]

    def corner(dy: int, dx: int) -> Tensor:
        gr = grads[yi + dy][:, xi + dx]  # (h, w, 2)
        return gr[..., 0] * (fy - dy) + gr[..., 1] * (fx - dx)

    u, v = _fade(fy), _fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), v)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), v)
    return math.sqrt(2) * torch.lerp(top, bottom, u)


def _rotate(x: Tensor, degrees: float) -> Tensor:
    """Rotate an (h, w) map or a (c, h, w) image about its centre (bilinear), zeros outside."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
    img = x.reshape(1, -1, *x.shape[-2:])
    grid = Fn.affine_grid(theta[None], list(img.shape), align_corners=False)
    return Fn.grid_sample(img, grid, align_corners=False).reshape(x.shape)


# -------------------------------------------------------------------- self-augmentation
def _to_levels(x: Tensor) -> Tensor:
    return (x.clamp(0, 1) * 255).round().long()


def equalize(x: Tensor, g: torch.Generator) -> Tensor:
    """Per-channel histogram equalisation on 8-bit levels, PIL's ``ImageOps.equalize`` table:
    step = (N − count of the top level) // 255, lut[i] = (step // 2 + #pixels below i) // step."""
    c, h, w = x.shape
    q = _to_levels(x).reshape(c, -1)
    hist = torch.bincount((q + 256 * torch.arange(c)[:, None]).reshape(-1), minlength=256 * c)
    hist = hist.view(c, 256)
    top = 255 - torch.flip(hist > 0, [1]).int().argmax(1)  # highest occupied level
    step = (h * w - hist.gather(1, top[:, None])) // 255  # (c, 1)
    below = hist.cumsum(1) - hist
    lut = torch.div(step // 2 + below, step.clamp_min(1), rounding_mode="floor").clamp(max=255)
    identity = (step == 0) | ((hist > 0).sum(1, keepdim=True) <= 1)
    lut = torch.where(identity, torch.arange(256).expand(c, 256), lut)
    return lut.gather(1, q).reshape(c, h, w).float() / 255


def sharpen(x: Tensor, factor: float) -> Tensor:
    """PIL's ``ImageEnhance.Sharpness``: blend with its smoothing kernel by ``factor``."""
    k = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13
    blur = Fn.conv2d(Fn.pad(x[:, None], (1, 1, 1, 1), mode="replicate"), k[None, None])[:, 0]
    return (blur + factor * (x - blur)).clamp(0, 1)


def sharpness(x: Tensor, g: torch.Generator) -> Tensor:
    """Unsharp enhancement, factor in [1.5, 3]."""
    return sharpen(x, _uniform(g, 1.5, 3.0))


def autocontrast(x: Tensor, g: torch.Generator) -> Tensor:
    lo = x.amin((1, 2), keepdim=True)
    hi = x.amax((1, 2), keepdim=True)
    return ((x - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)


def solarize(x: Tensor, g: torch.Generator) -> Tensor:
    """Invert every value above a threshold in [32, 128] / 255."""
    th = _uniform(g, 32, 128) / 255
    return torch.where(x >= th, 1 - x, x)


def keep_bits(x: Tensor, bits: int) -> Tensor:
    """The ``bits`` most significant of each 8-bit level."""
    step = 2 ** (8 - bits)
    return (torch.div(_to_levels(x), step, rounding_mode="floor") * step).float() / 255


def posterize(x: Tensor, g: torch.Generator) -> Tensor:
    """Keep 2-4 of 8 bits."""
    return keep_bits(x, _randint(g, 2, 5))


def invert(x: Tensor, g: torch.Generator) -> Tensor:
    return 1 - x


def gamma_contrast(x: Tensor, g: torch.Generator) -> Tensor:
    """x^γ with γ in [0.5, 2]."""
    return x.clamp(0, 1) ** _uniform(g, 0.5, 2.0)


AUGMENTATIONS = {
    f.__name__: f
    for f in (equalize, sharpness, autocontrast, solarize, posterize, invert, gamma_contrast)
}


def grid_shuffle(x: Tensor, g: torch.Generator, grid: int = 8) -> Tensor:
    """Cut (C, H, W) into grid × grid tiles and reassemble them in a random order."""
    c, h, w = x.shape
    if h % grid or w % grid:
        raise ValueError(f"image size {h}x{w} must be divisible by grid={grid}")
    th, tw = h // grid, w // grid
    tiles = x.reshape(c, grid, th, grid, tw).permute(1, 3, 0, 2, 4).reshape(grid * grid, c, th, tw)
    tiles = tiles[torch.randperm(grid * grid, generator=g)]
    return tiles.reshape(grid, grid, c, th, tw).permute(2, 0, 3, 1, 4).reshape(c, h, w)


# ----------------------------------------------------------------------------- textures
def procedural_texture(h: int, w: int, g: torch.Generator) -> Tensor:
    """A random texture (3, h, w) in [0, 1] from code alone: stripes, checks, dots or marble
    in two random colours with colour noise; the offline stand-in for DTD."""
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    a = _uniform(g, 0, math.pi)
    u, v = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
    period = _uniform(g, 4, 24)
    kind = _randint(g, 0, 4)
    if kind == 0:  # stripes
        t = 0.5 + 0.5 * torch.sin(2 * math.pi * u / period)
    elif kind == 1:  # checks
        t = ((torch.floor(u / period) + torch.floor(v / period)) % 2).float()
    elif kind == 2:  # dots
        d = torch.hypot((u % period) - period / 2, (v % period) - period / 2)
        t = (d < period * _uniform(g, 0.2, 0.45)).float()
    else:  # marble
        n = perlin_noise(h, w, (4, 4), g)
        t = 0.5 + 0.5 * torch.sin(2 * math.pi * u / (period * 3) + 4 * n)
    c0, c1 = torch.rand(3, generator=g), torch.rand(3, generator=g)
    tex = c0[:, None, None] * (1 - t) + c1[:, None, None] * t
    return (tex + 0.05 * torch.randn(3, h, w, generator=g)).clamp(0, 1)


class TextureSource:
    """Anomaly appearances from a folder of texture images (e.g. DTD's ``images/``, searched
    recursively), or procedural textures when there is no folder. A folder that is given but
    missing or empty produces one warning that says how to get DTD, then procedural textures."""

    EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

    def __init__(self, folder: Path | str | None = None, cache_size: int = 64) -> None:
        self.files: list[Path] = []
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.files = self.images_in(self.folder)
            if not self.files:
                warnings.warn(
                    f"texture folder {self.folder} is missing or has no images; using procedural "
                    "textures instead (for DTD: python -m n2n_core download dtd --root data, "
                    "then --texture-dir data/dtd/images)",
                    stacklevel=2,
                )
        self._cache: dict[tuple[int, int, int], Tensor] = {}
        self.cache_size = cache_size

    @classmethod
    def images_in(cls, folder: Path | str) -> list[Path]:
        """The texture images under ``folder`` (recursively; none if it is not a folder)."""
        folder = Path(folder)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in cls.EXTENSIONS)

    @property
    def procedural(self) -> bool:
        return not self.files

    def sample(self, h: int, w: int, g: torch.Generator) -> Tensor:
        if self.procedural:
            return procedural_texture(h, w, g)
        i = _randint(g, 0, len(self.files))
        key = (i, h, w)
        if key not in self._cache:
            from n2n_core.data.dataset import load_image

            img = torch.from_numpy(load_image(self.files[i]).copy()).permute(2, 0, 1).float() / 255
            tex = Fn.interpolate(
                img[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False
            )[0]
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = tex.clamp(0, 1)
        return self._cache[key]


# ------------------------------------------------------------------------------ blending
def blend(normal: Tensor, appearance: Tensor, mask: Tensor, beta: float | Tensor) -> Tensor:
    """S = β (M ⊙ N) + (1 − β)(M ⊙ A) + M̄ ⊙ N  (DiffusionAD Eq. 9); ``mask`` broadcasts."""
    m = mask.to(normal.dtype)
    return beta * (m * normal) + (1 - beta) * (m * appearance) + (1 - m) * normal


@dataclass(frozen=True)
class SynthesisConfig:
    perlin_scale: tuple[int, int] = (0, 6)  # per-axis lattice size 2^a, a ∈ [lo, hi)
    threshold: float = 0.5
    max_rotation: float = 90.0  # degrees, uniform in ±max_rotation
    beta: tuple[float, float] = (0.2, 0.8)  # opacity of the normal image in M (Eq. 9)
    p_texture: float = 0.5  # objects: texture source vs self-augmentation
    n_augment: int = 2
    grid: int = 8
    # the official code's appearances (official_augment): its ten imgaug operations
    # ("official", with n_augment=3) instead of DRAEM's seven ("draem"), also applied to the
    # textures (augment_textures), and the image rearranged in strips instead of tiles
    augmenter: str = "draem"
    augment_textures: bool = False
    rearrange: str = "tiles"  # "tiles" (grid × grid) | "strips" (official_augment.strip_shuffle)
    texture_region: tuple[float, float] = (0.5, 1.0)  # textures: sides of the random part
    max_tries: int = 50

    @staticmethod
    def legacy(data: dict[str, Any]) -> dict[str, Any]:
        """A run.json entry of an older n2n, which called DRAEM's augmenter "n2n"."""
        return renamed(data, "n2n", {"augmenter": "draem"})


@dataclass
class Synthesis:
    """Every intermediate of Fig. 4, for teaching and tests."""

    N: Tensor
    P: Tensor
    F: Tensor
    M: Tensor
    A: Tensor
    S: Tensor
    beta: float
    source: str  # "self-augmentation: <op>+<op>" or "texture"


def _operations(cfg: SynthesisConfig) -> dict:
    if cfg.augmenter == "official":
        from n2n_core.official_augment import OFFICIAL_AUGMENTATIONS

        return OFFICIAL_AUGMENTATIONS
    return AUGMENTATIONS


def _augment(x: Tensor, ops: dict, n: int, g: torch.Generator) -> tuple[Tensor, list[str]]:
    """``n`` distinct operations of ``ops`` drawn at random, applied in the drawn order."""
    names = list(ops)
    picks = [names[i] for i in torch.randperm(len(names), generator=g)[:n]]
    for name in picks:
        x = ops[name](x, g)
    return x, picks


class AnomalySynthesizer:
    """Normal image (+ foreground) → synthetic anomalous image and mask (DiffusionAD §3.3)."""

    def __init__(
        self, config: SynthesisConfig = SynthesisConfig(), textures: TextureSource | None = None
    ) -> None:
        lo, hi = config.perlin_scale
        if not 0 <= lo < hi:
            raise ValueError(
                f"perlin_scale must be (lo, hi) with 0 <= lo < hi, got {config.perlin_scale}"
            )
        b0, b1 = config.beta
        if not 0 <= b0 <= b1 <= 1:
            raise ValueError(f"beta must be a range within [0, 1], got {config.beta}")
        if config.augmenter not in ("draem", "official") or config.rearrange not in (
            "tiles",
            "strips",
        ):
            raise ValueError(
                f"augmenter must be 'draem' or 'official' and rearrange 'tiles' or 'strips', got "
                f"{config.augmenter!r}, {config.rearrange!r}"
            )
        if not 1 <= config.n_augment <= len(_operations(config)):
            raise ValueError(
                f"n_augment must be in 1..{len(_operations(config))}, got {config.n_augment}"
            )
        self.config = config
        self.textures = textures if textures is not None else TextureSource()

    def perlin_region(self, h: int, w: int, g: torch.Generator) -> Tensor:
        """P: one draw of rotated, thresholded Perlin noise (may be empty)."""
        lo, hi = self.config.perlin_scale
        res = (2 ** _randint(g, lo, hi), 2 ** _randint(g, lo, hi))
        side = max(h, w)
        size = math.ceil(side / max(res)) * max(res)  # a square the lattice divides
        noise = perlin_noise(size, size, res, g)[:h, :w]
        angle = _uniform(g, -self.config.max_rotation, self.config.max_rotation)
        return _rotate(noise, angle) > self.config.threshold

    def _texture_part(self, h: int, w: int, g: torch.Generator) -> Tensor:
        lo, hi = self.config.texture_region
        ph, pw = round(h * _uniform(g, lo, hi)), round(w * _uniform(g, lo, hi))
        y0, x0 = _randint(g, 0, h - ph + 1), _randint(g, 0, w - pw + 1)
        part = torch.zeros(h, w, dtype=torch.bool)
        part[y0 : y0 + ph, x0 : x0 + pw] = True
        return part

    def region(
        self, h: int, w: int, g: torch.Generator, foreground: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(P, F, M = P ⊙ F), redrawn until M is non-empty. ``foreground=None``: a texture
        category, whose F is a random part of the image."""
        if foreground is not None and not bool(foreground.any()):
            raise ValueError("foreground mask is empty: nothing to place an anomaly on")
        for _ in range(self.config.max_tries):
            F = self._texture_part(h, w, g) if foreground is None else foreground.bool()
            P = self.perlin_region(h, w, g)
            M = P & F
            if bool(M.any()):
                return P, F, M
        raise RuntimeError(f"no non-empty anomaly region after {self.config.max_tries} tries")

    def appearance(
        self, normal: Tensor, g: torch.Generator, texture_category: bool
    ) -> tuple[Tensor, str]:
        """A and where it came from. Textures always use the texture source (as the official
        code); objects use it with probability ``p_texture``, else self-augmentation."""
        _, h, w = normal.shape
        cfg, ops = self.config, _operations(self.config)
        if texture_category or float(torch.rand((), generator=g)) < cfg.p_texture:
            texture = self.textures.sample(h, w, g)
            if not cfg.augment_textures:
                return texture, "texture"
            texture, picks = _augment(texture, ops, cfg.n_augment, g)
            return texture, "texture: " + "+".join(picks)
        a, picks = _augment(normal, ops, cfg.n_augment, g)
        if cfg.rearrange == "strips":
            from n2n_core.official_augment import strip_shuffle

            a = strip_shuffle(a, g, cfg.grid)
        else:
            a = grid_shuffle(a, g, cfg.grid)
        return a, "self-augmentation: " + "+".join(picks)

    def synthesize(
        self,
        normal: Tensor,
        g: torch.Generator,
        foreground: Tensor | None = None,
        beta: float | None = None,
    ) -> Synthesis:
        """One synthetic anomaly from ``normal`` (3, H, W) in [0, 1]."""
        if normal.dim() != 3 or normal.shape[0] != 3:
            raise ValueError(f"normal must be a (3, H, W) image, got shape {tuple(normal.shape)}")
        _, h, w = normal.shape
        if foreground is not None and foreground.shape[-2:] != (h, w):
            raise ValueError(
                f"foreground shape {tuple(foreground.shape)} does not match image {h}x{w}"
            )
        fg = foreground.reshape(h, w) if foreground is not None else None
        P, F, M = self.region(h, w, g, fg)
        A, source = self.appearance(normal, g, texture_category=fg is None)
        b = _uniform(g, *self.config.beta) if beta is None else float(beta)
        return Synthesis(normal, P, F, M, A, blend(normal, A, M, b), b, source)

    def batch(
        self, normals: Tensor, g: torch.Generator, foregrounds: Tensor | None = None,
        n_anomalous: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """The paper's batch composition: of B normal images the first B − n stay normal (zero
        masks) and the last n (default B // 2: 3 + 3 for B = 6) become synthetic anomalies.
        Returns images (B, 3, H, W), masks (B, 1, H, W) float, labels (B,) long.
        ``foregrounds``: (B, 1, H, W) or (B, H, W) for objects; None for textures."""
        b, _, h, w = normals.shape
        n = b // 2 if n_anomalous is None else n_anomalous
        if not 0 <= n <= b:
            raise ValueError(f"n_anomalous must be in 0..{b}, got {n}")
        images, masks = normals.clone(), torch.zeros(b, 1, h, w)
        labels = torch.zeros(b, dtype=torch.long)
        for i in range(b - n, b):
            fg = None if foregrounds is None else foregrounds[i].reshape(h, w) > 0.5
            s = self.synthesize(normals[i], g, fg)
            images[i], masks[i, 0], labels[i] = s.S, s.M.float(), 1
        return images, masks, labels
