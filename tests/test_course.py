"""The notebooks' exercises: every checker accepts its worked solution, says "not attempted"
for the untouched stub (no exception, so a headless run stays green) and rejects a wrong
answer with a message that names the case and the mismatch; every notebook's exercise cells
use a checker that exists; the baseline of notebook 12 trains and evaluates."""

import json
import math
import re
from pathlib import Path

import pytest

from n2n_core import course
from n2n_core.course import EXERCISES, solutions, verdict

ROOT = Path(__file__).resolve().parents[1]


def _stub(*args):
    raise NotImplementedError


def _off(x):
    """A slightly wrong answer of the right type and shape."""
    if isinstance(x, tuple | list):
        return tuple(_off(v) for v in x)
    return x * 1.01 + 0.01


@pytest.mark.parametrize("key", list(EXERCISES))
def test_checker_accepts_the_solution_and_tells_stubs_and_wrong_answers_apart(key, capsys):
    solution = getattr(solutions, EXERCISES[key].solution)
    assert verdict(key, solution).correct
    untouched = course.check(key, _stub)
    assert untouched.status == "not attempted"
    assert "not attempted" in capsys.readouterr().out
    wrong = verdict(key, lambda *a: _off(solution(*a)))
    assert wrong.status == "not yet"
    assert re.search(r"for .+ \(case \d+\): .*expected .+, got ", wrong.message), wrong.message


def test_classic_mistakes_are_named():
    ab_not_sqrt = verdict(
        "01.q_sample", lambda x0, t, ab, eps: ab[t] * x0 + (1 - ab[t]) * eps
    )  # α instead of √α
    assert ab_not_sqrt.status == "not yet" and "at index" in ab_not_sqrt.message
    wrong_shape = verdict("06.top_k_score", lambda maps, k: maps.flatten(1).topk(k, 1).values)
    assert "expected shape" in wrong_shape.message
    crash = verdict("04.auroc", lambda normal, anomalous: normal.nope)
    assert crash.status == "not yet" and "AttributeError" in crash.message
    nothing = verdict("09.eq15", lambda *a: None)
    assert nothing.status == "not attempted"
    with pytest.raises(ValueError, match=r"no exercise 'xx\.y'"):
        verdict("xx.y", _stub)


def test_the_pair_counting_auroc_is_not_fooled_by_ties():
    half_ties = verdict("04.auroc", lambda n, a: float((a[:, None] >= n[None, :]).mean()))
    assert half_ties.status == "not yet"  # ties count one half, not one


def test_solution_prints_its_source(capsys):
    text = course.solution("07.dod_target")
    assert "def dod_target" in text and text in capsys.readouterr().out


def test_every_lesson_has_two_or_more_exercises_and_uses_them():
    lessons = ("01", "02", "03", "04", "05", "06", "07", "08", "09", "12")
    for lesson in lessons:
        keys = course.exercises(lesson)
        assert len(keys) >= 2, lesson
        (nb,) = ROOT.glob(f"notebooks/{lesson}_*.ipynb")
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        checked = re.findall(r'course\.check\("([^"]+)"', code)
        assert set(keys) <= set(checked), f"{nb.name} does not check {set(keys) - set(checked)}"
        for key in keys:  # the stub cell raises NotImplementedError: committed untouched
            name = EXERCISES[key].solution
            assert re.search(rf"def {name}\(.*\n(.*\n)*?\s+raise NotImplementedError", code), key


def test_the_baseline_registers_trains_and_evaluates(tmp_path):
    from n2n_core.course.baseline import register_baseline
    from n2n_core.data import fixtures
    from n2n_core.evaluate import evaluate_run
    from n2n_core.methods import resolve
    from n2n_core.train import DataSpec, train

    root = fixtures.write_mvtec(tmp_path / "mvtec", categories=("bottle",), n_train=4, n_test=2)
    register_baseline(solutions.baseline_map, solutions.baseline_score)
    model, tcfg = resolve("meanimage", "smoke", "mvtec", ["bottle"], {"train.steps": 20})
    train(tmp_path / "run", model, tcfg, DataSpec("mvtec", str(root), "bottle"))
    metrics = evaluate_run(tmp_path / "run")
    assert all(0 <= v <= 1 and not math.isnan(v) for v in metrics.values())
