"""patchknn: the non-diffusion reference. Every test patch's distance to its nearest training
patch, as a map; image score = the map's maximum. Nothing is learned by gradient: "training"
stores a memory bank of training patches (as PatchCore does with CNN features; here raw pixels
by default, or the features of a registered extractor the config names).

Every diffusion number in n2n can be read against it: does the method beat a nearest-neighbour
lookup on the same images at the same resolution?
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from n2n_core.config import DataSpec, TrainConfig, categories_of
from n2n_core.data.training import to_model_range, training_images
from n2n_core.methods.base import Feed, Method, Prediction
from n2n_core.profiles import get_profile

__all__ = [
    "EXTRACTORS", "METHOD", "PROFILES", "PatchKNN", "PatchKNNConfig", "patch_distances",
    "register_extractor",
]  # fmt: skip


@dataclass(frozen=True)
class PatchKNNConfig:
    image_size: int = 256
    patch: int = 7  # odd: patches are centred on their pixel
    train_stride: int = 4  # patch centres kept from the training images, every n pixels
    test_stride: int = 2  # test patches every n pixels, the map upsampled bilinearly
    max_bank: int = 200_000  # a random subset of training patches beyond this many
    extractor: str | None = None  # a name in EXTRACTORS: images (B,3,H,W) → features (B,C,h,w)

    def __post_init__(self) -> None:
        if self.patch < 1 or self.patch % 2 == 0:
            raise ValueError(f"patch must be an odd number of pixels, got {self.patch}")
        if self.train_stride < 1 or self.test_stride < 1 or self.max_bank < 1:
            raise ValueError("train_stride, test_stride and max_bank must be positive")


PROFILES = {
    "paper": PatchKNNConfig(),
    "official": PatchKNNConfig(),  # a baseline: the same beside either diffusion profile
    "smoke": PatchKNNConfig(image_size=64, train_stride=2, test_stride=2, max_bank=50_000),
}
# beside the others' laptop runs, at the same resolution
PROFILES["laptop"] = replace(PROFILES["smoke"], image_size=get_profile("laptop").image_size)
# no optimiser: one pass over the training images (TrainConfig's seed draws the subset)
TRAIN_PROFILES = {name: TrainConfig(steps=1) for name in PROFILES}


# feature extractors by name. A run.json names one; it never names code to import, so loading
# a run folder runs nothing from it. Register yours in the session (``register_extractor``) or
# from an installed package (entry point group ``n2n_core.patchknn_extractors``).
EXTRACTORS: dict[str, Callable[[Tensor], Tensor]] = {}
ENTRY_POINTS = "n2n_core.patchknn_extractors"


def register_extractor(name: str, fn: Callable[[Tensor], Tensor]) -> None:
    """Make ``fn`` (images (B, 3, H, W) in [-1, 1] → features (B, C, h, w)) available as
    ``model.extractor=name``."""
    EXTRACTORS[name] = fn


def _extractor(name: str | None) -> Callable[[Tensor], Tensor] | None:
    if name is None:
        return None
    if name not in EXTRACTORS:
        from importlib.metadata import entry_points

        installed = {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}
        if name not in installed:
            known = sorted({*EXTRACTORS, *installed})
            raise ValueError(
                f"model.extractor {name!r} is not a registered feature extractor (registered: "
                f"{known or 'none'}); register one with "
                "n2n_core.methods.patchknn.register_extractor(name, fn)"
            )
        register_extractor(name, installed[name].load())
    return EXTRACTORS[name]


def _patches(x: Tensor, patch: int, stride: int) -> tuple[Tensor, tuple[int, int]]:
    """Patches centred every ``stride`` pixels (reflect padding): (B·h·w, C·patch²) and (h, w)."""
    r = patch // 2
    x = F.pad(x, (r, r, r, r), mode="reflect")
    cols = F.unfold(x, patch, stride=stride)  # (B, C·p², h·w)
    h = (x.shape[-2] - patch) // stride + 1
    w = (x.shape[-1] - patch) // stride + 1
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]), (h, w)


def patch_distances(queries: Tensor, bank: Tensor, chunk: int = 256) -> Tensor:
    """Euclidean distance from each query row to its nearest bank row, in chunks of queries
    (‖q‖² + ‖b‖² − 2 q·b, clamped at 0 against rounding)."""
    bank_sq = (bank * bank).sum(1)
    out = []
    for q in queries.split(chunk):
        d2 = (q * q).sum(1, keepdim=True) + bank_sq[None] - 2 * q @ bank.T
        out.append(d2.amin(1).clamp_min(0).sqrt())
    return torch.cat(out)


class PatchKNN(nn.Module):
    def __init__(self, cfg: PatchKNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("bank", torch.zeros(0, 0))
        self.extract = _extractor(cfg.extractor)

    def features(self, images: Tensor) -> Tensor:
        return images if self.extract is None else self.extract(images)

    def fit(self, feed: Feed, g: torch.Generator) -> None:
        """The memory bank: every ``train_stride``-th patch of every training image, a random
        ``max_bank`` of them if there are more."""
        cfg, rows = self.cfg, []
        for idx in torch.arange(len(feed)).split(16):
            (images,) = feed(idx, g, self.bank.device)
            rows.append(_patches(self.features(images), cfg.patch, cfg.train_stride)[0])
        bank = torch.cat(rows)
        if len(bank) > cfg.max_bank:
            bank = bank[torch.randperm(len(bank), generator=g)[: cfg.max_bank]]
        self.bank = bank.contiguous()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        self.bank = torch.empty_like(state_dict[prefix + "bank"])  # its size is the data's
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def anomaly_map(self, images: Tensor) -> Tensor:
        """(B, 1, H, W): each pixel's patch distance to the bank, at image size."""
        feats = self.features(images)
        q, (h, w) = _patches(feats, self.cfg.patch, self.cfg.test_stride)
        d = patch_distances(q, self.bank).reshape(len(images), 1, h, w)
        if (h, w) != tuple(images.shape[-2:]):
            d = F.interpolate(d, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return d


class _Feed(Feed):
    """The training images of one category, or of every category of a multi-category run."""

    def __init__(self, cfg: PatchKNNConfig, data: DataSpec, run_dir: Path) -> None:
        parts = [
            training_images(data.source, data.root, c, cfg.image_size, run_dir)[0]
            for c in categories_of(data)
        ]
        self.images = torch.cat(parts)

    def __len__(self) -> int:
        return len(self.images)

    def __call__(self, idx: Tensor, g: torch.Generator, device: object) -> tuple:
        return (to_model_range(self.images[idx], device),)


class PatchKNNMethod(Method):
    name = "patchknn"
    description = (
        "patchknn: nearest training patch distance (raw pixels), a non-diffusion reference"
    )
    config = PatchKNNConfig
    profiles = PROFILES
    train_profiles = TRAIN_PROFILES
    kind = "fitted"  # one pass over the training patches: a memory bank
    per_category = True
    eval_batch_size = 8

    def build(self, cfg: PatchKNNConfig) -> PatchKNN:
        return PatchKNN(cfg)

    def feed(
        self, cfg: PatchKNNConfig, tcfg: TrainConfig, data: DataSpec, run_dir: Path,
        accelerator: Any,
    ) -> _Feed:  # fmt: skip
        return _Feed(cfg, data, run_dir)

    def predict(
        self, model: PatchKNN, images: Tensor, class_index: int, g: torch.Generator
    ) -> Prediction:
        maps = model.anomaly_map(images)
        return Prediction(maps, maps.flatten(1).amax(1))

    def eval_info(self, cfg: PatchKNNConfig) -> dict[str, Any]:
        return {**{k: getattr(cfg, k) for k in ("patch", "test_stride")}, "image_score": "max"}


METHOD = PatchKNNMethod()
