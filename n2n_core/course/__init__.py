"""Exercises that check themselves, for the notebooks.

A notebook's exercise is a stub the student completes (a function whose body raises
``NotImplementedError``), then ``course.check("01.q_sample", q_sample)``: the student's
function is compared with ``n2n_core`` or a closed form on fixed random cases, and one line
says ``correct``, ``not yet: <the first case that differs and how>`` or ``not attempted``.
``course.solution(key)`` prints the worked solution (``n2n_core/course/solutions.py``);
``course.exercises("01")`` lists a lesson's exercises.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from n2n_core.course.exercises import EXERCISES, Exercise, compare

__all__ = ["EXERCISES", "Exercise", "Verdict", "check", "exercises", "solution", "verdict"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`check`: ``status`` is "correct", "not yet" or "not attempted"."""

    key: str
    status: str
    message: str

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    def __str__(self) -> str:
        mark = {"correct": "✓", "not yet": "✗", "not attempted": "·"}[self.status]
        return f"{mark} {self.key} — {self.status}: {self.message}"


def _get(key: str) -> Exercise:
    if key not in EXERCISES:
        raise ValueError(f"no exercise {key!r}; known: {sorted(EXERCISES)}")
    return EXERCISES[key]


def verdict(key: str, fn: Callable) -> Verdict:
    """:func:`check` without printing."""
    ex = _get(key)
    for i, (args, expected, where) in enumerate(ex.cases(), start=1):
        try:
            got = fn(*args)
        except NotImplementedError:
            return Verdict(key, "not attempted", "replace `raise NotImplementedError` above")
        except Exception as exc:  # the student's code failed: say where and how
            return Verdict(key, "not yet", f"for {where}: {type(exc).__name__}: {exc}")
        if got is None or got is Ellipsis:
            return Verdict(key, "not attempted", "the function returns nothing yet")
        problem = compare(expected, got, ex.atol)
        if problem:
            return Verdict(key, "not yet", f"for {where} (case {i}): {problem}")
    return Verdict(key, "correct", ex.passed)


def check(key: str, fn: Callable) -> Verdict:
    """Check a student's function for exercise ``key``; prints and returns the verdict."""
    v = verdict(key, fn)
    print(v)
    return v


def exercises(lesson: str) -> list[str]:
    """The exercise keys of a lesson ("01", "12", ...), in order."""
    return [k for k in EXERCISES if k.startswith(f"{lesson}.")]


def solution(key: str) -> str:
    """Print (and return) the worked solution of exercise ``key``."""
    from n2n_core.course import solutions

    source = inspect.getsource(getattr(solutions, _get(key).solution))
    print(source)
    return source
