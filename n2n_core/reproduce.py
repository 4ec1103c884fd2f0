"""Rerun a paper table: train (or reuse) every category's run, evaluate it, and put our numbers
next to the published ones (``n2n_core.paper_tables``).

``reproduce("diffusionad-visa", profile="paper")`` writes, under ``runs/<profile>/<target>/``, one
run folder per category (DiffusionAD) or one multi-class run (DeCo-Diff, the folder itself),
each with its ``metrics.json``, and ``report.csv`` / ``report.md``: category × metric, ours,
the paper's, and the difference.
Finished categories are skipped, interrupted ones resumed, so the command can be rerun after a
crash or a Colab disconnect.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from n2n_core import paper_tables
from n2n_core.config import DataSpec
from n2n_core.io import atomic_write_csv, atomic_write_text
from n2n_core.metrics import GRIDS, METRIC_KEYS, OFFICIAL_GRID, mean_or_none, mean_table
from n2n_core.papers import PAPERS, Target, targets

__all__ = [
    "Target", "check", "released_folder", "report_folder", "reproduce", "run_folder",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name == "TARGETS":  # every target of the registered methods (``papers.targets``)
        return targets()
    if name == "RELEASED":
        return _released_targets()
    raise AttributeError(name)


def _released_targets() -> list[str]:
    """The targets that accept --weights."""
    return sorted(n for n, t in targets().items() if t.released)


def _target(name: str) -> Target:
    known = targets()
    if name not in known:
        raise ValueError(f"unknown target {name!r}; known: {sorted(known)}")
    return known[name]


def run_folder(target: str, profile: str) -> Path:
    """Where ``target``'s runs and report go by default: ``runs/<profile>/<folder>``
    (``Target.folder``: the embedded data's targets share the notebooks' run folders)."""
    from n2n_core.paths import default_runs

    return default_runs() / profile / _target(target).folder


def released_folder(target: str, profile: str) -> Path:
    """Where ``reproduce target --weights`` imports and evaluates a released checkpoint."""
    return run_folder(target, profile).with_name(f"{target}-released")


def report_folder(
    target: str, profile: str, runs: Path | str | None = None, weights: bool = False
) -> Path:
    """Where ``reproduce`` writes the target's runs and report: ``runs`` if given, else
    ``run_folder`` (``released_folder`` for the released weights)."""
    if runs:
        return Path(runs)
    return (released_folder if weights else run_folder)(target, profile)


def _paper_numbers(target: Target, released: bool = False) -> dict[str, dict[str, float]]:
    """category (lower case) → metric → the paper's value in [0, 1] (``released``: the
    authors' released weights' values instead)."""
    out: dict[str, dict[str, float]] = {}
    for name in (target.released,) if released else target.tables:
        for r in paper_tables.load(name):
            if released and r["dataset"] != target.dataset:
                continue
            if (released or r["method"] == target.paper_method) and r["metric"] in METRIC_KEYS:
                cat = str(r["category"]).lower()
                out.setdefault(cat, {})[str(r["metric"])] = float(r["value"]) / 100
    return out


def _data_root(t: Target, root: Path | str | None, download: bool) -> Path:
    """The dataset folder: the embedded data is generated, a real one downloaded on request."""
    from n2n_core.data.readers import GENERATED, ensure_generated_source
    from n2n_core.paths import default_root

    root = Path(root) if root else default_root() / t.dataset
    if t.dataset in GENERATED:
        ensure_generated_source(t.dataset, root)
    elif download and not root.exists():
        from n2n_core.data.download import DATASETS
        from n2n_core.data.download import download as fetch

        if root.name != DATASETS[t.dataset].folder:
            raise ValueError(
                f"download puts {t.dataset} into a folder named "
                f"{DATASETS[t.dataset].folder!r}; root {root} is named otherwise"
            )
        fetch(t.dataset, root.parent)
    return root


def _runs(
    t: Target, profile: str, root: Path, out: Path, cats: list[str], one: bool, overrides: dict,
    foreground_dir: Path | str | None = None,
) -> list[tuple[Path, Any, Any, DataSpec]]:  # fmt: skip
    """(run folder, model config, training config, data) of each of the target's runs under
    ``out``: one per category, or one multi-class run (``out`` itself) for a method that
    trains one model for all. ``one``: the user chose a single category; ``foreground_dir``:
    precomputed foreground masks, one sub-folder per category."""
    from n2n_core.methods import get, resolve

    cfg, tcfg = resolve(t.method, profile, t.dataset, cats[:1] if one else cats, overrides)
    if not get(t.method).per_category:
        if one and len(cats) > 1:
            raise ValueError(
                f"{t.method} reproduces all categories with one model, or a single one"
            )
        return [(out, cfg, tcfg, DataSpec(t.dataset, str(root), cats[0] if one else "all"))]
    fg = (lambda c: str(Path(foreground_dir) / c)) if foreground_dir else (lambda c: None)
    return [(out / c, cfg, tcfg, DataSpec(t.dataset, str(root), c, fg(c))) for c in cats]


def _train(
    t: Target, profile: str, root: Path, out: Path, cats: list[str], one: bool, overrides: dict,
    foreground_dir: Path | str | None = None,
) -> list[Path]:  # fmt: skip
    """Train (or resume, or reuse) the target's runs (``_runs``)."""
    from n2n_core.train import ensure_trained

    runs = _runs(t, profile, root, out, cats, one, overrides, foreground_dir)
    return [ensure_trained(run, cfg, tcfg, data) for run, cfg, tcfg, data in runs]


