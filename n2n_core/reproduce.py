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

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from n2n_core import paper_tables
from n2n_core.io import atomic_write_csv, atomic_write_text
from n2n_core.metrics import METRIC_KEYS, mean_table

__all__ = ["TARGETS", "Target", "reproduce", "run_folder"]


@dataclass(frozen=True)
class Target:
    method: str  # a registered method (n2n_core.methods)
    dataset: str  # a reader source: mvtec | visa | dagm | synthetic
    tables: tuple[str, ...] = ()  # paper tables to compare with (may be empty)
    paper_method: str = ""  # the method's row name in those tables


TARGETS = {
    "diffusionad-visa": Target(
        "diffusionad", "visa", ("diffusionad_table1", "diffusionad_table2"), "DiffusionAD"
    ),
    "diffusionad-dagm": Target("diffusionad", "dagm", ("diffusionad_table5",), "DiffusionAD"),
    "diffusionad-mvtec": Target("diffusionad", "mvtec", (), "DiffusionAD"),  # no MVTec table
    "decodiff-mvtec": Target("decodiff", "mvtec", ("decodiff_table1",), "DeCo-Diff"),
    "decodiff-visa": Target("decodiff", "visa", ("decodiff_table2",), "DeCo-Diff"),
    "diffusionad-synthetic": Target("diffusionad", "synthetic", (), "DiffusionAD"),
    "decodiff-synthetic": Target("decodiff", "synthetic", (), "DeCo-Diff"),
    # the non-diffusion reference: no paper table, ours only
    **{f"patchknn-{d}": Target("patchknn", d) for d in ("synthetic", "mvtec", "visa", "dagm")},
}  # fmt: skip


def run_folder(target: str, profile: str) -> Path:
    """Where ``target``'s runs and report go by default: ``runs/<profile>/<target>``; the
    embedded data's targets share the run folders of notebooks 05 and 09."""
    from n2n_core.paths import default_runs

    t = TARGETS[target]
    return default_runs() / profile / (t.method if t.dataset == "synthetic" else target)


def _paper_numbers(target: Target) -> dict[str, dict[str, float]]:
    """category (lower case) → metric → the paper's value in [0, 1]."""
    out: dict[str, dict[str, float]] = {}
    for name in target.tables:
        for r in paper_tables.load(name):
            if r["method"] == target.paper_method and r["metric"] in METRIC_KEYS:
                cat = str(r["category"]).lower()
                out.setdefault(cat, {})[str(r["metric"])] = float(r["value"]) / 100
    return out


def _configs(target: Target, profile: str, categories: list[str], overrides: dict) -> tuple:
    from n2n_core.methods import resolve

    return resolve(target.method, profile, target.dataset, categories, overrides)


def reproduce(
    target: str,
    profile: str = "smoke",
    root: Path | str | None = None,
    runs: Path | str | None = None,
    categories: list[str] | None = None,
    overrides: dict | None = None,
    download: bool = False,
    seed: int | None = None,
) -> dict[str, dict[str, float]]:
    """Train/evaluate every category of ``target`` and write the comparison report; returns
    our per-category metrics with their mean. ``overrides``: settings replacing the profile's
    (``{"train.steps": 5}`` or ``{"model": {...}, "train": {...}}``); ``seed``: the training
    seed. ``download``: fetch the dataset
    into ``root``'s parent folder first if ``root`` does not exist yet."""
    from n2n_core.data import list_categories
    from n2n_core.evaluate import evaluate_run
    from n2n_core.methods import get
    from n2n_core.paths import default_root
    from n2n_core.train import DataSpec, ensure_trained

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {sorted(TARGETS)}")
    t = TARGETS[target]
    root = Path(root) if root else default_root() / t.dataset
    if t.dataset == "synthetic":
        from n2n_core.data import ensure_synthetic

        ensure_synthetic(root)
    elif download and not root.exists():
        from n2n_core.data.download import DATASETS
        from n2n_core.data.download import download as fetch

        if root.name != DATASETS[t.dataset].folder:
            raise ValueError(
                f"download puts {t.dataset} into a folder named "
                f"{DATASETS[t.dataset].folder!r}; root {root} is named otherwise"
            )
        fetch(t.dataset, root.parent)
    out = Path(runs) if runs else run_folder(target, profile)
    cats = categories or list_categories(t.dataset, root)
    overrides = {**(overrides or {}), **({} if seed is None else {"train.seed": seed})}
    cfg, tcfg = _configs(t, profile, cats if categories is None else cats[:1], overrides)

    def done(run: Path) -> bool:  # evaluated after the model was last written
        m, w = run / "metrics.json", run / "model.safetensors"
        return m.is_file() and w.is_file() and m.stat().st_mtime >= w.stat().st_mtime

    ours: dict[str, dict[str, float]] = {}
    if not get(t.method).per_category:  # one model for all categories (multi-class)
        run = out
        data = DataSpec(t.dataset, str(root), "all" if categories is None else cats[0])
        if categories is not None and len(cats) > 1:
            raise ValueError(
                f"{t.method} reproduces all categories with one model, or a single one"
            )
        ensure_trained(run, cfg, tcfg, data)
        if not done(run):
            evaluate_run(run)
        with (run / "metrics_per_category.csv").open(newline="") as f:
            for r in csv.DictReader(f):
                if r["category"] != "mean":
                    ours[r["category"]] = {k: float(r[k]) for k in METRIC_KEYS}
    else:
        for cat in cats:
            run = out / cat
            ensure_trained(run, cfg, tcfg, DataSpec(t.dataset, str(root), cat))
            ours[cat] = (
                json.loads((run / "metrics.json").read_text()) if done(run) else evaluate_run(run)
            )
    table = mean_table(ours)
    _write_report(out, target, profile, table, _paper_numbers(t))
    return table


def _write_report(
    out: Path,
    target: str,
    profile: str,
    table: dict[str, dict[str, float]],
    paper: dict[str, dict[str, float]],
) -> None:
    rows = []
    for cat, metrics in table.items():
        for k in METRIC_KEYS:
            p = paper.get(cat.lower(), {}).get(k)
            rows.append((cat, k, metrics[k], p, None if p is None else metrics[k] - p))
    atomic_write_csv(
        out / "report.csv",
        ["category", "metric", "ours", "paper", "delta"],
        [
            [cat, k, f"{o:.4f}", "" if p is None else f"{p:.4f}", "" if d is None else f"{d:+.4f}"]
            for cat, k, o, p, d in rows
        ],
    )
    compared = [r for r in rows if r[3] is not None]
    lines = [
        f"# {target} ({profile} profile): ours vs the paper",
        "",
        "Percent. Paper numbers from `data/paper_tables/`; blank where the paper reports none.",
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
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
