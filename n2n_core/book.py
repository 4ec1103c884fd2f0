"""A static book of the committed notebooks: one HTML page per notebook and an index page.

Why nbconvert and not Jupyter Book: the notebooks are already executed and committed with their
smoke outputs (nbval keeps them true), so the book only has to render them; nbconvert is already
installed with JupyterLab, builds in seconds and needs no second configuration of the notebook
order or metadata. Each page is nbconvert's "lab" template: stored outputs and figures (embedded
PNGs), equations typeset by a copy of MathJax 2.7 in the book (from ``jupyter-server-mathjax``,
so the book reads offline), and the saved widget state, which the page renders with the Jupyter
widgets HTML manager (fetched from a CDN: online only; offline the slider's static fallback
text shows). The index page is the course's home: the learning path (each lesson in order,
with its goals, prerequisites and time, from the notebook's first cell), then
``notebooks/README.md`` (the equation index) with every notebook number linked to its page.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from n2n_core.io import atomic_write_text
from n2n_core.runner import DEFAULT_NOTEBOOKS, discover

__all__ = ["build_book"]

_MATHJAX = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
# The MathJax copy in the book (jupyter-server-mathjax) ships only the STIX-Web fonts. Left to
# its defaults, MathJax's HTML-CSS output asks for its TeX fonts, which are missing, and lays out
# with the wrong metrics: a radicand lands below a fraction bar, bars over letters vanish. Naming
# STIX-Web (as classic Jupyter does) renders every equation with the fonts that are there.
_FONTS = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web",
                                 imageFont: null}});
</script>
"""
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>n2n: notebooks and equation index</title>
<script type="text/x-mathjax-config">
MathJax.Hub.Config({{tex2jax: {{inlineMath: [["$", "$"]]}}}});</script>
{fonts}<script src="{mathjax}"></script>
<style>body {{ font-family: sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; }}
table {{ border-collapse: collapse; font-size: 0.85rem; }}
td, th {{ border: 1px solid #ccc; padding: 0.25rem 0.5rem; vertical-align: top; }}</style>
</head><body>
<h1>n2n: diffusion-based anomaly detection, a course</h1>
<p>Twelve lessons, in order: each starts with what you will learn and ends with what to remember
and exercises that check themselves. The papers: DiffusionAD
(<a href="https://arxiv.org/abs/2303.08730">arXiv 2303.08730</a>) and DeCo-Diff
(<a href="https://arxiv.org/abs/2503.19357">arXiv 2503.19357</a>).</p>
<h2>Learning path</h2>
{items}
{index}
</body></html>
"""


def _title(nb: object, fallback: str) -> str:
    for cell in nb.cells:  # type: ignore[attr-defined]
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def build_book(out: Path | str, notebooks_dir: Path | str = DEFAULT_NOTEBOOKS) -> Path:
    """Render every ``NN_*.ipynb`` in ``notebooks_dir`` to ``out/NN_*.html`` (no execution)
    and write ``out/index.html``. Returns the index page."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.filters import markdown2html

    out, notebooks_dir = Path(out), Path(notebooks_dir)
    paths = discover(notebooks_dir)
    if not paths:
        raise FileNotFoundError(f"no notebooks NN_*.ipynb in {notebooks_dir}")
    out.mkdir(parents=True, exist_ok=True)
    mathjax = out / "mathjax"
    if not (mathjax / "MathJax.js").exists():
        import jupyter_server_mathjax

        static = Path(jupyter_server_mathjax.__file__).parent / "static"
        shutil.copytree(static, mathjax, dirs_exist_ok=True)
    exporter = HTMLExporter(template_name="lab", mathjax_url=_MATHJAX)
    items, pages = [], {}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
        script = f'<script src="{_MATHJAX}"> </script>'
        if script not in body:
            raise RuntimeError(f"nbconvert's page for {path.name} no longer loads {_MATHJAX}")
        body = body.replace(script, _FONTS + script)
        page = out / f"{path.stem}.html"
        atomic_write_text(page, body)
        pages[path.stem[:2]] = page.name
        goals = nb.cells[0].source.partition("**What you will learn**")[2] if nb.cells else ""
        items.append(
            f'<h3><a href="{page.name}">{_title(nb, path.stem)}</a></h3>\n'
            + (markdown2html("**What you will learn**" + goals) if goals else "")
        )
    readme = notebooks_dir / "README.md"
    index = markdown2html(readme.read_text(encoding="utf-8")) if readme.exists() else ""

    def link(m: re.Match) -> str:  # a table cell holding notebook numbers: "01" or "07, 09"
        nums = [n.strip() for n in m.group(1).split(",")]
        return "<td>" + ", ".join(f'<a href="{pages[n]}">{n}</a>' for n in nums) + "</td>"

    index = re.sub(r"<td>(\d{2}(?:, \d{2})*)</td>", link, index)
    page = out / "index.html"
    atomic_write_text(
        page, _PAGE.format(index=index, items="\n".join(items), fonts=_FONTS, mathjax=_MATHJAX)
    )
    return page
