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
    else:
        if isinstance(value, list):
            value = tuple(value)
        _check_type(typing.get_type_hints(type(cfg))[head], value, path)
    try:
        return dataclasses.replace(cfg, **{head: value})
    except TypeError as exc:  # a comparison in a config's checks, e.g. a string for a number
        raise ValueError(f"setting {path!r} = {value!r}: {exc}") from None


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
        try:
            if part == "model":
                cfg = set_field(cfg, path, value)
                explicit.add(path)
            else:
                tcfg = set_field(tcfg, path, value)
        except ValueError as exc:  # name the whole key, as the user wrote it
            msg = str(exc)
            for end in (" must", " ="):  # the type errors name the key as the user wrote it
                msg = msg.replace(f"setting {path!r}{end}", f"setting {key!r}{end}")
            raise ValueError(msg) from None
    return m.finalize(cfg, list(categories), frozenset(explicit)), tcfg
