"""A category's training images as one uint8 tensor, the form every method's feed starts from."""

from __future__ import annotations

from pathlib import Path

import torch

from n2n_core.data.dataset import AnomalyDataset
from n2n_core.data.foreground import foreground_masks
from n2n_core.data.readers import is_texture, load_samples
from n2n_core.data.samples import DatasetError

__all__ = ["to_model_range", "training_images"]


def training_images(
    source: str,
    root: str | Path,
    category: str,
    size: int,
    cache_dir: Path | None = None,
    foreground: bool = False,
    foreground_dir: str | None = None,
    load_size: int | None = None,
    exclude: frozenset[str] = frozenset(),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A category's training images as uint8 (N, 3, S, S) and, if ``foreground`` and the
    category is an object, its foreground masks (N, 1, S, S) (else None), estimated once and
    cached under ``cache_dir`` or read from ``foreground_dir``. ``load_size``: resize there and
    crop the centre (``AnomalyDataset``). ``exclude``: images left out, as POSIX paths relative
    to ``root`` (``splits.holdout``)."""
    samples = load_samples(source, root, category, "train")
    if exclude:
        samples = [s for s in samples if s.image.relative_to(Path(root)).as_posix() not in exclude]
        if not samples:
            raise DatasetError(f"every training image of {category!r} under {root} is held out")
    fgs = None
    if foreground and not is_texture(source, category, root):
        fgs = foreground_masks(
            samples,
            cache_dir=None if cache_dir is None else cache_dir / "foreground",
            precomputed=foreground_dir,
        )
    ds = AnomalyDataset(samples, size, (0.0, 1.0), foreground=fgs, load_size=load_size)
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([(it["image"] * 255).round().to(torch.uint8) for it in items])
    fg = None if fgs is None else torch.stack([it["foreground"] > 0.5 for it in items])
    return images, fg


def to_model_range(images: torch.Tensor, device: object = None) -> torch.Tensor:
    """uint8 images (from ``training_images``) as float in [-1, 1], the range every model takes
    (x / 127.5 − 1), on ``device`` if given."""
    x = images.float() / 127.5 - 1
    return x if device is None else x.to(device)
