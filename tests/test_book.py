"""make book: every committed notebook rendered, the equation index as the front page."""

import re
from pathlib import Path

from n2n_core.book import build_book
from n2n_core.runner import discover

ROOT = Path(__file__).resolve().parent.parent


def test_book_renders_every_notebook_and_links_the_index(tmp_path):
    index = build_book(tmp_path)
    html = index.read_text(encoding="utf-8")
    assert "Equation index" in html
    # the course's home page: the learning path (goals, prerequisites, time) before the index
    assert html.index("Learning path") < html.index("Equation index")
    assert html.count("What you will learn") == len(discover(ROOT / "notebooks"))
    assert not re.search(r"(\d\d) · \1 ·", html)  # each lesson numbered once
    assert html.count("<tr>") >= 28  # a header and the 27 rows of notebooks/README.md
    links = set(re.findall(r'href="([^"]+\.html)"', html))
    assert links == {f"{p.stem}.html" for p in discover(ROOT / "notebooks")}
    for link in links:
        page = (tmp_path / link).read_text(encoding="utf-8")
        assert page.count('src="data:image/png;base64,') >= 1, link  # figures embedded: offline
