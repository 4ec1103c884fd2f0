"""notebooks/README.md, the equation index, stays true: every equation of both papers has a
row, every function it names exists in n2n_core, and the notebooks it names use that function."""

import importlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INDEX = ROOT / "notebooks" / "README.md"
COLUMNS = ["paper", "item", "notebook", "section", "function", "check"]
EXPECTED = [("DiffusionAD", f"Eq. {i}") for i in range(1, 10)]
EXPECTED += [("DiffusionAD", "Alg. 1"), ("DiffusionAD", "Alg. 2")]
EXPECTED += [("DeCo-Diff", f"Eq. {i}") for i in range(1, 16)] + [("DeCo-Diff", "Fig. 4")]


def _rows() -> list[dict[str, str]]:
    lines = [ln for ln in INDEX.read_text(encoding="utf-8").splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == COLUMNS, header
    rows = []
    for ln in lines[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", ln.strip().strip("|"))]
        assert len(cells) == len(COLUMNS), ln
        rows.append(dict(zip(COLUMNS, cells, strict=True)))
    return rows


ROWS = _rows()


def _resolve(dotted: str) -> object:
    """``module.attr[.attr]`` under n2n_core: the longest importable module prefix, then
    attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module("n2n_core." + ".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(f"no n2n_core module in {dotted!r}")


def _code(prefix: str) -> str:
    (path,) = ROOT.glob(f"notebooks/{prefix}_*.ipynb")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_every_equation_has_one_complete_row():
    assert [(r["paper"], r["item"]) for r in ROWS] == EXPECTED
    for r in ROWS:
        assert all(r.values()), f"empty column in {r}"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['paper']} {r['item']}")
def test_function_exists_and_the_notebook_uses_it(row):
    dotted = row["function"].strip("`")
    obj = _resolve(dotted)
    assert callable(obj), dotted
    # a call of an nn.Module's forward is written as a call of the module's class instance
    names = dotted.split(".")
    used = names[-2] if names[-1] == "forward" else names[-1]
    notebooks = [n.strip() for n in row["notebook"].split(",")]
    assert any(re.search(rf"\b{re.escape(used)}\b", _code(n)) for n in notebooks), (
        f"{row['paper']} {row['item']}: notebook(s) {notebooks} never use {used}"
    )
