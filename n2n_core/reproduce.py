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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from n2n_core import paper_tables
from n2n_core.config import DataSpec
from n2n_core.io import atomic_write_csv, atomic_write_text
from n2n_core.metrics import METRIC_KEYS, mean_table

__all__ = [
    "RELEASED", "TARGETS", "Target", "check", "released_folder", "reproduce", "run_folder",
]  # fmt: skip


@dataclass(frozen=True)
class Target:
    method: str  # a registered method (n2n_core.methods)
    dataset: str  # a reader source: mvtec | visa | dagm | synthetic | photos
    tables: tuple[str, ...] = ()  # paper tables to compare with (may be empty)
    paper_method: str = ""  # the method's row name in those tables
    ablations: bool = False  # the method's ablation tables (``Method.ablations``) instead
    released: str = ""  # the table of the authors' released weights (``reproduce --weights``)


TARGETS = {
    "diffusionad-visa": Target(
        "diffusionad", "visa", ("diffusionad_table1", "diffusionad_table2"), "DiffusionAD"
    ),
    "diffusionad-dagm": Target("diffusionad", "dagm", ("diffusionad_table5",), "DiffusionAD"),
    "diffusionad-mvtec": Target("diffusionad", "mvtec", (), "DiffusionAD"),  # no MVTec table
    "decodiff-mvtec": Target(
        "decodiff", "mvtec", ("decodiff_table1",), "DeCo-Diff", released="decodiff_released"
    ),
    "decodiff-visa": Target(
        "decodiff", "visa", ("decodiff_table2",), "DeCo-Diff", released="decodiff_released"
    ),
    "diffusionad-synthetic": Target("diffusionad", "synthetic", (), "DiffusionAD"),
    "decodiff-synthetic": Target("decodiff", "synthetic", (), "DeCo-Diff"),
    "diffusionad-photos": Target("diffusionad", "photos"),  # the photographic benchmark (#16)
    "decodiff-photos": Target("decodiff", "photos"),
    # Tables 3-4 of each paper (Method.ablations): <method>-ablations on the paper's dataset,
    # <method>-ablations-<dataset> on another (synthetic: the smoke notebooks 06 and 09)
    "diffusionad-ablations": Target("diffusionad", "visa", ablations=True),
    "decodiff-ablations": Target("decodiff", "mvtec", ablations=True),
    **{
        f"{m}-ablations-{d}": Target(m, d, ablations=True)
        for m, ds in [("diffusionad", ("synthetic", "mvtec", "visa", "dagm")),
                      ("decodiff", ("synthetic", "mvtec", "visa"))]
        for d in ds
    },
    # the non-diffusion reference: no paper table, ours only
    **{f"patchknn-{d}": Target("patchknn", d)
       for d in ("synthetic", "photos", "mvtec", "visa", "dagm")},
}  # fmt: skip
RELEASED = sorted(name for name, t in TARGETS.items() if t.released)  # accept --weights


def run_folder(target: str, profile: str) -> Path:
    """Where ``target``'s runs and report go by default: ``runs/<profile>/<target>``; the
    embedded data's targets share the run folders of notebooks 05 and 09."""
    from n2n_core.paths import default_runs

    t = TARGETS[target]
    return default_runs() / profile / (t.method if t.dataset == "synthetic" else target)


def released_folder(target: str, profile: str) -> Path:
    """Where ``reproduce target --weights`` imports and evaluates a released checkpoint."""
    return run_folder(target, profile).with_name(f"{target}-released")


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

    t = TARGETS[target]
    root = _data_root(t, root, download)
    cats = categories or list_categories(t.dataset, root)
    method = get(t.method)
    out = Path(runs) if runs else None
    for run, cfg, tcfg, data in _runs(
        t, profile, root, out or Path("."), cats, categories is not None, overrides or {}
    ):
        if out is not None and (run / "model.safetensors").is_file():
            continue
        try:
            method.prepare(cfg, tcfg, data)
        except ValueError:
            if not (download and tcfg.require_textures and not tcfg.texture_dir):
                raise
            from n2n_core.data.download import download as fetch

            fetch("dtd", root.resolve().parent)  # then checked again
            method.prepare(cfg, tcfg, data)