def check(
    target: str,
    *,
    profile: str = "smoke",
    root: Path | str | None = None,
    categories: list[str] | None = None,
    overrides: dict | None = None,
    download: bool = False,
    runs: Path | str | None = None,
) -> None:
    """What ``reproduce`` needs before it trains anything, in seconds: the dataset and what
    the profile's training needs beside it (the paper profile of DiffusionAD: DTD). Raises a
    ValueError that names what is missing and the command that gets it; with ``download``,
    fetches a missing DTD into the dataset's parent folder first. ``runs``: the target's
    folder, whose finished runs need nothing more."""
    from n2n_core.data import list_categories
    from n2n_core.methods import get
    from n2n_core.run_folder import RunFolder

    t = _target(target)
    root = _data_root(t, root, download)
    cats = categories or list_categories(t.dataset, root)
    method = get(t.method)
    out = Path(runs) if runs else None
    for run, cfg, tcfg, data in _runs(
        t, profile, root, out or Path("."), cats, categories is not None, overrides or {}
    ):
        if out is not None and RunFolder(run).finished:
            continue
        try:
            method.prepare(cfg, tcfg, data)
        except ValueError:
            needed = method.downloads(cfg) if download else ()
            if not needed:
                raise
            from n2n_core.data.download import download as fetch

            for name in needed:
                fetch(name, root.resolve().parent)
            method.prepare(cfg, tcfg, data)  # checked again


