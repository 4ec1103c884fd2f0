"""The notebooks read as lessons: goals, prerequisites and time first, a summary and further
reading last; no developer bookkeeping; and no number typed into prose that a retrain can change
(a result is printed by the code cell that computes it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# notebooks whose outputs come from training runs: their prose may not quote a result
TRAINING = ("05", "06", "08", "09", "10", "11", "12")


def _cells(path: Path) -> list[dict]:
    return [
        {**c, "source": "".join(c["source"])}
        for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
    ]


def _markdown(path: Path) -> list[tuple[int, str]]:
    return [(i, c["source"]) for i, c in enumerate(_cells(path)) if c["cell_type"] == "markdown"]


def _comments(path: Path) -> list[tuple[int, str]]:
    return [
        (i, line)
        for i, c in enumerate(_cells(path))
        if c["cell_type"] == "code"
        for line in re.findall(r"#.*$", c["source"], re.M)
    ]


# ------------------------------------------------------------------ a lesson's frame
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_lesson_states_goals_and_ends_with_a_summary(nb):
    cells = _cells(nb)
    first, last = cells[0]["source"], cells[-1]["source"]
    for part in ("**What you will learn**", "**Before this:**", "**Time:**"):
        assert part in first, f"{nb.name}: the first cell lacks {part}"
    goals = re.findall(r"^- ", first.split("**What you will learn**")[1], re.M)
    assert 3 <= len(goals) <= 5, f"{nb.name}: {len(goals)} learning outcomes"
    assert "## What to remember" in last and "## Further reading" in last, nb.name
    remember = last.split("## What to remember")[1].split("## Further reading")[0]
    assert 3 <= len(re.findall(r"^\d+\. ", remember, re.M)) <= 6, nb.name
    reading = last.split("## Further reading")[1]
    assert re.search(r"https://arxiv\.org/abs/(2303\.08730|2503\.19357)", reading), nb.name


# ------------------------------------------------------------------ no bookkeeping
BOOKKEEPING = re.compile(
    r"issue\s*#?\d+|\bAVX|kernel path|CPU kernel|float kernels|seeds? \d+\s*[-–]|"
    r"shared/|metrics\.md|How much the smoke numbers move",
    re.I,
)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_no_bookkeeping_or_outside_files_in_lessons(nb):
    for i, text in _markdown(nb) + _comments(nb):
        assert not BOOKKEEPING.search(text), f"{nb.name} cell {i}: {BOOKKEEPING.search(text)[0]!r}"
        # the top-level README is the project's front door, not a lesson's reference
        assert not re.search(r"(?<!official )(?<!notebooks/)\bREADME\b", text), (
            f"{nb.name} cell {i} sends the student to the README"
        )
    for i, text in _markdown(nb):
        for link in re.findall(r"\]\(([^)#]+)\)", text):
            if not re.match(r"https?://", link):
                assert (nb.parent / link).resolve().exists(), f"{nb.name} cell {i}: {link}"


# ------------------------------------------------------------------ prose that cannot go stale
REFERENCE = re.compile(
    r"(Eqs?\.|Equations?|Tables?|Figs?\.|Figures?|§|Alg\.|Algorithms?|notebooks?|[Ss]ections?|"
    r"arXiv|steps?|cells?)\s*[\d.,–\-\s]*$"
)
UNIT = re.compile(
    r"\s?(px|pixels?|steps?|optimiser|epochs?|images?|categor|M\b|M-param|k\b|h\b|GB|×|-line|"
    r"channels?)"
)
SETTINGS = {str(x) for x in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 16, 32, 64, 100, 128, 200,
                             256, 288, 300, 800, 1000)}  # fmt: skip


def _prose(md: str) -> str:
    """Markdown without code, maths, link targets, headings' and lists' numbering."""
    md = re.sub(r"```.*?```", " ", md, flags=re.S)
    md = re.sub(r"\$\$.*?\$\$", " ", md, flags=re.S)
    md = re.sub(r"\$[^$]*\$", " ", md)
    md = re.sub(r"`[^`]*`", " ", md)
    md = re.sub(r"\]\([^)]*\)", "]", md)
    return re.sub(r"^\s*(#+ \d+[a-z]?\s*[·.]|\d+\.)", " ", md, flags=re.M)


def typed_numbers(cells: list[dict]) -> list[tuple[int, str]]:
    """Numbers in the markdown that are neither a reference (Eq. 12, Table 3, notebook 05, a
    year), a setting with its unit (64 px, 900 steps, 4.2 M) or a small constant, nor written
    in the notebook's own code: in a notebook that trains, such a number is a typed result."""
    code = "\n".join(c["source"] for c in cells if c["cell_type"] == "code")
    found = []
    for i, c in enumerate(cells):
        if c["cell_type"] != "markdown":
            continue
        text = _prose(c["source"])
        for m in re.finditer(r"(?<![\w.])\d+(?:[.,]\d+)*(?!\w)", text):
            num = m.group().rstrip(".,")
            if (
                num in SETTINGS
                or REFERENCE.search(text[max(0, m.start() - 20) : m.start()])
                or UNIT.match(text[m.end() : m.end() + 14])
                or re.fullmatch(r"(19|20)\d\d|0\d|1[0-2]", num)  # years, notebook numbers
                or re.search(rf"(?<![\w.]){re.escape(num)}(?!\w)", code)
            ):
                continue
            found.append((i, num))
    return found


MEASURED = re.compile(r"\d\.\d+\s*[-–]\s*\d\.\d+|\bmeasured\b.*\d|over seeds")


@pytest.mark.parametrize(
    "nb", [n for n in NOTEBOOKS if n.name[:2] in TRAINING], ids=lambda p: p.name[:2]
)
def test_prose_quotes_no_training_result(nb):
    cells = _cells(nb)
    assert not typed_numbers(cells), f"{nb.name}: numbers typed into prose {typed_numbers(cells)}"
    for i, comment in _comments(nb):  # a comment beside an assert quotes no measured range
        assert not MEASURED.search(comment), f"{nb.name} cell {i}: {comment!r}"


def test_the_stale_prose_check_catches_a_typed_result():
    (nb,) = [n for n in NOTEBOOKS if n.name.startswith("09")]
    cells = _cells(nb)
    i = next(j for j, c in enumerate(cells) if "**Against the paper.**" in c["source"])
    assert typed_numbers(cells) == []
    cells[i]["source"] += " z̃0's image AUROC falls from about 93 → 89 with more steps."
    assert typed_numbers(cells) == [(i, "93"), (i, "89")]