def reproduce(
    target: str,
    profile: str = "smoke",
    root: Path | str | None = None,
    runs: Path | str | None = None,
    categories: list[str] | None = None,
    overrides: dict | None = None,
    download: bool = False,
    seed: int | None = None,
    tables: list[str] | None = None,
    weights: Path | str | None = None,
    weights_config: str = "UNet_L",
    vae: str | None = None,
    texture_dir: Path | str | None = None,
    foreground_dir: Path | str | None = None,
) -> dict[str, dict[str, float]]:
    """Train/evaluate every category of ``target`` and write the comparison report; returns
    our per-category metrics with their mean (an ablation target: per table row, the mean
    over categories). ``overrides``: settings replacing the profile's (``{"train.steps": 5}``
    or ``{"model": {...}, "train": {...}}``); ``seed``: the training seed; ``tables``: for an
    ablation target, which of the method's tables (default all). ``download``: fetch the
    dataset into ``root``'s parent folder first if ``root`` does not exist yet. ``weights``:
    evaluate the authors' released checkpoint instead of training (``import-official``; its
    ``weights_config`` and ``vae``) into ``runs`` (default ``runs/<profile>/<target>-released``),
    reported beside the paper's table and the released weights' own results.
    ``texture_dir``: the anomaly textures (DiffusionAD's paper profile: default
    ``<root's parent>/dtd/images``, required); ``foreground_dir``: precomputed foreground masks
    ``<foreground_dir>/<category>/<stem>.png`` instead of the estimated ones."""
    from n2n_core.data import list_categories
    from n2n_core.evaluate import evaluate_run
    from n2n_core.run_files import metrics_per_category, official_grid_aupro

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {sorted(TARGETS)}")
    t = TARGETS[target]
    if weights is not None and not t.released:
        raise ValueError(f"{target}: no released weights to evaluate (--weights is for {RELEASED})")
    root = _data_root(t, root, download)
    cats = categories or list_categories(t.dataset, root)
    overrides = {**(overrides or {}), **({} if seed is None else {"train.seed": seed})}
    if texture_dir is not None:
        overrides["train.texture_dir"] = str(Path(texture_dir).resolve())
    out = Path(runs) if runs else run_folder(target, profile)
    if weights is None:  # DTD and co. before the first category trains, not after it
        check(target, profile, root, categories, overrides, download, None if t.ablations else out)
    if t.ablations:
        return _ablations(
            target, profile, root, runs, cats, categories is not None, overrides, tables
        )
    if weights is not None:
        return _released(target, profile, root, runs, Path(weights), weights_config, vae)

    def done(run: Path) -> bool:  # evaluated after the model was last written
        m, w = run / "metrics.json", run / "model.safetensors"
        return m.is_file() and w.is_file() and m.stat().st_mtime >= w.stat().st_mtime

    ours: dict[str, dict[str, float]] = {}
    grid: tuple[str, dict[str, float | None]] = ("", {})
    one = categories is not None
    for run in _train(t, profile, root, out, cats, one, overrides, foreground_dir):
        if not done(run):
            evaluate_run(run)
        ours |= {c: r for c, r in metrics_per_category(run).items() if c != "mean"}
        key, values = official_grid_aupro(run)
        grid = (key or grid[0], grid[1] | values)
    table = mean_table(ours)
    _write_report(out, target, profile, table, _paper_numbers(t), grid=grid)
    return table


