"""The notebook pipeline: run ``notebooks/NN_*.ipynb`` headless and collect their key numbers.

Inside a notebook, :func:`report` shows the numbers that matter (rounded, as a small table)
and tags them with a private MIME type; :func:`run_notebooks` executes each notebook with
papermill, injecting ``profile`` (and ``interactive=False``), reads those numbers back from
the executed copy and writes ``summary.json`` / ``summary.md`` next to the copies.
"""

from __future__ import annotations

import ast
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from n2n_core.io import atomic_write_text
from n2n_core.paths import notebooks_dir

__all__ = [
    "KEY_NUMBERS_MIME",
    "discover",
    "parse_param",
    "prune_widget_state",
    "report",
    "run_notebooks",
]

KEY_NUMBERS_MIME = "application/vnd.n2n.key-numbers+json"
NOTEBOOK_NAME = re.compile(r"^\d{2}_[A-Za-z0-9_-]+\.ipynb$")
DEFAULT_NOTEBOOKS = notebooks_dir()  # the checkout's notebooks/, or the installed copy


def report(**numbers: float | int | str) -> None:
    """Display a notebook's key numbers: a text table for readers, JSON for the runner."""
    from IPython.display import display

    width = max(map(len, numbers), default=0)
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in numbers.items())
    display({KEY_NUMBERS_MIME: numbers, "text/plain": text}, raw=True)


def discover(notebooks_dir: Path = DEFAULT_NOTEBOOKS, only: Sequence[str] = ()) -> list[Path]:
    """``NN_topic.ipynb`` files in teaching order; ``only`` keeps those whose name starts with
    one of the given prefixes (``"01"``, ``"04_metrics"``)."""
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"notebook folder {notebooks_dir} does not exist")
    found = sorted(p for p in notebooks_dir.iterdir() if NOTEBOOK_NAME.match(p.name))
    if only:
        found = [p for p in found if any(p.name.startswith(o) for o in only)]
        if not found:
            raise ValueError(f"no notebook in {notebooks_dir} starts with any of {list(only)}")
    return found


def parse_param(item: str) -> tuple[str, object]:
    """``key=value`` from the command line; the value is a Python literal when it parses."""
    key, sep, raw = item.partition("=")
    if not sep or not key.isidentifier():
        raise ValueError(f"parameter must look like name=value, got {item!r}")
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key, raw


def _parameters(nb: Path, given: Mapping[str, object]) -> dict[str, object]:
    """The parameters to run ``nb`` with (``interactive = False`` where it declares one),
    checked against the ones its ``parameters`` cell declares."""
    import papermill

    try:
        declared = papermill.inspect_notebook(str(nb))
    except ValueError as exc:  # e.g. "No kernel name found in notebook"
        raise ValueError(
            f"{nb}: {exc} (its metadata needs a kernelspec: open it in Jupyter, choose the "
            "Python 3 kernel and save)"
        ) from None
    if "profile" not in declared:
        raise ValueError(f"{nb}: the first code cell must be tagged 'parameters' and set profile")
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f"{nb.name} has no parameter(s) {unknown}; it takes {sorted(declared)}")
    for name, value in given.items():  # a value of the default's type (None: anything)
        try:
            default = ast.literal_eval(str(declared[name].get("default")))
        except (ValueError, SyntaxError):
            continue
        kind = type(default)
        if default is None or kind not in (int, float, bool, str):
            continue
        accepted = (int, float) if kind is float else (kind,)
        if not isinstance(value, accepted) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(
                f"{nb.name}: parameter {name}={value!r} must be {kind.__name__} like its "
                f"default {default!r}"
            )
    params = dict(given)
    if "interactive" in declared:
        params.setdefault("interactive", False)
    return params


def _key_numbers(executed: Path) -> dict[str, object]:
    nb = json.loads(executed.read_text(encoding="utf-8"))
    numbers: dict[str, object] = {}
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            numbers.update(out.get("data", {}).get(KEY_NUMBERS_MIME, {}))
    return numbers


def run_notebooks(
    profile: str = "smoke",
    out_dir: Path | str | None = None,
    notebooks_dir: Path | str = DEFAULT_NOTEBOOKS,
    only: Sequence[str] = (),
    parameters: Mapping[str, object] | None = None,
    kernel_name: str = "python3",
) -> list[dict[str, object]]:
    """Execute every notebook with papermill into ``out_dir`` (default ``runs/<profile>``).

    Every notebook runs even if an earlier one fails; the summary records each status, the
    wall time and the key numbers, and names the executed copy to open when one failed.
    """
    from n2n_core.profiles import get_profile

    if "profile" in (parameters or {}):
        raise ValueError("choose the profile with --profile, not --param profile=...")
    get_profile(profile)  # refuse an unknown profile before starting any kernel
    out = Path(out_dir if out_dir is not None else Path("runs") / profile).resolve()
    out.mkdir(parents=True, exist_ok=True)
    notebooks = discover(Path(notebooks_dir), only)
    rows: list[dict[str, object]] = []
    try:
        for nb in notebooks:
            params = _parameters(nb, {"profile": profile, **dict(parameters or {})})
            rows.append(_execute(nb, out / nb.name, params, kernel_name))
    finally:  # written whatever stopped the run (Ctrl-C too), with the notebooks done so far
        _write_summary(out, profile, rows)
    return rows


