"""What every method provides: the interface the generic modules (train, evaluate, cli,
reproduce, benchmarks) use, so that none of them names a method.

A method is one object (an instance of a ``Method`` subclass) registered in
``n2n_core.methods``: its config class and profiles, ``build``, its training feed, how to load
a finished run and ``predict`` a batch. Predictions have one type for every method
(``Prediction``, like anomalib's InferenceBatch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from n2n_core.config import DataSpec, TrainConfig

__all__ = ["Ablation", "Feed", "Method", "Prediction", "Stage"]


@dataclass
class Prediction:
    """A batch's (or a dataset's) anomaly maps (N, 1, H, W) at image size, image scores (N,)
    and method-specific extras (N, ...): ``repair`` is the image the map compares with (x̂0,
    x̃0); other keys are alternative maps and their scores."""

    maps: Tensor
    scores: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    @staticmethod
    def cat(parts: list[Prediction]) -> Prediction:
        keys = parts[0].extras.keys()
        return Prediction(
            torch.cat([p.maps for p in parts]),
            torch.cat([p.scores for p in parts]),
            {k: torch.cat([p.extras[k] for p in parts]) for k in keys},
        )


class Feed:
    """Training inputs: ``len(feed)`` training items; ``feed(idx, g, device)`` the inputs of
    the model's forward for those items (the model also gets ``g``)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __call__(self, idx: Tensor, g: torch.Generator, device: object) -> tuple:
        raise NotImplementedError


@dataclass
class Stage:
    """A training stage that runs before the method's model, in the same loop (accelerate,
    atomic checkpoints in ``RUN/checkpoints/<name>``, exact resume): e.g. DeCo-Diff's small
    autoencoder. Its result is the folder ``RUN/<name>``, written by ``save`` when it ends."""

    name: str
    build: Callable[[], nn.Module]  # forward(*feed(idx, g, device), g) → (loss, parts)
    feed: Feed
    train: TrainConfig
    save: Callable[[nn.Module, Path], None]  # writes the trained model into a folder
    stream_seed: int  # seeds the generator that draws the stage's batches and noise


@dataclass(frozen=True)
class Ablation:
    """One row of a paper's ablation table as n2n reruns it: ``train``, model settings of a
    separately trained run (empty: the method's own run); ``inference``, settings at
    evaluation; ``map``, an extra map of the prediction (``Prediction.extras``, scored by
    ``score_<map>``) instead of the main one."""

    row: str  # the method column of n2n_core/data/paper_tables/<table>.csv
    train: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)
    map: str | None = None


class Method:
    """Base class of a method's description; subclasses set the class attributes and override
    ``build``, ``feed`` and ``predict`` (``load``/``finalize`` where the defaults do not fit)."""

    name: ClassVar[str]
    description: ClassVar[str]  # one line, for reports
    config: ClassVar[type]  # the model config dataclass
    profiles: ClassVar[dict[str, Any]]  # profile → model config
    train_profiles: ClassVar[dict[str, TrainConfig]]  # profile → training config
    # (profile, dataset) → training-config fields where the paper differs per dataset
    dataset_train: ClassVar[dict[tuple[str, str], dict[str, Any]]] = {}
    # (profile, dataset) → model-config fields that differ per dataset
    dataset_model: ClassVar[dict[tuple[str, str], dict[str, Any]]] = {}
    per_category: ClassVar[bool] = True  # one model per category; False: one for all
    eval_batch_size: ClassVar[int] = 16
    reproduce_notebook: ClassVar[str | None] = None  # notebook prefix that reports a target
    repair_symbol: ClassVar[str] = "repair"  # the name figures give Prediction.extras["repair"]
    # paper ablation table (n2n_core/data/paper_tables/<name>.csv) → its rows
    # (reproduce "<name>-ablations")
    ablations: ClassVar[dict[str, tuple[Ablation, ...]]] = {}

    def finalize(self, cfg: Any, categories: list[str], explicit: frozenset[str]) -> Any:
        """The config with its derived fields computed (sizes, classes). ``explicit``: the
        model fields the user set, which must not be overwritten."""
        return cfg

    def build(self, cfg: Any) -> nn.Module:
        raise NotImplementedError

    def prepare(self, cfg: Any, tcfg: TrainConfig, data: DataSpec) -> TrainConfig:
        """The training settings completed from where the data is (e.g. a texture folder
        found beside the dataset) and checked, before a run folder is written: raises a
        ValueError naming what is missing and how to get it. Unchanged by default."""
        return tcfg

    def stages(self, cfg: Any, tcfg: TrainConfig, data: DataSpec, run_dir: Path) -> list[Stage]:
        """Stages trained before the model (in this order); none by default."""
        return []

    def feed(
        self, cfg: Any, tcfg: TrainConfig, data: DataSpec, run_dir: Path, accelerator: Any
    ) -> Feed:
        raise NotImplementedError

    def load(self, run_dir: Path, cfg: Any, weights: dict[str, Tensor], device: Any) -> Any:
        """The trained model of a run folder, ready for ``predict``."""
        model = self.build(cfg)
        model.load_state_dict(weights)
        return model.to(device).eval()

    def predict(
        self, model: Any, images: Tensor, class_index: int, g: torch.Generator
    ) -> Prediction:
        """Maps and scores for images in [-1, 1] (B, 3, H, W) of the category ``class_index``
        (the run's ``classes`` order, 0 for one-category runs); ``g`` draws any noise."""
        raise NotImplementedError

    def dataset(self, cfg: Any, samples: list) -> Any:
        """The test images as the method's ``predict`` takes them (in [-1, 1])."""
        from n2n_core.data import AnomalyDataset

        return AnomalyDataset(samples, cfg.image_size, (-1.0, 1.0))

    # the official code's grid AUPRO (thresholds, FPR rescaling of metrics.aupro_grid), which
    # evaluate reports beside the exact one in eval_info.json; None: none
    official_grid_aupro: ClassVar[tuple[int, str] | None] = None
    # how the official code picks the checkpoint it reports, where that differs from n2n's
    # (the last one of a fixed training length); reports state it
    official_selection: ClassVar[str] = ""

    def class_index(self, cfg: Any, category: str) -> int:
        classes = getattr(cfg, "classes", ())
        return classes.index(category) if classes else 0

    def import_official(
        self, checkpoint: Path, config: str, classes: str, vae: str | None, data: DataSpec
    ) -> tuple[nn.Module, Any, TrainConfig]:
        """(model, model config, training config) of a checkpoint released by the method's
        authors, for ``train.adopt``; methods without released weights refuse."""
        raise ValueError(f"{self.name} has no importer for official checkpoints")

    def eval_info(self, cfg: Any) -> dict[str, Any]:
        """How a prediction was made, for eval_info.json."""
        return {}
