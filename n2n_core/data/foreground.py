"""Object foreground masks F (DiffusionAD §3.3 multiplies Perlin masks by F), estimated from
the images themselves: no segmentation model, no downloaded mask pack.

Objects in these benchmarks sit on a fairly uniform background that fills the image border.
Per image: the background colour is the median of a border band; a pixel is foreground
when its distance to that colour exceeds what the border pixels themselves show (1.5 × their
99th percentile: noise and lighting gradients stay background, while an object of several
colours, e.g. a dark body with bright pins, is kept whole, which a two-class Otsu split of
the distances would not); small specks are opened away, gaps closed, holes filled, and every
connected component at least ``min_fraction`` of the largest one kept: VisA's candle,
capsules, macaroni1/2 show 2-4 (or many) instances per image, and each of them is an object
the paper's synthetic anomalies should land on. Texture categories use the whole image.
Masks are cached as PNGs, and a folder of precomputed masks can be given instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from n2n_core.data.dataset import load_image, load_mask
from n2n_core.data.samples import DatasetError, Sample
from n2n_core.io import atomic_write_bytes

__all__ = ["estimate_foreground", "foreground_masks", "looks_like_texture"]


def estimate_foreground(
    image: np.ndarray, border: float = 0.06, min_fraction: float = 0.1
) -> np.ndarray:
    """(H, W) bool foreground of one (H, W, 3) uint8 image of one or several objects on a
    background: the components of at least ``min_fraction`` × the largest one's area."""
    h, w = image.shape[:2]
    b = max(1, round(border * min(h, w)))
    ring = np.ones((h, w), dtype=bool)
    ring[b:-b, b:-b] = False
    img = image.astype(np.float64)
    bg = np.median(img[ring], axis=0)
    dist = np.linalg.norm(img - bg, axis=2)
    dist = ndimage.uniform_filter(dist, size=3)
    fg = dist > 1.5 * np.quantile(dist[ring], 0.99)
    r = max(1, round(min(h, w) / 128))
    disk = ndimage.generate_binary_structure(2, 1)
    fg = ndimage.binary_opening(fg, disk, iterations=r)
    fg = ndimage.binary_closing(fg, disk, iterations=2 * r, border_value=0)
    fg = ndimage.binary_fill_holes(fg)
    lab, n = ndimage.label(fg)
    if n == 0:
        return np.ones((h, w), dtype=bool)  # nothing stands out: treat as texture
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_fraction * sizes.max()) + 1
    return np.isin(lab, keep)


def looks_like_texture(samples: Sequence[Sample], n: int = 8, cover: float = 0.9) -> bool:
    """Whether a category is a texture, decided from its images: on most of (up to) ``n`` of
    them the estimated foreground covers at least ``cover`` of the image — nothing stands out
    from the border, so the whole image is the subject (for the foreground F of §3.3 an object
    that cannot be told from its background is one too)."""
    picked = list(samples)[:: max(1, len(samples) // n)][:n]
    if not picked:
        raise DatasetError("no images to decide texture or object from")
    covered = [estimate_foreground(load_image(s.image)).mean() >= cover for s in picked]
    return bool(sum(covered) * 2 > len(covered))


def foreground_masks(
    samples: Sequence[Sample],
    cache_dir: Path | str | None = None,
    precomputed: Path | str | None = None,
    texture: bool = False,
) -> list[np.ndarray | None]:
    """One foreground mask per sample (None = whole image, for textures).

    ``precomputed``: a folder with ``<stem>.png`` (any non-zero pixel is foreground) for every
    image, used as given. Otherwise masks are estimated and, with ``cache_dir``, written there
    as ``<category>/<split>_<defect>_<stem>.png`` and read back on the next call.
    """
    if texture:
        return [None] * len(samples)
    out: list[np.ndarray | None] = []
    for s in samples:
        if precomputed is not None:
            path = Path(precomputed) / f"{s.image.stem}.png"
            if not path.is_file():
                raise DatasetError(f"precomputed foreground mask {path} for {s.image} is missing")
            out.append(load_mask(path))
            continue
        cached = None
        if cache_dir is not None:
            cached = Path(cache_dir) / s.category / f"{s.split}_{s.defect}_{s.image.stem}.png"
            if cached.is_file():
                out.append(load_mask(cached))
                continue
        fg = estimate_foreground(load_image(s.image))
        if cached is not None:
            import io

            buf = io.BytesIO()
            Image.fromarray(fg.astype(np.uint8) * 255).save(buf, format="PNG")
            atomic_write_bytes(cached, buf.getvalue())
        out.append(fg)
    return out
