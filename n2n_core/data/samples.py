"""The one sample model every reader produces, and the error every reader raises."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "DatasetError", "Sample", "list_images"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


class DatasetError(ValueError):
    """A dataset on disk is not what a reader expects; the message names the path."""


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path | None  # None for normal images (an all-zero mask)
    label: int  # 0 normal, 1 anomalous
    defect: str  # "good" for normal images
    category: str
    split: str  # "train" or "test"


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (any case of the usual extensions), sorted by name;
    hidden files (macOS ``._*`` metadata, editors' backups) are not images."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