def _released(
    target: str, profile: str, root: Path, runs: Path | str | None, weights: Path,
    config: str, vae: str | None,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Import the released checkpoint once, evaluate it once, report it."""
    from n2n_core.evaluate import evaluate_run
    from n2n_core.run_files import metrics_per_category, official_grid_aupro
    from n2n_core.train import import_official

    t = TARGETS[target]
    out = Path(runs) if runs else released_folder(target, profile)
    if not (out / "run.json").is_file():  # the official class order is the dataset's name
        data = DataSpec(t.dataset, str(root.resolve()), "all")
        import_official(out, t.method, weights, config, t.dataset, vae, data)
    if not (out / "metrics.json").is_file():
        evaluate_run(out)
    ours = {c: r for c, r in metrics_per_category(out).items() if c != "mean"}
    table = mean_table(ours)
    paper, released = _paper_numbers(t), _paper_numbers(t, True)
    _write_report(out, target, profile, table, paper, released, official_grid_aupro(out))
    return table


def _ablations(
    target: str, profile: str, root: Path, runs: Path | str | None, cats: list[str], one: bool,
    overrides: dict, tables: list[str] | None,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """The method's ablation tables (``Method.ablations``): each separately trained variant
    trained once, each inference setting predicted once for all the rows (maps) it serves."""
    from n2n_core.device import default_device
    from n2n_core.evaluate import metrics_of, predict_categories
    from n2n_core.methods import get

    t = TARGETS[target]
    ablations = get(t.method).ablations
    unknown = sorted(set(tables or ()) - set(ablations))
    if unknown:
        raise ValueError(
            f"{t.method} has no ablation table(s) {unknown}; known: {sorted(ablations)}"
        )
    rows = [(name, a) for name in tables or ablations for a in ablations[name]]
    out = Path(runs) if runs else run_folder(target, profile)
    base = run_folder(f"{t.method}-{t.dataset}", profile)  # the method's own runs
    groups: dict[str, list] = {}
    for name, a in rows:
        groups.setdefault(json.dumps([a.train, a.inference], sort_keys=True), []).append((name, a))
    device = default_device()
    ours: dict[str, dict[str, dict[str, float]]] = {}  # row → category → metrics
    for group in groups.values():
        a = group[0][1]
        slug = "-".join(str(v) for v in a.train.values())
        if runs:
            folder = out / (slug or "full")
        else:  # beside the method's own runs, which the rows without a variant share
            folder = base.with_name(f"{base.name}-{slug}") if slug else base
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
            f"Percent, mean over the categories of {TARGETS[target].dataset}. Paper numbers from "
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
    atomic_write_text(out / "report.md", "\n".join(lines + _environment_note(out)) + "\n")


def _environment_note(out: Path) -> list[str]:
    """What produced the numbers: the versions, device and commit each run recorded."""
    from n2n_core.provenance import recorded

    envs = recorded(out)
    if not envs:
        return []
    return ["", "Trained with:", "", *(f"- {e}" for e in envs)]


GRID = "pixel_aupro_official_grid"  # report rows: the AUPRO as the official code computes it


def _grid_rows(
    table: dict[str, dict[str, float]], grid: tuple[str, dict[str, float | None]]
) -> dict[str, float | None]:
    """category → the official-grid AUPRO, with its mean over categories (None if any is)."""
    values = grid[1]
    if not values:
        return {}
    cats = [c for c in table if c != "mean"]
    out = {c: values.get(c) for c in cats}
    known = [v for v in out.values() if v is not None]
    out["mean"] = sum(known) / len(known) if len(known) == len(cats) else None
    return out


def _grid_note(key: str, method: str) -> list[str]:
    """What the two AUPRO rows are, and how the official code picks its checkpoint."""
    from n2n_core.methods import get

    m = get(method)
    n, rescale = m.official_grid_aupro or (0, "")
    lines = [
        "",
        f"AUPRO, two ways: `pixel_aupro` is exact (every threshold, FPR limit 0.3); `{GRID}` "
        f"is what the official code computes on the same maps ({n} thresholds between the "
        f"map's min and max, FPR rescaling `{rescale}`; `{key}` in eval_info.json), the way "
        "the paper's AUPRO was computed. Their difference is metric definition, not model.",
    ]
    if m.official_selection:
        lines += ["", f"Checkpoint: {m.official_selection}"]
    return lines


def _write_report(
    out: Path,
    target: str,
    profile: str,
    table: dict[str, dict[str, float]],
    paper: dict[str, dict[str, float]],
    released: dict[str, dict[str, float]] | None = None,
    grid: tuple[str, dict[str, float | None]] = ("", {}),
) -> None:
    """report.csv (every category and metric) and report.md (the compared ones); ``grid``:
    the official-grid AUPRO (``run_files.official_grid_aupro``), a row beside the exact one,
    compared with the same published AUPRO."""
    grid_rows = _grid_rows(table, grid)
    rows = []
    for cat, metrics in table.items():
        for k in METRIC_KEYS:
            p = paper.get(cat.lower(), {}).get(k)
            rows.append((cat, k, metrics[k], p, None if p is None else metrics[k] - p))
            if k == "pixel_aupro" and grid_rows.get(cat) is not None:
                g = grid_rows[cat]
                rows.append((cat, GRID, g, p, None if p is None else g - p))

    def published(source: dict, cat: str, k: str) -> float | None:  # a grid row: the AUPRO
        return source.get(cat.lower(), {}).get("pixel_aupro" if k == GRID else k)

    header = ["category", "metric", "ours", "paper", "delta"]
    body = [[cat, k, _fmt(o), _fmt(p), _fmt(d, "+")] for cat, k, o, p, d in rows]
    if released is not None:  # the authors' released weights' own results, beside the paper
        header += ["released", "delta_released"]
        for line, (cat, k, o, _, _) in zip(body, rows, strict=True):
            r = published(released, cat, k)
            line += [_fmt(r), _fmt(None if r is None else o - r, "+")]
    atomic_write_csv(out / "report.csv", header, body)
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
            r = published(released, cat, k)
            if r is not None:
                lines.append(
                    f"| {cat} | {k} | {100 * o:.1f} | {100 * r:.1f} | {100 * (o - r):+.1f} |"
                )
    if grid_rows:
        lines += _grid_note(grid[0], TARGETS[target].method)
    atomic_write_text(out / "report.md", "\n".join(lines + _environment_note(out)) + "\n")
