"""Notebook 12's "your own method": a baseline whose model (the mean normal image, learned by
gradient steps like any other run) is given and whose anomaly map and image score are the
student's two functions. :func:`register_baseline` plugs it into the method registry, so
``train``, ``evaluate`` and the CLI handle it like DiffusionAD or DeCo-Diff."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from n2n_core import methods
from n2n_core.config import TrainConfig
from n2n_core.data.training import to_model_range
from n2n_core.methods.base import Feed, Method, Prediction

__all__ = ["MeanImageConfig", "register_baseline"]


@dataclass(frozen=True)
class MeanImageConfig:
    image_size: int = 64


class MeanImage(nn.Module):
    def __init__(self, cfg: MeanImageConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mean = nn.Parameter(torch.zeros(1, 3, cfg.image_size, cfg.image_size))

    def forward(self, images: Tensor, g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        loss = (images - self.mean).pow(2).mean()  # minimised by the mean training image
        return loss, {"mse": loss}


class _Images(Feed):
    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __call__(self, idx: Tensor, g: torch.Generator, device: object) -> tuple[Tensor]:
        return (to_model_range(self.images[idx], device),)


class MeanImageMethod(Method):
    name = "meanimage"
    description = "distance to the mean normal image (notebook 12's exercise)"
    config = MeanImageConfig
    profiles: ClassVar = {"smoke": MeanImageConfig(), "paper": MeanImageConfig(256)}
    train_profiles: ClassVar = dict.fromkeys(
        ("smoke", "paper"), TrainConfig(steps=150, batch_size=8, lr=0.05, checkpoint_every=150)
    )

    def __init__(self, anomaly_map: Callable, image_score: Callable) -> None:
        self.anomaly_map, self.image_score = anomaly_map, image_score

    def build(self, cfg: MeanImageConfig) -> nn.Module:
        return MeanImage(cfg)

    def feed(self, cfg, tcfg, data, run_dir, accelerator) -> Feed:
        from n2n_core.data.training import training_images

        images, _ = training_images(data.source, data.root, data.category, cfg.image_size)
        return _Images(images)

    def predict(self, model, images, class_index, g) -> Prediction:
        maps = self.anomaly_map(model.mean, images)
        return Prediction(maps, self.image_score(maps))


def register_baseline(anomaly_map: Callable, image_score: Callable) -> Method:
    """Register the baseline as method ``meanimage`` with the student's map and score."""
    return methods.register(MeanImageMethod(anomaly_map, image_score))
