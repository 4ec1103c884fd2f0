"""Anomaly detection methods as plug-ins: the registry and the one config resolver.

Each method is one module exposing ``METHOD``, an instance of ``methods.base.Method``. Built-in
methods are listed below (one line each) and imported on first use; ``register`` adds another
(a user's method, a test's dummy). The generic modules reach a method only through ``get``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from n2n_core.config import DataSpec, TrainConfig, from_dict
from n2n_core.methods.base import Ablation, Feed, Method, Prediction, Stage

__all__ = [
    "Ablation",
    "Feed",
    "Method",
    "Prediction",
    "Stage",
    "get",
    "load_run",
    "method_of",
    "names",
    "register",
    "resolve",
    "set_field",
]

BUILTIN = {
    "diffusionad": "n2n_core.methods.diffusionad",
    "decodiff": "n2n_core.methods.decodiff",
    "patchknn": "n2n_core.methods.patchknn",
}
DEFAULT = "diffusionad"  # the command line's --method when none is given
_registered: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Make ``method`` available by its name (replacing one of the same name)."""
    _registered[method.name] = method
    return method


def names() -> list[str]:
    return sorted({*BUILTIN, *_registered})


def get(name: str) -> Method:
    """The registered method ``name``; an unknown name is an error listing the known ones."""
    if name not in _registered:
        if name not in BUILTIN:
            raise ValueError(f"unknown method {name!r}; registered: {', '.join(names())}")
        register(importlib.import_module(BUILTIN[name]).METHOD)
    return _registered[name]


def method_of(cfg: object) -> Method:
    """The method whose config class ``cfg`` is (exactly; else the first it derives from)."""
    candidates = [get(name) for name in names()]
    for m in sorted(candidates, key=lambda m: type(cfg) is not m.config):
        if isinstance(cfg, m.config):
            return m
    raise TypeError(f"not the config of a registered method: {type(cfg).__name__}")


def load_run(run_dir: Path | str) -> tuple[Any, TrainConfig, DataSpec]:
    """The model config, training config and data of a run folder. Fields added to the
    configs after the run was made take their defaults."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a training run folder")
    try:
        d = json.loads(path.read_text())
        method = get(str(d.get("method")))
        return (
            from_dict(method.config, d["model"]),
            from_dict(TrainConfig, d["train"]),
            from_dict(DataSpec, d["data"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSONDecodeError: ValueError
        raise ValueError(f"{path} is not a valid run record: {type(e).__name__}: {e}") from None


def set_field(cfg: Any, path: str, value: Any) -> Any:
    """``cfg`` with the (dotted, nested) field ``path`` replaced; lists become tuples. An
    unknown field is an error that lists the valid ones at that level."""
    head, _, rest = path.partition(".")
    fields = {f.name for f in dataclasses.fields(cfg)}
    if head not in fields:
        raise ValueError(
            f"{type(cfg).__name__} has no setting {head!r} (in {path!r}); valid: {sorted(fields)}"
        )
    if rest:
        inner = getattr(cfg, head)
        if not dataclasses.is_dataclass(inner):
            raise ValueError(f"{type(cfg).__name__}.{head} has no sub-settings (in {path!r})")
        value = set_field(inner, rest, value)
    elif isinstance(value, list):
        value = tuple(value)
    return dataclasses.replace(cfg, **{head: value})


def _flatten(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"model": {...}, "train": {...}}`` and ``{"train.lr": 1e-4}`` alike → dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if key in ("model", "train") and isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif key.split(".")[0] in ("model", "train") and "." in key:
            flat[key] = value
        else:
            raise ValueError(f"setting {key!r} must start with 'model.' or 'train.'")
    return flat


def resolve(
    method: str,
    profile: str,
    dataset: str | None = None,
    categories: list[str] | tuple[str, ...] = (),
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Any, TrainConfig]:
    """The model and training configs of ``method`` at ``profile`` for ``dataset``: the
    profile, the paper's per-dataset differences, the user's ``overrides`` (dotted
    ``model.*`` / ``train.*`` keys), then the derived fields. Setting ``train.steps`` without
    ``train.epochs`` trains exactly that many steps (epochs cleared)."""
    m = get(method)
    if profile not in m.profiles:
        raise ValueError(f"{method} has no profile {profile!r}; profiles: {sorted(m.profiles)}")
    cfg, tcfg = m.profiles[profile], m.train_profiles[profile]
    cfg = dataclasses.replace(cfg, **m.dataset_model.get((profile, dataset or ""), {}))
    tcfg = dataclasses.replace(tcfg, **m.dataset_train.get((profile, dataset or ""), {}))
    flat = _flatten(overrides)
    if "train.steps" in flat:
        flat.setdefault("train.epochs", None)
    explicit = set()
    for key, value in flat.items():
        part, _, path = key.partition(".")
        if part == "model":
            cfg = set_field(cfg, path, value)
            explicit.add(path)
        else:
            tcfg = set_field(tcfg, path, value)
    return m.finalize(cfg, list(categories), frozenset(explicit)), tcfg
