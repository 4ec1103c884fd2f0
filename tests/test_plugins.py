"""A method is one file: the contract ``Method.check`` enforces at registration, a fourth
method installed by an entry point and driven through the command line (train with its own
option, evaluate, reproduce), and the generic modules' size and privacy rules."""

import ast
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import pytest

from n2n_core import methods
from n2n_core.config import TrainConfig
from n2n_core.course.baseline import MeanImageConfig, MeanImageMethod
from n2n_core.data import fixtures
from n2n_core.methods import MethodError, Option

ROOT = Path(__file__).resolve().parent.parent


def _run(args, env, cwd):
    done = subprocess.run(
        [sys.executable, "-m", "n2n_core", *args], capture_output=True, text=True,
        timeout=600, env=env, cwd=cwd,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_a_fourth_method_is_one_file_installed_through_an_entry_point(tmp_path):
    """tests/plugin_method.py, installed as a package would install it (an entry point in
    the group ``n2n_core.methods``), trains with its own option, evaluates and reproduces a
    synthetic table through ``python -m n2n_core``; no n2n module names it."""
    site = tmp_path / "site"
    info = site / "n2n_plugin_demo-0.1.dist-info"
    info.mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "plugin_method.py", site / "plugin_method.py")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: n2n-plugin-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[n2n_core.methods]\npixelgauss = plugin_method:METHOD\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "TQDM_DISABLE": "1"}
    mvtec = fixtures.write_mvtec(tmp_path / "mvtec", categories=("bottle",), n_test=2, size=32)
    run = tmp_path / "run"
    base = ["train", "--data", "mvtec", "--root", str(mvtec), "--category", "bottle"]
    rc, out = _run(
        [*base, "--method", "pixelgauss", "--blur", "3", "--out", str(run)], env, tmp_path
    )
    assert rc == 0, out
    record = json.loads((run / "run.json").read_text())
    assert record["method"] == "pixelgauss" and record["model"]["blur"] == 3
    rc, out = _run(["evaluate", str(run)], env, tmp_path)
    assert rc == 0, out
    assert json.loads((run / "eval_info.json").read_text())["blur"] == 3
    assert set(json.loads((run / "metrics.json").read_text())) >= {"image_auroc", "pixel_aupro"}
    # its option belongs to it: another method refuses it in one line
    rc, out = _run([*base, "--method", "patchknn", "--blur", "3", "--out", str(tmp_path / "x")],
                   env, tmp_path)  # fmt: skip
    assert rc == 2 and "--blur is an option of pixelgauss, not of patchknn" in out, out
    table = tmp_path / "table"
    rc, out = _run(["reproduce", "pixelgauss-synthetic", "--runs", str(table), "--steps", "3"],
                   env, tmp_path)  # fmt: skip
    assert rc == 0, out
    assert "| mean | image_auroc |" in (table / "report.md").read_text()
    assert "pixelgauss" not in "".join(p.read_text() for p in (ROOT / "n2n_core").rglob("*.py"))


# ------------------------------------------------------------------ the contract
def _l1(mean, images):
    return (images - mean).abs().mean(1, keepdim=True)


@dataclass(frozen=True)
class NoSize:
    side: int = 32


def _variant(**attrs):
    """A copy of the mean-image baseline with some class attributes replaced."""
    cls = type("Broken", (MeanImageMethod,), {"name": "broken", **attrs})
    return cls(_l1, lambda m: m.flatten(1).amax(1))


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"name": "Bad Name"}, "name must be a lower-case identifier"),
        ({"kind": "magic"}, "kind must be one of"),
        ({"config": NoSize}, "config must be a dataclass with an image_size field"),
        ({"profiles": {"smoke": MeanImageConfig()}}, r"profiles lacks the profile\(s\) \['paper"),
        ({"train_profiles": {"smoke": TrainConfig(), "paper": {"steps": 3}}},
         r"train_profiles\['paper'\] is not a TrainConfig"),
        ({"options": (Option("--lr", "train.lr"),)}, "option '--lr' needs a '--' flag of its own"),
        ({"options": (Option("--width", "model.width"),)},
         "option --width sets 'model.width', which is not"),
        ({"options": (Option("--x", "model.image_size"), Option("--x", "train.lr"))},
         "option '--x' needs a '--' flag of its own"),
        ({"feed": methods.Method.feed}, "a trained method must override feed()"),
    ],
)  # fmt: skip
def test_a_method_that_breaks_the_contract_is_refused_at_registration(attrs, message):
    with pytest.raises(MethodError, match=rf"^method '[\w ]+': {message}"):
        methods.register(_variant(**attrs))
    assert "broken" not in methods.names()


def test_a_valid_variant_registers_and_a_nested_option_is_checked():
    class Sized(MeanImageMethod):
        name = "sizedmean"
        options: ClassVar = (Option("--side", "model.image_size"),)

    methods.register(Sized(_l1, lambda m: m.flatten(1).amax(1)))
    assert methods.get("sizedmean").kind == "trained"
    assert methods.get("patchknn").kind == "fitted"  # a memory bank: one pass, no gradients
    with pytest.raises(MethodError, match=r"not a model\.\* or train\.\* setting"):
        methods.register(_variant(options=(Option("--steps2", "model.vae.steps"),)))
    with pytest.raises(MethodError, match="takes a Method instance"):
        methods.register(replace)  # type: ignore[arg-type]


# ------------------------------------------------------------------ generic modules
SIZED = ["cli.py", "train.py", "evaluate.py", "reproduce.py", "methods", "metrics.py", "runner.py"]


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("name", SIZED)
def test_no_function_of_the_generic_modules_or_methods_exceeds_60_lines(name):
    path = ROOT / "n2n_core" / name
    files = sorted(path.glob("*.py")) if path.is_dir() else [path]
    long = [(f.name, fn, n) for f in files for fn, n in _functions(f) if n > 60]
    assert not long, f"functions longer than 60 lines: {long}"


@pytest.mark.parametrize("name", ["evaluate.py", "reproduce.py", "cli.py"])
def test_no_generic_module_imports_a_private_name_of_another(name):
    tree = ast.parse((ROOT / "n2n_core" / name).read_text())
    private = [
        f"{node.module}.{a.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("n2n_core")
        for a in node.names
        if a.name.startswith("_")
    ]
    assert not private, f"{name} imports {private}"
