"""Training images an official protocol holds out (its validation split)."""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["HOLDOUTS", "holdout"]

HOLDOUTS = ("none", "official")


@cache
def _official_mvtec() -> frozenset[str]:
    text = resources.files("n2n_core.data").joinpath("splits/decodiff_mvtec_val.txt").read_text()
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def holdout(source: str, name: str) -> frozenset[str]:
    """The training images (POSIX paths relative to the dataset root) that protocol ``name``
    keeps out of training. ``"official"``: the official DeCo-Diff validation split — 362 of
    MVTec AD's 3,629 train/good images, about 10 % per category; on VisA the official lists are
    the standard 1cls split (no validation images), elsewhere there is none."""
    if name not in HOLDOUTS:
        raise ValueError(f"holdout must be one of {HOLDOUTS}, got {name!r}")
    return _official_mvtec() if name == "official" and source == "mvtec" else frozenset()