def reproduce(
    target: str,
    *,
    profile: str = "smoke",
    root: Path | str | None = None,
    runs: Path | str | None = None,
    categories: list[str] | None = None,
    overrides: dict | None = None,
    download: bool = False,
    seed: int | None = None,
    tables: list[str] | None = None,
    weights: Path | str | None = None,
    weights_options: dict[str, Any] | None = None,
    foreground_dir: Path | str | None = None,
) -> dict[str, dict[str, float]]:
    """Train/evaluate every category of ``target`` and write the comparison report into
    ``runs`` (default ``run_folder(target, profile)``); returns our per-category metrics with
    their mean (an ablation target: per table row, the mean over categories). The command
    line's ``reproduce`` and notebooks 10 and 11 call this.

    ``overrides``: settings replacing the profile's (``{"train.steps": 5}`` or
    ``{"model": {...}, "train": {...}}``; e.g. DiffusionAD's anomaly textures
    ``{"model.texture_dir": ...}``, by default ``<root's parent>/dtd/images``); ``seed``: the
    training seed; ``tables``: for an ablation target, which of the paper's ablation tables
    (default all); ``download``: fetch the dataset into ``root``'s parent folder first if
    ``root`` does not exist yet (and what the method's training needs beside it, e.g. DTD);
    ``weights``: evaluate the authors' released checkpoint instead of training
    (``import-official`` with ``weights_options``, e.g. DeCo-Diff's ``config`` and ``vae``),
    reported beside the paper's table and the released weights' own results;
    ``foreground_dir``: precomputed foreground masks
    ``<foreground_dir>/<category>/<stem>.png`` instead of the estimated ones."""
    from n2n_core.data import list_categories

    t = _target(target)
    if tables and not t.ablations:
        raise ValueError(f"tables (--tables) are for the ablation targets, not {target}")
    if weights is not None and not t.released:
        raise ValueError(
            f"{target}: no released weights to evaluate (--weights is for {_released_targets()})"
        )
    root = _data_root(t, root, download)
    cats = categories or list_categories(t.dataset, root)
    overrides = {**(overrides or {}), **({} if seed is None else {"train.seed": seed})}
    out = report_folder(target, profile, runs, weights is not None)
    if weights is not None:
        return _released(t, target, profile, root, out, Path(weights), weights_options or {})
    # DTD and co. before the first category trains, not after it
    check(target, profile=profile, root=root, categories=categories, overrides=overrides,
          download=download, runs=None if t.ablations else out)  # fmt: skip
    one = categories is not None
    if t.ablations:
        return _ablations(t, target, profile, root, runs, cats, one, overrides, tables)
    runs_ = _train(t, profile, root, out, cats, one, overrides, foreground_dir)
    table, grid = _evaluated(runs_)
    _write_report(out, target, profile, table, _paper_numbers(t), grid=grid)
    return table


def _evaluated(runs: list[Path]) -> tuple[dict, dict[str, float | None]]:
    """Each run evaluated (unless it was after its model was last written): our table with
    its mean, and the official-grid AUPRO per category."""
    from n2n_core.evaluate import evaluate_run
    from n2n_core.run_files import metrics_per_category, official_grid_aupro
    from n2n_core.run_folder import RunFolder

    ours: dict[str, dict[str, float]] = {}
    grid: dict[str, float | None] = {}
    for run in runs:
        if not RunFolder(run).evaluated:
            evaluate_run(run)
        ours |= {c: r for c, r in metrics_per_category(run).items() if c != "mean"}
        grid |= official_grid_aupro(run)
    return mean_table(ours), grid


