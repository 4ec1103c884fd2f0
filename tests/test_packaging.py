"""Packaging tells the truth: every package n2n_core imports is declared, the floors are ones
the code runs on, one version source, one torch version across the install paths, the lock
bound to its platform, and the Makefile's choice of environment (never conda's base, never a
Colab runtime)."""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import n2n_core

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(specs: list[str]) -> set[str]:
    return {re.split(r"[<>=\[ ;]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def _imports(package: Path) -> set[str]:
    """Top-level modules imported anywhere in the package (lazy imports included)."""
    found = set()
    for py in package.rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_every_imported_package_is_declared():
    meta = PROJECT["project"]
    core = _names(meta["dependencies"])
    extras = _names(meta["optional-dependencies"]["notebooks"])
    dists = md.packages_distributions()
    stdlib = sys.stdlib_module_names
    missing = {}
    for module in sorted(_imports(ROOT / "n2n_core") - stdlib - {"n2n_core"}):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & (core | extras):
            missing[module] = sorted(names)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_floors_are_ones_the_code_runs_on():
    deps = PROJECT["project"]["dependencies"]
    # metrics uses np.trapezoid, new in NumPy 2.0
    assert "numpy>=2.0" in [d.split("#")[0].strip() for d in deps]
    assert any("trapezoid" in p.read_text() for p in (ROOT / "n2n_core").glob("*.py"))
    assert "torch>=2.1" in deps  # a floor only: an installed torch (Colab, CUDA) is kept


def test_notebook_tools_are_an_extra_apart_from_dev():
    extras = PROJECT["project"]["optional-dependencies"]
    assert {"papermill", "nbconvert", "jupyter-server-mathjax"} <= _names(extras["notebooks"])
    assert "n2n_core[notebooks]" in extras["dev"]
    assert not {"pytest", "nbval", "selenium", "ruff"} & _names(extras["notebooks"])


def test_one_version_source():
    assert "version" not in PROJECT["project"] and "version" in PROJECT["project"]["dynamic"]
    assert PROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "n2n_core.__version__"}
    assert md.version("n2n_core") == n2n_core.__version__


def test_every_subpackage_and_the_course_are_packaged():
    from setuptools import find_packages

    declared = set(PROJECT["tool"]["setuptools"]["packages"])
    assert set(find_packages(str(ROOT), include=["n2n_core*"])) <= declared
    assert PROJECT["tool"]["setuptools"]["package-dir"]["n2n_core.notebooks"] == "notebooks"
    data = PROJECT["tool"]["setuptools"]["package-data"]
    assert "*.ipynb" in data["n2n_core.notebooks"]
    assert "paper_tables/*.csv" in data["n2n_core.data"]
    assert list((ROOT / "n2n_core" / "data" / "paper_tables").glob("*.csv"))
    # every data file of the library reaches the wheel (e.g. the course's exercises.json)
    import fnmatch

    for f in (ROOT / "n2n_core").rglob("*"):
        if f.is_dir() or f.suffix in (".py", ".pyc") or "__pycache__" in f.parts:
            continue
        owner = max(
            (p for p in declared if (ROOT / p.replace(".", "/")) in f.parents),
            key=len,
        )
        rel = f.relative_to(ROOT / owner.replace(".", "/")).as_posix()
        patterns = data.get(owner, [])
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), f"{f} is not package data"


def test_one_torch_version_across_the_install_paths():
    install = re.search(r"TORCH_SPEC:-([^}]+)}", (ROOT / "scripts/install.sh").read_text())[1]
    env = re.search(r"^\s*- (torch\S*)$", (ROOT / "environment.yml").read_text(), re.M)[1]
    lock = re.search(r"^# torch: (\S+),", (ROOT / "requirements-lock.txt").read_text(), re.M)[1]
    assert install == env == lock, (install, env, lock)
    assert not re.search(r"(?im)^torch==", (ROOT / "requirements-lock.txt").read_text())


def _lock_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("n2n_lock", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_lock_refuses_another_platform(tmp_path, monkeypatch, capsys):
    lock = _lock_module()
    header = lock.locked_platform((ROOT / "requirements-lock.txt").read_text())
    assert header == "Linux, Python 3.11"  # what install.sh compares with
    target = tmp_path / "requirements-lock.txt"
    target.write_text("# platform: Linux, Python 3.11\nnumpy==2.4.6\n")
    monkeypatch.setattr(lock, "LOCK", target)
    monkeypatch.setattr(lock, "current_platform", lambda: "Darwin, Python 3.12")
    monkeypatch.delenv("N2N_LOCK_NEW_PLATFORM", raising=False)
    assert lock.main() == 1
    assert "is for Linux, Python 3.11; this is Darwin, Python 3.12" in capsys.readouterr().out
    assert target.read_text() == "# platform: Linux, Python 3.11\nnumpy==2.4.6\n"


def _make_dry(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "VIRTUAL_ENV"))}
    clean.pop("COLAB_RELEASE_TAG", None)
    res = subprocess.run(
        ["make", "-n", "-B", "install"], cwd=ROOT, env={**clean, **env},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return res.stdout


@pytest.mark.skipif(not Path("/usr/bin/make").exists(), reason="no make")
def test_make_never_installs_into_conda_base():
    base = _make_dry({"CONDA_DEFAULT_ENV": "base", "CONDA_PREFIX": "/opt/conda"})
    assert "scripts/install.sh .venv/bin/python" in base
    named = _make_dry({"CONDA_DEFAULT_ENV": "n2n", "CONDA_PREFIX": "/opt/conda/envs/n2n"})
    assert "scripts/install.sh python3" in named
    venv = _make_dry({"VIRTUAL_ENV": "/tmp/v"})
    assert "scripts/install.sh python3" in venv


def test_install_refuses_a_colab_runtime():
    res = subprocess.run(
        ["bash", "scripts/install.sh", sys.executable], cwd=ROOT,
        env={**os.environ, "COLAB_RELEASE_TAG": "release-colab"}, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 1 and "setup cell" in res.stdout


def test_commands_that_run_notebooks_name_the_missing_extra(monkeypatch, capsys):
    import importlib.util

    from n2n_core import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "papermill" else real(n, *a)
    )
    assert cli.main(["notebooks", "--only", "01"]) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith("error: `notebooks` needs the notebook tools (papermill missing)")
    assert "pip install 'n2n_core[notebooks]'" in out
