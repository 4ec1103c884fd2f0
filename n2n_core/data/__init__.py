"""Datasets: one sample model, readers for every layout, one torch Dataset, the embedded
synthetic and photographic benchmarks, foreground masks and downloads."""

from n2n_core.data.dataset import AnomalyDataset, load_image, load_mask, mask_values
from n2n_core.data.foreground import estimate_foreground, foreground_masks, looks_like_texture
from n2n_core.data.readers import SOURCES, is_texture, list_categories, load_samples
from n2n_core.data.samples import DatasetError, Sample
from n2n_core.data.synthetic import ensure_synthetic
from n2n_core.data.toy import toy_defects, toy_image
from n2n_core.paths import default_root

__all__ = [
    "SOURCES",
    "AnomalyDataset",
    "DatasetError",
    "Sample",
    "default_root",
    "ensure_synthetic",
    "estimate_foreground",
    "foreground_masks",
    "is_texture",
    "list_categories",
    "load_image",
    "load_mask",
    "load_samples",
    "looks_like_texture",
    "mask_values",
    "toy_defects",
    "toy_image",
]