def _released(
    t: Target, target: str, profile: str, root: Path, out: Path, weights: Path,
    options: dict[str, Any],
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Import the released checkpoint once, evaluate it once, report it."""
    from n2n_core.run_folder import RunFolder
    from n2n_core.train import import_official

    if not RunFolder(out).started:
        data = DataSpec(t.dataset, str(root.resolve()), "all")
        import_official(out, t.method, weights, data, **options)
    table, grid = _evaluated([out])
    paper, released = _paper_numbers(t), _paper_numbers(t, True)
    _write_report(out, target, profile, table, paper, released, grid)
    return table


def _ablations(
    t: Target, target: str, profile: str, root: Path, runs: Path | str | None, cats: list[str],
    one: bool, overrides: dict, tables: list[str] | None,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """The paper's ablation tables (``papers.Paper.ablations``): each separately trained
    variant trained once, each inference setting predicted once for all the rows (maps) it
    serves."""
    from n2n_core.device import default_device
    from n2n_core.evaluate import metrics_of, predict_categories

    ablations = PAPERS[t.method].ablations
    unknown = sorted(set(tables or ()) - set(ablations))
    if unknown:
        raise ValueError(
            f"{t.method} has no ablation table(s) {unknown}; known: {sorted(ablations)}"
        )
    rows = [(name, a) for name in tables or ablations for a in ablations[name]]
    out = report_folder(target, profile, runs)
    base = run_folder(f"{t.method}-{t.dataset}", profile)  # the method's own runs
    groups: dict[str, list] = {}
    for name, a in rows:
        groups.setdefault(json.dumps([a.train, a.inference], sort_keys=True), []).append((name, a))
    device = default_device()
    ours: dict[str, dict[str, dict[str, float]]] = {}  # row → category → metrics
    for group in groups.values():
        a = group[0][1]
        if runs:
            folder = out / (a.variant or "full")
        else:  # beside the method's own runs, which the rows without a variant share
            folder = base.with_name(f"{base.name}-{a.variant}") if a.variant else base
        variant = {**overrides, **{f"model.{k}": v for k, v in a.train.items()}}
        for run in _train(t, profile, root, folder, cats, one, variant):
            for cat, _, pred, masks, labels, _ in predict_categories(run, 0, device, a.inference):
                for _, b in group:
                    ours.setdefault(b.row, {})[cat] = metrics_of(pred, masks, labels, b.map)
    table = {row: mean_table(per_cat)["mean"] for row, per_cat in ours.items()}
    _write_ablation_report(out, target, profile, rows, table)
    return table


def _fmt(v: float | None, sign: str = "") -> str:
    """A report.csv cell: 4 decimals, blank for a missing value."""
    return "" if v is None else f"{v:{sign}.4f}"


def _write_ablation_report(
    out: Path, target: str, profile: str, rows: list, table: dict[str, dict[str, float]]
) -> None:
    csv_rows, lines = (
        [],
        [
            f"# {target} ({profile} profile): ours vs the paper's ablation tables",
            "",
            f"Percent, mean over the categories of {_target(target).dataset}. Paper numbers from "
            "`n2n_core/data/paper_tables/` (their own dataset; blank where the paper has none).",
        ],
    )
    for name in dict.fromkeys(n for n, _ in rows):
        paper = {
            (r["method"], r["metric"]): float(r["value"]) / 100
            for r in paper_tables.load(name)
            if r["category"] == "mean"
        }
        lines += ["", f"## {paper_tables.TABLES[name]}", "", "| row | metric | ours | paper | Δ |"]
        lines.append("|---|---|---|---|---|")
        for _, a in (r for r in rows if r[0] == name):
            for k in METRIC_KEYS:
                o, p = table[a.row][k], paper.get((a.row, k))
                d = None if p is None else o - p
                csv_rows.append([name, a.row, k, _fmt(o), _fmt(p), _fmt(d, "+")])
                if p is not None:
                    lines.append(
                        f"| {a.row} | {k} | {100 * o:.1f} | {100 * p:.1f} | {100 * d:+.1f} |"
                    )
    atomic_write_csv(
        out / "report.csv", ["table", "row", "metric", "ours", "paper", "delta"], csv_rows
    )
    notes = _selection_note(out) + _environment_note(out)
    atomic_write_text(out / "report.md", "\n".join(lines + notes) + "\n")


def _selection_note(out: Path) -> list[str]:
    """A warning when any run's checkpoint was chosen on the test set (optimistic numbers)."""
    chosen = [
        p.parent.name for p in sorted(out.rglob("train_info.json"))
        if "selected_checkpoint" in json.loads(p.read_text())
    ]  # fmt: skip
    if not chosen:
        return []
    return [
        "",
        f"**Optimistic:** the checkpoint of {len(chosen)} run(s) ({', '.join(chosen[:5])}) was "
        "chosen on the test set (`train.select_on_test_every`, the official code's choice): "
        "the test set picked the model it scores.",
    ]


def _environment_note(out: Path) -> list[str]:
    """What produced the numbers: the versions, device and commit each run recorded."""
    from n2n_core.provenance import recorded

    envs = recorded(out)
    if not envs:
        return []
    return ["", "Trained with:", "", *(f"- {e}" for e in envs)]


def _grid_rows(
    table: dict[str, dict[str, float]], grid: dict[str, float | None]
) -> dict[str, float | None]:
    """category → the official-grid AUPRO, with its mean over categories (``mean_or_none``)."""
    if not grid:
        return {}
    out = {c: grid.get(c) for c in table if c != "mean"}
    return out | {"mean": mean_or_none(list(out.values()))}


def _grid_note(method: str) -> list[str]:
    """What the two AUPRO rows are, and how the official code picks its checkpoint."""
    paper = PAPERS[method]
    g = GRIDS[paper.grid_aupro or ""]  # only called when the runs hold that AUPRO
    lines = [
        "",
        f"AUPRO, two ways: `pixel_aupro` is exact (every threshold, FPR limit 0.3); "
        f"`{OFFICIAL_GRID}` is what the official code computes on the same maps "
        f"({g.thresholds} thresholds between the map's min and max, FPR rescaling "
        f"`{g.rescale}`; also in "
        "eval_info.json), the way the paper's AUPRO was computed. Their difference is metric "
        "definition, not model.",
    ]
    if paper.selection:
        lines += ["", f"Checkpoint: {paper.selection}"]
    return lines


def _report_rows(table: dict, paper: dict, grid: dict) -> list[tuple]:
    """(category, metric, ours, paper, ours − paper) for every category and metric, with the
    official-grid AUPRO after the exact one, compared with the same published AUPRO."""
    grid_rows = _grid_rows(table, grid)
    rows = []
    for cat, metrics in table.items():
        for k in METRIC_KEYS:
            p = paper.get(cat.lower(), {}).get(k)
            rows.append((cat, k, metrics[k], p, None if p is None else metrics[k] - p))
            if k == "pixel_aupro" and grid_rows.get(cat) is not None:
                g = grid_rows[cat]
                rows.append((cat, OFFICIAL_GRID, g, p, None if p is None else g - p))
    return rows


def _published(source: dict, cat: str, k: str) -> float | None:  # a grid row: the AUPRO
    return source.get(cat.lower(), {}).get("pixel_aupro" if k == OFFICIAL_GRID else k)


def _report_csv(out: Path, rows: list[tuple], released: dict | None) -> None:
    header = ["category", "metric", "ours", "paper", "delta"]
    body = [[cat, k, _fmt(o), _fmt(p), _fmt(d, "+")] for cat, k, o, p, d in rows]
    if released is not None:  # the authors' released weights' own results, beside the paper
        header += ["released", "delta_released"]
        for line, (cat, k, o, _, _) in zip(body, rows, strict=True):
            r = _published(released, cat, k)
            line += [_fmt(r), _fmt(None if r is None else o - r, "+")]
    atomic_write_csv(out / "report.csv", header, body)


def _report_md(target: str, profile: str, rows: list[tuple], released: dict | None) -> list[str]:
    compared = [r for r in rows if r[3] is not None]
    lines = [
        f"# {target} ({profile} profile): ours vs the paper",
        "",
        "Percent. Paper numbers from `n2n_core/data/paper_tables/`; blank where the paper "
        "reports none.",
        "",
        "| category | metric | ours | paper | Δ |",
        "|---|---|---|---|---|",
    ]
    for cat, k, o, p, d in rows if compared else [r for r in rows if r[0] == "mean"]:
        if compared and p is None:
            continue
        ps = "" if p is None else f"{100 * p:.1f}"
        ds = "" if d is None else f"{100 * d:+.1f}"
        lines.append(f"| {cat} | {k} | {100 * o:.1f} | {ps} | {ds} |")
    if released is not None:
        lines += ["", "The released weights' own results (official README; AUPRO on its grid):", ""]
        lines += ["| category | metric | ours | released | Δ |", "|---|---|---|---|---|"]
        for cat, k, o, _, _ in rows:
            r = _published(released, cat, k)
            if r is not None:
                lines.append(
                    f"| {cat} | {k} | {100 * o:.1f} | {100 * r:.1f} | {100 * (o - r):+.1f} |"
                )
    return lines


def _write_report(
    out: Path,
    target: str,
    profile: str,
    table: dict[str, dict[str, float]],
    paper: dict[str, dict[str, float]],
    released: dict[str, dict[str, float]] | None = None,
    grid: dict[str, float | None] | None = None,
) -> None:
    """report.csv (every category and metric) and report.md (the compared ones); ``grid``:
    the official-grid AUPRO per category (``run_files.official_grid_aupro``), a row beside the
    exact one."""
    rows = _report_rows(table, paper, grid or {})
    _report_csv(out, rows, released)
    lines = _report_md(target, profile, rows, released)
    if any(r[1] == OFFICIAL_GRID for r in rows):
        lines += _grid_note(_target(target).method)
    atomic_write_text(out / "report.md", "\n".join(lines + _environment_note(out)) + "\n")
