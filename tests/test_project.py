"""Project conventions: notebook structure, one Colab setup cell, ruff, packaging."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from n2n_core import runner

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = runner.discover(ROOT / "notebooks")


def _cells(nb_path):
    return json.loads(nb_path.read_text(encoding="utf-8"))["cells"]


def _code_cells(nb_path):
    return [c for c in _cells(nb_path) if c["cell_type"] == "code"]


def _src(cell):
    return "".join(cell["source"])


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/NN_*.ipynb expected"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_first_and_plain(nb):
    first = _code_cells(nb)[0]
    assert "parameters" in first["metadata"].get("tags", []), "first code cell must be tagged"
    tree = ast.parse(_src(first))
    names = set()
    for stmt in tree.body:
        assert isinstance(stmt, ast.Assign), "parameters cell: plain assignments only"
        ast.literal_eval(stmt.value)  # a literal, nothing computed
        names |= {t.id for t in stmt.targets}
    assert {"profile", "seed"} <= names
    assert ast.literal_eval(next(s.value for s in tree.body if s.targets[0].id == "profile")) == (
        "smoke"
    ), "committed notebooks are the smoke profile"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_with_clean_smoke_outputs(nb):
    cells = _code_cells(nb)
    assert any(c["outputs"] for c in cells), "commit notebooks with their smoke outputs"
    for c in cells:
        assert "execution" not in c["metadata"], "strip timing metadata (make notebooks)"
        for out in c["outputs"]:
            assert out["output_type"] != "error", f"stored error in {nb.name}"
            assert not (out["output_type"] == "stream" and out["name"] == "stderr"), (
                f"stderr stored in {nb.name}: {''.join(out['text'])[:200]}"
            )
    counts = [c["execution_count"] for c in cells if c["execution_count"] is not None]
    assert counts == list(range(1, len(counts) + 1)), "execute top to bottom from a clean kernel"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_stale_widget_state(nb):
    """Saved widget models are only those an output shows: a finished progress bar's models
    would show a static reader a stale bar (``runner.prune_widget_state``)."""
    import nbformat

    note = nbformat.read(nb, as_version=4)
    saved = note.metadata.get("widgets", {}).get(runner.WIDGET_STATE, {}).get("state", {})
    runner.prune_widget_state(note)
    kept = note.metadata.get("widgets", {}).get(runner.WIDGET_STATE, {}).get("state", {})
    assert set(saved) == set(kept), f"{nb.name}: widget models no output shows: make notebooks"
    assert not any(m["model_name"] == "FloatProgressModel" for m in kept.values())


def test_prune_widget_state_keeps_what_outputs_reference():
    import nbformat

    nb = nbformat.v4.new_notebook()
    state = {
        "a": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_b"]}},
        "b": {"model_name": "SliderModel", "state": {"style": "IPY_MODEL_c"}},
        "c": {"model_name": "SliderStyleModel", "state": {}},
        "d": {"model_name": "FloatProgressModel", "state": {"layout": "IPY_MODEL_e"}},
        "e": {"model_name": "LayoutModel", "state": {}},
    }
    nb.metadata["widgets"] = {runner.WIDGET_STATE: {"state": state, "version_major": 2}}
    view = {"data": {runner.WIDGET_VIEW: {"model_id": "a"}}, "metadata": {}}
    view["output_type"] = "display_data"
    nb.cells = [nbformat.v4.new_code_cell(outputs=[nbformat.from_dict(view)])]
    runner.prune_widget_state(nb)
    assert set(nb.metadata["widgets"][runner.WIDGET_STATE]["state"]) == {"a", "b", "c"}
    nb.cells[0].outputs = []
    runner.prune_widget_state(nb)
    assert "widgets" not in nb.metadata


def test_colab_setup_cell_is_identical_and_points_home():
    setups = {_src(_code_cells(nb)[1]) for nb in NOTEBOOKS}
    assert len(setups) == 1, "every notebook carries the same Colab setup cell"
    (setup,) = setups
    home = re.search(r'Homepage = "([^"]+)"', (ROOT / "pyproject.toml").read_text())[1]
    assert "google.colab" in setup and f"git clone -q --depth 1 {home}" in setup
    assert "drive.mount" in setup and "N2N_RUNS" in setup  # datasets and runs on Drive
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    slug = home.removeprefix("https://github.com/")
    for nb in NOTEBOOKS:
        link = f"colab.research.google.com/github/{slug}/blob/main/notebooks/{nb.name}"
        assert link in readme, f"README lacks the Colab link for {nb.name}"
        assert link in json.dumps(_cells(nb)[0]), f"{nb.name} lacks its own Colab badge"


def test_notebooks_listed_in_readme_in_order():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = re.findall(r"\|\s*`?(\d{2}_[a-z_]+)`?", readme)
    assert [nb.stem for nb in NOTEBOOKS] == [
        n for n in listed if (ROOT / "notebooks" / f"{n}.ipynb").exists()
    ]


def test_ruff_clean():
    for args in (["check", "."], ["format", "--check", "."]):
        res = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
        )
        assert res.returncode == 0, res.stdout + res.stderr


def test_no_matplotlib_or_widgets_outside_viz():
    for py in (ROOT / "n2n_core").rglob("*.py"):
        if py.name == "viz.py":
            continue
        text = py.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from) (matplotlib|ipywidgets)", text, re.M), py


def _library_calls(source: str):
    """(name, object, call) for every call of a name imported ``from n2n_core... import``."""
    import importlib

    tree = ast.parse(source)
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("n2n_core"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                obj = getattr(module, alias.name, None)
                if obj is None:  # a submodule imported by name
                    obj = importlib.import_module(f"{node.module}.{alias.name}")
                imported[alias.asname or alias.name] = obj
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in imported:
                yield node.func.id, imported[node.func.id], node


def _sources():
    for path in sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "scripts").glob("*.py")]):
        yield path.name, path.read_text(encoding="utf-8")
    for nb in NOTEBOOKS:
        lines = [  # IPython's ! and % lines become a pass at their indentation
            line if not line.lstrip().startswith(("!", "%"))
            else line[: len(line) - len(line.lstrip())] + "pass"
            for cell in _code_cells(nb) for line in _src(cell).splitlines()
        ]  # fmt: skip
        yield nb.name, "\n".join(lines)


def test_benchmarks_scripts_and_notebooks_call_the_library_as_it_is():
    """Every name they import from n2n_core exists, and every call of one binds to its
    signature (a renamed function or a keyword-only argument passed by position fails here,
    not in a user's hour-long benchmark)."""
    import inspect

    checked = 0
    for name, source in _sources():
        for fn, obj, call in _library_calls(source):
            if any(isinstance(a, ast.Starred) for a in call.args) or any(
                k.arg is None for k in call.keywords
            ):
                continue
            try:
                sig = inspect.signature(obj)
            except (TypeError, ValueError):
                continue
            args = [None] * len(call.args)
            kwargs = dict.fromkeys(k.arg for k in call.keywords)
            try:
                sig.bind(*args, **kwargs)
            except TypeError as e:
                pytest.fail(f"{name}:{call.lineno}: {fn}(...) does not fit {fn}{sig}: {e}")
            checked += 1
    assert checked > 50
