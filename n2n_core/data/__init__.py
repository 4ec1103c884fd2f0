"""Datasets: readers for real layouts and the embedded synthetic data."""

from n2n_core.data.toy import toy_defects, toy_image

__all__ = ["toy_defects", "toy_image"]
