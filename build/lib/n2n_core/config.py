"""Configs are frozen dataclasses; runs store them as JSON. Nested dataclasses and tuples
round-trip; unknown keys are refused with their names."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

__all__ = ["from_dict", "to_dict"]

C = TypeVar("C")


def to_dict(cfg: object) -> dict[str, Any]:
    return dataclasses.asdict(cfg)  # type: ignore[arg-type]


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
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
