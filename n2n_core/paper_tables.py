"""The papers' published numbers, transcribed into
``n2n_core/data/paper_tables/<paper>_table<N>.csv`` (package data: an installed n2n has them).

Tidy rows: ``method, dataset, category, metric, value`` — values in percent as printed (FPS as
frames per second), ``category`` = ``mean`` for the papers' "Average" rows and for tables that
only report means. Metric names are ours (``n2n_core.metrics.METRIC_KEYS``; DiffusionAD's
"Pixel PRO" is ``pixel_aupro``, DeCo-Diff's AUPRC is ``*_ap``) plus ``fps``.
"""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["FOLDER", "TABLES", "load", "pivot"]

FOLDER = Path(__file__).resolve().parent / "data" / "paper_tables"

TABLES = {
    "diffusionad_table1": "VisA, image AUROC per category (Table 1)",
    "diffusionad_table2": "VisA, pixel PRO per category (Table 2)",
    "diffusionad_table3": "sub-network ablation on VisA (Table 3)",
    "diffusionad_table4": "λ ablation on VisA (Table 4)",
    "diffusionad_table5": "DAGM, image AUROC per class (Table 5)",
    "decodiff_table1": "MVTec AD, multi-class, mean of 15 categories (Table 1)",
    "decodiff_table2": "VisA, multi-class, mean of 12 categories (Table 2)",
    "decodiff_table3": "correction strategy × reverse steps, MVTec AD (Table 3)",
    "decodiff_table4": "discrepancy levels, MVTec AD (Table 4)",
    # not a paper table: the official README's results of its released UNet_L weights (its
    # AUPRO on a 200-threshold grid); what an import-official run is compared with
    "decodiff_released": "released UNet_L weights, MVTec AD and VisA (official README)",
}


def load(name: str, folder: Path | str | None = None) -> list[dict[str, str | float]]:
    """The rows of one table, values as floats."""
    if name not in TABLES:
        raise ValueError(f"unknown paper table {name!r}; known: {sorted(TABLES)}")
    path = Path(folder or FOLDER) / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (expected a tidy CSV; see data/README.md)")
    with path.open(newline="") as f:
        return [{**r, "value": float(r["value"])} for r in csv.DictReader(f)]


def pivot(rows: list[dict], method: str, metric: str) -> dict[str, float]:
    """category → value for one method and metric."""
    return {
        r["category"]: r["value"] for r in rows if r["method"] == method and r["metric"] == metric
    }
