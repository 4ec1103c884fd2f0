"""Anomaly detection methods as plug-ins: the registry and the one config resolver.

Each method is one module exposing ``METHOD``, an instance of ``methods.base.Method``. Built-in
methods are listed below (one line each) and imported on first use; ``register`` adds another
(a user's method, a test's dummy), checking it against the contract of ``Method``. An installed
package adds one for the command line through the entry point group ``n2n_core.methods``
(``name = "package.module:METHOD"``), loaded when that name is asked for. The generic modules
reach a method only through ``get``.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from n2n_core.config import DataSpec, TrainConfig
from n2n_core.methods.base import (
    Feed,
    Method,
    MethodError,
    Option,
    ParamGroup,
    Prediction,
    Stage,
)

__all__ = [
    "Feed",
    "Method",
    "MethodError",
    "Option",
    "ParamGroup",
    "Prediction",
    "Stage",
    "get",
    "load_run",
    "method_of",
    "names",
    "register",
    "resolve",
    "set_field",
    "set_fields",
]

BUILTIN = {
    "diffusionad": "n2n_core.methods.diffusionad",
    "decodiff": "n2n_core.methods.decodiff",
    "patchknn": "n2n_core.methods.patchknn",
}
DEFAULT = "diffusionad"  # the command line's --method when none is given
ENTRY_POINTS = "n2n_core.methods"
_registered: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Make ``method`` available by its name (replacing one of the same name) after checking
    it against the contract of ``Method`` (``MethodError`` names what it breaks)."""
    if not isinstance(method, Method):
        raise MethodError(f"register() takes a Method instance, got {type(method).__name__}")
    method.check()
    _registered[method.name] = method
    return method


def _installed() -> dict[str, Any]:
    """Methods that installed packages declare (entry points), by name."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}


def names() -> list[str]:
    return sorted({*BUILTIN, *_installed(), *_registered})


def get(name: str) -> Method:
    """The registered method ``name``; an unknown name is an error listing the known ones."""
    if name not in _registered:
        if name in BUILTIN:
            register(importlib.import_module(BUILTIN[name]).METHOD)
        elif name in (installed := _installed()):
            loaded = installed[name].load()  # the method object, or a module that registers it
            if isinstance(loaded, Method):
                register(loaded)
            if name not in _registered:
                raise MethodError(f"entry point {installed[name].value!r} registered no {name!r}")
        else:
            raise ValueError(f"unknown method {name!r}; registered: {', '.join(names())}")
    return _registered[name]


def method_of(cfg: object) -> Method:
    """The method whose config class ``cfg`` is (exactly; else the first it derives from)."""
    candidates = [get(name) for name in names()]
    for m in sorted(candidates, key=lambda m: type(cfg) is not m.config):
        if isinstance(cfg, m.config):
            return m
    raise TypeError(f"not the config of a registered method: {type(cfg).__name__}")


def load_run(run_dir: Path | str) -> tuple[Any, TrainConfig, DataSpec]:
    """The model config, training config and data of a run folder (``RunFolder.configs``).
    Fields added to the configs after the run was made take their defaults."""
    from n2n_core.run_folder import RunFolder

    return RunFolder(run_dir).configs


def set_field(cfg: Any, path: str, value: Any) -> Any:
    """``cfg`` with the (dotted, nested) field ``path`` replaced; lists become tuples. An
    unknown field is an error that lists the valid ones at that level."""
    return set_fields(cfg, {path: value})


def set_fields(cfg: Any, settings: Mapping[str, Any], prefix: str = "") -> Any:
    """``cfg`` with every (dotted) setting replaced at once, so that settings that depend on
    each other (patch sizes and their probabilities, a crop and its margin) may be given in
    any order; the config checks the result once. ``prefix``: how the error messages name the
    keys (e.g. "model.")."""
    tree: dict[str, Any] = {}
    for path, value in settings.items():
        value = tuple(value) if isinstance(value, list) else value
        _check_setting(cfg, path, value, prefix + path)
        node = tree
        *heads, last = path.split(".")
        for head in heads:
            node = node.setdefault(head, {})
        node[last] = value
    return _replace_tree(cfg, tree, prefix)


def _check_setting(cfg: Any, path: str, value: Any, key: str) -> None:
    """The setting exists (else: the valid ones at that level) and has the field's type."""
    head, _, rest = path.partition(".")
    fields = {f.name for f in dataclasses.fields(cfg)}
    if head not in fields:
        raise ValueError(
            f"{type(cfg).__name__} has no setting {head!r} (in {key!r}); valid: {sorted(fields)}"
        )
    if rest:
        inner = getattr(cfg, head)
        if not dataclasses.is_dataclass(inner):
            raise ValueError(f"{type(cfg).__name__}.{head} has no sub-settings (in {key!r})")
        _check_setting(inner, rest, value, key)
    else:
        _check_type(typing.get_type_hints(type(cfg))[head], value, key)


def _replace_tree(cfg: Any, tree: dict[str, Any], prefix: str) -> Any:
    changes = {
        k: _replace_tree(getattr(cfg, k), v, prefix) if isinstance(v, dict) else v
        for k, v in tree.items()
    }
    try:
        return dataclasses.replace(cfg, **changes)
    except TypeError as exc:  # a comparison in a config's checks, e.g. a string for a number
        shown = ", ".join(f"{prefix}{k}" for k in changes)
        raise ValueError(f"setting {shown}: {exc}") from None


_SCALARS = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}


def _check_type(hint: Any, value: Any, path: str) -> None:
    """A value of the field's type (int, float, bool, str, a tuple, or None where allowed);
    other types are left to the config's own checks."""
    options = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
        else (hint,)
    )
    if value is None and type(None) in options:
        return
    kinds = [o for o in options if o is not type(None)]
    wanted: list[type] = []
    for k in kinds:
        origin = typing.get_origin(k) or k
        if origin in _SCALARS:
            wanted += _SCALARS[origin]
        elif origin is tuple:
            wanted.append(tuple)
        else:
            return  # a nested config or another type: the config checks it
    ok = isinstance(value, tuple(wanted)) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        names = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
        raise ValueError(f"setting {path!r} must be {names}, got {value!r}")


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
    ``model.*`` / ``train.*`` keys), then the categories (``Method.for_categories``).
    Setting ``train.steps`` without ``train.epochs`` trains exactly that many steps (epochs
    cleared; a schedule stepped per epoch is then stepped per step, without its warm-up
    epochs)."""
    m = get(method)
    if profile not in m.profiles:
        raise ValueError(f"{method} has no profile {profile!r}; profiles: {sorted(m.profiles)}")
    cfg, tcfg = m.profiles[profile], m.train_profiles[profile]
    cfg = dataclasses.replace(cfg, **m.dataset_model.get((profile, dataset or ""), {}))
    tcfg = dataclasses.replace(tcfg, **m.dataset_train.get((profile, dataset or ""), {}))
    flat = _flatten(overrides)
    if "train.steps" in flat:
        flat.setdefault("train.epochs", None)
        if tcfg.lr_per == "epoch" and flat["train.epochs"] is None:  # no epochs to count
            flat.setdefault("train.lr_per", "step")
            flat.setdefault("train.warmup_epochs", 0)
    parts: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for key, value in flat.items():
        part, _, path = key.partition(".")
        parts[part][path] = value
    cfg = set_fields(cfg, parts["model"], "model.")
    tcfg = set_fields(tcfg, parts["train"], "train.")
    explicit = set(parts["model"])
    return m.for_categories(cfg, list(categories), frozenset(explicit)), tcfg
