"""Configs are frozen dataclasses; runs store them as JSON. Nested dataclasses and tuples
round-trip; unknown keys are refused with their names. The two configs every method shares
live here: what to train on (``DataSpec``) and how (``TrainConfig``)."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["DataSpec", "TrainConfig", "categories_of", "from_dict", "renamed", "to_dict"]

C = TypeVar("C")
PRECISIONS = ("no", "bf16", "fp16", "auto")


def to_dict(cfg: object) -> dict[str, Any]:
    return dataclasses.asdict(cfg)  # type: ignore[arg-type]


def renamed(data: dict[str, Any], old: str, new: dict[str, str]) -> dict[str, Any]:
    """A run.json entry written before a choice was renamed: each field of ``new`` that holds
    ``old`` gets its new value (a config's ``legacy`` reader calls this)."""
    hits = {field: value for field, value in new.items() if data.get(field) == old}
    return {**data, **hits} if hits else data


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    legacy = getattr(cls, "legacy", None)  # a config's reader of older run.json entries
    if callable(legacy):
        data = legacy(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; fields: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class DataSpec:
    source: str = "synthetic"
    root: str = "data/synthetic"
    category: str = "cap"  # or "all": every category of the dataset (one multi-class model)
    foreground_dir: str | None = None  # precomputed foreground masks (<stem>.png)


def categories_of(data: DataSpec) -> list[str]:
    """The categories a run trains on: one, or every category of the dataset for "all"."""
    from n2n_core.data import list_categories

    if data.category == "all":
        return list_categories(data.source, data.root)
    return [data.category]


@dataclass(frozen=True)
class TrainConfig:
    steps: int | None = 1000  # optimiser updates (each of grad_accum micro-batches)
    # if set, the length instead of steps (then None in the profiles): ceil(epochs × #train
    # images / (batch_size × grad_accum)) updates. Batches are drawn at random with
    # replacement, so an "epoch" is that many images, not one pass over each image
    epochs: int | None = None
    batch_size: int = 6  # per process; DiffusionAD: half normal, half synthetic (§4.2: 3 + 3)
    lr: float = 1e-4  # Adam (DiffusionAD §4.2); AdamW peak (DeCo-Diff §5.1)
    optimizer: str = "adam"  # "adam" | "adamw"
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    min_lr: float | None = None  # cosine decay from lr to min_lr after warm-up; None: constant
    # "epoch": the lr changes once per epoch (of ceil(#images / (batch_size × grad_accum))
    # updates), warming up over warmup_epochs as transformers' get_cosine_schedule_with_warmup
    # (lr·e/W in epoch e = 0, 1, …), as the official DeCo-Diff code steps its scheduler
    lr_per: str = "step"  # "step" | "epoch"
    warmup_epochs: int = 0
    cosine_span: float = 1.0  # the cosine spans this × the training (official DeCo-Diff: 1.5)
    # every N epochs, score the model on the TEST split and keep the best (the official
    # DiffusionAD code's choice: optimistic, and labelled so in train_info.json and reports)
    select_on_test_every: int | None = None
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 10
    # "no" | "bf16" | "fp16" | "auto": chosen by the device when a run starts (device.py; a
    # resumed run keeps its own), and recorded so in run.json
    mixed_precision: str = "no"
    grad_accum: int = 1
    gradient_checkpointing: bool = False

    @staticmethod
    def legacy(data: dict[str, Any]) -> dict[str, Any]:
        """A run.json train entry of an older n2n: ``steps=0`` beside ``epochs`` (now None);
        DiffusionAD's texture settings, once here, at their defaults (other values are moved
        to the model entry by ``run_folder``)."""
        data = dict(data)
        if data.get("epochs") and data.get("steps") == 0:
            data["steps"] = None
        for key, default in (("texture_dir", None), ("require_textures", False)):
            if key in data and data[key] == default:
                del data[key]
        return data

    def updates_per_epoch(self, items: int) -> int:
        """Optimiser updates in an epoch of ``items`` training items."""
        return math.ceil(items / (self.batch_size * self.grad_accum))

    def total_steps(self, items: int) -> int:
        """Optimiser updates for ``items`` training items: ``steps``, or ``epochs`` × the items
        / the images per update (``batch_size × grad_accum``; whole epochs with
        ``lr_per="epoch"``)."""
        if self.lr_per == "epoch":
            return self.epochs * self.updates_per_epoch(items)
        if self.epochs:
            return math.ceil(self.epochs * items / (self.batch_size * self.grad_accum))
        return self.steps

    def __post_init__(self) -> None:
        positive = {
            "batch_size": self.batch_size,
            "checkpoint_every": self.checkpoint_every,
            "log_every": self.log_every,
            "grad_accum": self.grad_accum,
        }
        if self.epochs is not None:
            positive["epochs"] = self.epochs
        if self.epochs is None or self.steps is not None:
            positive["steps"] = self.steps
        if self.select_on_test_every is not None:
            positive["select_on_test_every"] = self.select_on_test_every
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"train.{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be positive, got {self.lr!r}")
        if self.lr_per not in ("step", "epoch"):
            raise ValueError(f"train.lr_per must be 'step' or 'epoch', got {self.lr_per!r}")
        if self.lr_per == "epoch" and (self.epochs is None or self.warmup_steps):
            raise ValueError("train.lr_per='epoch' needs train.epochs and warmup_epochs, not steps")
        if self.lr_per == "step" and self.warmup_epochs:
            raise ValueError("train.warmup_epochs needs train.lr_per='epoch'")
        if not self.cosine_span >= 1:
            raise ValueError(f"train.cosine_span must be at least 1, got {self.cosine_span!r}")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(
                f"train.mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}"
            )
