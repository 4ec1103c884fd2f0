"""What every method provides: the interface the generic modules (train, evaluate, cli,
reproduce, benchmarks) use, so that none of them names a method.

A method is one object (an instance of a ``Method`` subclass) registered in
``n2n_core.methods``: its config class and profiles, its command-line options, ``build``, its
training feed, how to load a finished run and ``predict`` a batch. Predictions have one type
for every method (``Prediction``, like anomalib's InferenceBatch).

The contract, checked by ``Method.check`` when a method is registered (a break is a one-line
``MethodError`` naming it):

- ``name`` a lower-case identifier; ``kind`` one of ``KINDS``: ``trained`` (gradient steps:
  ``feed`` and a model whose ``forward(*inputs, g)`` returns ``(loss, parts)``), ``fitted`` (one
  pass: a model with ``fit(feed, g)``, e.g. a memory bank, whose ``load_state_dict`` accepts the
  fitted buffers whatever their size) or ``imported`` (released weights only:
  ``import_official``);
- ``config`` a dataclass with an ``image_size`` field (evaluation resizes test images to it);
- ``profiles`` and ``train_profiles`` hold a model config and a ``TrainConfig`` for the same
  profile names: ``smoke`` and ``paper`` always, ``official`` when the method has an official
  code (``n2n_core.profiles``);
- every ``Option`` sets an existing ``model.*`` / ``train.*`` setting, with a flag of its own;
  ``resources`` names fields of ``config``;
- ``build`` and ``predict`` are overridden (and ``feed`` for a trained method).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from n2n_core.config import DataSpec, TrainConfig
from n2n_core.options import TRAIN_OPTIONS, Option

__all__ = [
    "KINDS", "Feed", "Method", "MethodError", "Option", "ParamGroup", "Prediction", "Stage",
]  # fmt: skip

KINDS = ("trained", "fitted", "imported")


class MethodError(ValueError):
    """A method that breaks the contract of ``Method`` (raised when it is registered)."""


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
class ParamGroup:
    """Parameters that train at their own peak ``lr`` and, if ``schedule`` is given, with
    their own lr multiplier per optimiser step instead of the run's (``Method.param_groups``)."""

    params: list[nn.Parameter]
    lr: float
    schedule: Callable[[int], float] | None = None


class Method:
    """Base class of a method's description; subclasses set the class attributes and override
    ``build``, ``feed`` and ``predict`` (``load``/``for_categories`` where the defaults do not
    fit)."""

    name: ClassVar[str]
    description: ClassVar[str]  # one line, for reports
    kind: ClassVar[str] = "trained"  # one of KINDS
    options: ClassVar[tuple[Option, ...]] = ()  # the method's own `train` flags
    import_options: ClassVar[tuple[Option, ...]] = ()  # `import-official` flags → keywords
    config: ClassVar[type]  # the model config dataclass
    profiles: ClassVar[dict[str, Any]]  # profile → model config
    train_profiles: ClassVar[dict[str, TrainConfig]]  # profile → training config
    # (profile, dataset) → training-config fields where the paper differs per dataset
    dataset_train: ClassVar[dict[tuple[str, str], dict[str, Any]]] = {}
    # (profile, dataset) → model-config fields that differ per dataset
    dataset_model: ClassVar[dict[tuple[str, str], dict[str, Any]]] = {}
    per_category: ClassVar[bool] = True  # one model per category; False: one for all
    eval_batch_size: ClassVar[int] = 16
    repair_symbol: ClassVar[str] = "repair"  # the name figures give Prediction.extras["repair"]
    # model-config fields that ``prepare`` fills with paths on this machine which only training
    # reads (DiffusionAD's texture folder): a finished run is reused with the values it
    # recorded when they cannot be found here
    resources: ClassVar[tuple[str, ...]] = ()

    def for_categories(self, cfg: Any, categories: list[str], explicit: frozenset[str]) -> Any:
        """The config of a run on these categories. A model conditioned on the category
        records its vocabulary here (a setting: a loaded model maps names to ids without the
        dataset); ``explicit``: the model fields the user set, which must not be overwritten.
        Sizes that follow from other settings are not stored: the model computes them."""
        return cfg

    def build(self, cfg: Any) -> nn.Module:
        raise NotImplementedError

    def stand_in(self, cfg: Any, folder: Path) -> Any:
        """The config with every pretrained network it loads replaced by an untrained one of
        the same architecture, written under ``folder``: ``plan`` counts FLOPs and bytes, which
        need no weights, where the weights may not have been downloaded. Unchanged by default."""
        return cfg

    def prepare(self, cfg: Any, tcfg: TrainConfig, data: DataSpec) -> tuple[Any, TrainConfig]:
        """The model and training settings completed from where the data is (e.g. a texture
        folder found beside the dataset) and checked, before a run folder is written: raises a
        ValueError naming what is missing and how to get it. Unchanged by default."""
        return cfg, tcfg

    def downloads(self, cfg: Any) -> tuple[str, ...]:
        """Datasets (``download`` names) that ``prepare`` looks for beside the dataset and
        ``reproduce --download`` may fetch there; none by default."""
        return ()

    def param_groups(
        self, model: nn.Module, cfg: Any, tcfg: TrainConfig
    ) -> list[ParamGroup] | None:
        """Parameter groups with their own lr or schedule; None: one group, the run's."""
        return None

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

    def class_index(self, cfg: Any, category: str) -> int:
        classes = getattr(cfg, "classes", ())
        return classes.index(category) if classes else 0

    def import_official(
        self, checkpoint: Path, data: DataSpec, **options: Any
    ) -> tuple[nn.Module, Any, TrainConfig]:
        """(model, model config, training config) of a checkpoint released by the method's
        authors, for ``train.adopt``; ``options``: the values of ``import_options``. Methods
        without released weights refuse."""
        raise ValueError(f"{self.name} has no importer for official checkpoints")

    def eval_info(self, cfg: Any) -> dict[str, Any]:
        """How a prediction was made, for eval_info.json."""
        return {}

    def check(self) -> None:
        """Raise ``MethodError`` naming the first part of the contract (module docstring) that
        this method breaks."""
        for problem in _problems(self):
            raise MethodError(f"method {getattr(self, 'name', type(self).__name__)!r}: {problem}")