def _execute(nb: Path, executed: Path, params: dict, kernel_name: str) -> dict[str, object]:
    """Run one notebook with papermill into ``executed``; its summary row."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    print(f"[n2n] {nb.name} (profile={params['profile']}) ...", flush=True)
    start, status, error = time.perf_counter(), "ok", ""
    try:
        papermill.execute_notebook(
            str(nb), str(executed), parameters=params, kernel_name=kernel_name,
            cwd=str(nb.parent), progress_bar=False, log_output=False,
        )  # fmt: skip
    except PapermillExecutionError as exc:
        status, error = "failed", f"{exc.ename}: {exc.evalue}".strip()
        print(
            f"[n2n] {nb.name} FAILED in cell {exc.exec_count}: {error}\n"
            f"      open {executed} to see the failing cell",
            flush=True,
        )
    except Exception as exc:  # a dead kernel, a timeout: this notebook only
        status, error = "failed", f"{type(exc).__name__}: {exc}".strip()
        print(f"[n2n] {nb.name} FAILED ({error}); the next notebook runs", flush=True)
    seconds = round(time.perf_counter() - start, 1)
    numbers = _key_numbers(executed) if executed.exists() else {}
    print(f"[n2n] {nb.name}: {status} in {seconds} s {numbers}", flush=True)
    return {
        "notebook": nb.name, "status": status, "seconds": seconds, "key_numbers": numbers,
        "error": error, "executed": str(executed),
    }  # fmt: skip


def _write_summary(out: Path, profile: str, rows: list[dict[str, object]]) -> None:
    from n2n_core.provenance import describe, environment

    env = environment()
    summary = {"profile": profile, "environment": env, "notebooks": rows}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    lines = [
        f"# n2n notebook run — profile `{profile}`",
        "",
        f"Environment: {describe(env)}",
        "",
        "| notebook | status | seconds | key numbers |",
        "|---|---|---|---|",
    ]
    for r in rows:
        nums = ", ".join(f"{k}={v}" for k, v in r["key_numbers"].items())  # type: ignore[union-attr]
        status = r["status"] if r["status"] == "ok" else f"**{r['status']}**: {r['error']}"
        lines.append(f"| {r['notebook']} | {status} | {r['seconds']} | {nums} |")
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")


def execute_in_place(
    notebooks_dir: Path | str = DEFAULT_NOTEBOOKS, only: Sequence[str] = (), timeout: int = 1800
) -> None:
    """Re-execute the committed notebooks as they are (their own default parameters, i.e. the
    smoke profile, except ``interactive = False``: sliders stored as static figures) and store
    the outputs, without per-cell timing metadata, for nbval."""
    import nbformat
    from nbclient import NotebookClient

    os.environ.setdefault("TQDM_DISABLE", "1")
    for nb_path in discover(Path(notebooks_dir), only):
        print(f"[n2n] executing {nb_path.name} in place ...", flush=True)
        nb = nbformat.read(nb_path, as_version=4)
        params = _interactive_parameters(nb)
        if params is not None:  # stored outputs are read statically: sliders as figures
            source, params.source = params.source, params.source + "\ninteractive = False"
        NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            record_timing=False,
            resources={"metadata": {"path": str(nb_path.parent)}},
        ).execute()
        if params is not None:
            params.source = source
        for cell in nb.cells:
            cell.metadata.pop("execution", None)
        prune_widget_state(nb)
        atomic_write_text(nb_path, nbformat.writes(nb) + "\n")


def _interactive_parameters(nb: Any) -> Any:
    """The parameters cell, if it declares ``interactive`` (else None)."""
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            return cell if re.search(r"^interactive\s*=", cell.source, re.M) else None
    return None


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def prune_widget_state(nb: Any) -> None:
    """Keep only the saved widget models that an output displays (and the models those
    reference): a progress bar closed during execution leaves its models behind, and a static
    reader (GitHub, the book) would show them as stale bars."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    todo = [
        o["data"][WIDGET_VIEW]["model_id"]
        for cell in nb.cells
        for o in cell.get("outputs", [])
        if WIDGET_VIEW in o.get("data", {})
    ]
    keep: set[str] = set()
    while todo:
        mid = todo.pop()
        if mid in keep or mid not in state:
            continue
        keep.add(mid)
        todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[mid]))
    if keep:
        nb.metadata["widgets"][WIDGET_STATE]["state"] = {k: state[k] for k in keep}
    else:
        nb.metadata.pop("widgets", None)
