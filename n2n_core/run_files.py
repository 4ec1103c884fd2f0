"""Readers for the files of a run folder (written by ``train`` and ``evaluate``), so that
notebooks and reports never parse them by hand. ``methods.load_run`` reads run.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from n2n_core.metrics import METRIC_KEYS, OFFICIAL_GRID

__all__ = [
    "metrics_per_category", "official_grid_aupro", "train_info", "train_log", "training_seconds",
]  # fmt: skip


def _file(run_dir: Path | str, name: str, made_by: str) -> Path:
    path = Path(run_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {made_by}")
    return path


def train_log(run_dir: Path | str, stage: str | None = None) -> list[dict[str, float]]:
    """The logged losses, one dict per logged step (``step`` and each loss term); ``stage``:
    a training stage's log instead (e.g. ``"vae"``: DeCo-Diff's autoencoder)."""
    folder = Path(run_dir) / stage if stage else Path(run_dir)
    path = _file(folder, "train_log.jsonl", "the run has not started training")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_info(run_dir: Path | str, stage: str | None = None) -> dict[str, Any]:
    """What training cost (steps, seconds, processes, device, environment)."""
    folder = Path(run_dir) / stage if stage else Path(run_dir)
    return json.loads(_file(folder, "train_info.json", "the run has not finished").read_text())


def training_seconds(run_dir: Path | str) -> float:
    """Training time of a finished run, its stages (sub-folders with a train_info.json, e.g.
    DeCo-Diff's autoencoder) included."""
    run_dir = Path(run_dir)
    stages = [p for p in run_dir.iterdir() if (p / "train_info.json").is_file()]
    return train_info(run_dir)["seconds"] + sum(train_info(p)["seconds"] for p in stages)


def metrics_per_category(run_dir: Path | str) -> dict[str, dict[str, float]]:
    """category → the seven metrics, with the ``mean`` row, from metrics_per_category.csv."""
    path = _file(run_dir, "metrics_per_category.csv", "evaluate the run first")
    with path.open(newline="") as f:
        return {r["category"]: {k: float(r[k]) for k in METRIC_KEYS} for r in csv.DictReader(f)}


def official_grid_aupro(run_dir: Path | str) -> dict[str, float | None]:
    """The AUPRO as the method's official code computes it (a threshold grid, written by
    ``evaluate`` beside the exact one as ``pixel_aupro_official_grid``): category → value,
    None where too few grid points fall below the FPR limit; {} for a method without one."""
    info = json.loads(_file(run_dir, "eval_info.json", "evaluate the run first").read_text())
    if OFFICIAL_GRID in info:
        return dict(info[OFFICIAL_GRID]["categories"])
    for key, values in info.items():  # older eval_info.json: pixel_aupro_grid<n>_<r>_official
        if key.startswith("pixel_aupro_grid") and key.endswith("_official"):
            return {c: v for c, v in values.items() if c != "mean"}
    return {}