def _overridden(method: Method, name: str) -> bool:
    return getattr(type(method), name) is not getattr(Method, name)


def _setting_exists(method: Method, setting: str) -> bool:
    part, _, path = setting.partition(".")
    cls: Any = {"model": method.config, "train": TrainConfig}.get(part)
    for head in path.split("."):
        if cls is None or not dataclasses.is_dataclass(cls):
            return False
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if head not in fields:
            return False
        cls = typing.get_type_hints(cls).get(head)
    return True


def _problems(m: Method):
    """The contract's breaks, first to last (a generator: ``check`` reports the first)."""
    from n2n_core.profiles import PROFILES, REQUIRED

    name = getattr(m, "name", None)
    if not (isinstance(name, str) and name.isidentifier() and name == name.lower()):
        yield f"name must be a lower-case identifier, got {name!r}"
    if m.kind not in KINDS:
        yield f"kind must be one of {KINDS}, got {m.kind!r}"
    cfg = getattr(m, "config", None)
    if not (
        dataclasses.is_dataclass(cfg) and "image_size" in {f.name for f in dataclasses.fields(cfg)}
    ):
        yield "config must be a dataclass with an image_size field (evaluation resizes to it)"
    for table, cls in (("profiles", cfg), ("train_profiles", TrainConfig)):
        got = getattr(m, table, {})
        missing = sorted(set(REQUIRED) - set(got))
        if missing:
            yield f"{table} lacks the profile(s) {missing} (every method has {list(REQUIRED)})"
        unknown = sorted(set(got) - set(PROFILES))
        if unknown:
            yield f"{table} has profile(s) {unknown} that are not one of {sorted(PROFILES)}"
        wrong = sorted(
            k for k, v in got.items() if isinstance(cls, type) and not isinstance(v, cls)
        )
        if wrong:
            yield f"{table}[{wrong[0]!r}] is not a {getattr(cls, '__name__', cls)}"
    if sorted(getattr(m, "profiles", {})) != sorted(getattr(m, "train_profiles", {})):
        yield "profiles and train_profiles must name the same profiles"
    needed = ["build", "predict"] + (["feed"] if m.kind == "trained" else [])
    needed += ["import_official"] if m.kind == "imported" else []
    for fn in needed:
        if not _overridden(m, fn):
            yield f"a {m.kind} method must override {fn}()"
    reserved = {o.flag for o in TRAIN_OPTIONS}
    flags = [o.flag for o in m.options]
    for o in m.options:
        if not o.flag.startswith("--") or o.flag in reserved or flags.count(o.flag) > 1:
            yield f"option {o.flag!r} needs a '--' flag of its own (not one of {sorted(reserved)})"
        if not _setting_exists(m, o.setting):
            yield f"option {o.flag} sets {o.setting!r}, which is not a model.* or train.* setting"
    for name in m.resources:
        if not _setting_exists(m, f"model.{name}"):
            yield f"resources names {name!r}, which is not a field of {cfg.__name__}"
