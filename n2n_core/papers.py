"""What each paper reports, as data: its tables per dataset, its ablation rows, the authors'
released weights, and how the official code evaluates (the AUPRO grid, checkpoint choice).
The reproduce targets (``targets()``) are derived from it; methods (``n2n_core.methods``)
know nothing of papers, and a registered method without a paper gets the targets of every
dataset (ours only, no published column).

DiffusionAD: arXiv 2303.08730; DeCo-Diff: arXiv 2503.19357.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from n2n_core.deviation import MAP_KINDS

__all__ = ["DATASETS", "PAPERS", "Ablation", "Paper", "Target", "paper_of", "targets"]

DATASETS = ("synthetic", "photos", "mvtec", "visa", "dagm")  # reproduce's datasets


@dataclass(frozen=True)
class Ablation:
    """One row of a paper's ablation table as n2n reruns it: ``train``, model settings of a
    separately trained run named ``variant`` (empty: the method's own run); ``inference``,
    settings at evaluation; ``map``, an extra map of the prediction (``Prediction.extras``,
    scored by ``score_<map>``) instead of the main one."""

    row: str  # the method column of n2n_core/data/paper_tables/<table>.csv
    train: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)
    map: str | None = None
    variant: str = ""  # the folder of the separately trained run (with ``train``)


@dataclass(frozen=True)
class Paper:
    method: str  # the registered method it describes
    arxiv: str
    row: str  # the method's row name in the paper's tables
    tables: dict[str, tuple[str, ...]]  # dataset → its main-result tables (may be empty)
    ablation_datasets: tuple[str, ...]  # the first is the paper's own
    ablations: dict[str, tuple[Ablation, ...]]  # ablation table → its rows
    released: dict[str, str] = field(default_factory=dict)  # dataset → released weights' table
    # the official code's grid AUPRO (a key of metrics.GRIDS), which evaluate reports beside
    # the exact one
    grid_aupro: str | None = None
    selection: str = ""  # how the official code picks the checkpoint it reports
    notebook: str = ""  # the notebook that shows a reproduction


PAPERS = {
    p.method: p
    for p in (
        Paper(
            "diffusionad", "2303.08730", "DiffusionAD",
            tables={"visa": ("diffusionad_table1", "diffusionad_table2"),
                    "dagm": ("diffusionad_table5",), "mvtec": (), "synthetic": (), "photos": ()},
            ablation_datasets=("visa", "synthetic", "mvtec", "dagm"),
            ablations={
                "diffusionad_table3": (  # the sub-networks (§4.4): each trained on its own
                    Ablation("SegmentationAD", train={"variant": "segmentation_only"},
                             variant="segmentation_only"),
                    Ablation("DenoisingAD", train={"variant": "denoising_only"},
                             variant="denoising_only"),
                    Ablation("DiffusionAD"),
                ),
                "diffusionad_table4": tuple(  # the noise levels λ of Alg. 2, on the same model
                    Ablation(f"DiffusionAD λ={','.join(map(str, lams))}",
                             inference={"lambdas": lams})
                    for lams in [(100,), (200,), (100, 200)]
                ),
            },
            grid_aupro="diffusionad",  # eval.py pixel_pro: 1000 thresholds, min-max FPR
            selection=(
                "n2n reports the last checkpoint of the profile's training length. The official "
                "DiffusionAD code evaluates on the test set every 50 epochs and keeps the best "
                "checkpoint, so its numbers are selected on the test data they report."
            ),
            notebook="10",
        ),
        Paper(
            "decodiff", "2503.19357", "DeCo-Diff",
            tables={"mvtec": ("decodiff_table1",), "visa": ("decodiff_table2",),
                    "synthetic": (), "photos": ()},
            ablation_datasets=("mvtec", "synthetic", "visa"),
            ablations={
                "decodiff_table3": tuple(  # correction strategy × reverse steps, geometric map
                    Ablation(f"DeCo-Diff ({s}, {n} steps)",
                             inference={"strategy": s, "reverse_steps": n}, map="geometric")
                    for s, steps in [("z_0", (1, 2, 5, 10)), ("z_t-1", (2, 5, 10))]
                    for n in steps
                ),
                # the discrepancy levels of Eq. 15: every map kind comes with each prediction
                "decodiff_table4": tuple(Ablation(f"DeCo-Diff ({k})", map=k) for k in MAP_KINDS),
            },
            released={"mvtec": "decodiff_released", "visa": "decodiff_released"},
            grid_aupro="decodiff",  # compute_pro: 200 thresholds, FPR / max
            notebook="11",
        ),
    )
}  # fmt: skip


def paper_of(method: str) -> Paper | None:
    return PAPERS.get(method)


@dataclass(frozen=True)
class Target:
    """A reproduce target: ``method`` on ``dataset``, compared with ``tables`` (rows named
    ``paper_method``), or the method's ablation tables; ``folder``: its default folder under
    ``runs/<profile>/``."""

    method: str
    dataset: str
    tables: tuple[str, ...] = ()
    paper_method: str = ""
    ablations: bool = False
    released: str = ""  # the table of the authors' released weights (``--weights``)
    folder: str = ""


def targets() -> dict[str, Target]:
    """Every target: ``<method>-<dataset>`` (the paper's datasets for a method with a paper,
    every dataset for one without), ``<method>-ablations`` on the paper's dataset and
    ``<method>-ablations-<dataset>``. The embedded data's targets share the run folders of the
    notebooks that train them (``runs/<profile>/<method>``)."""
    from n2n_core import methods

    out: dict[str, Target] = {}
    for name in methods.names():
        p = PAPERS.get(name)
        for d in p.tables if p else DATASETS:
            folder = name if d == "synthetic" else f"{name}-{d}"  # notebooks 05 and 09
            tables = p.tables[d] if p else ()
            released = p.released.get(d, "") if p else ""
            out[f"{name}-{d}"] = Target(
                name, d, tables, p.row if p else "", released=released, folder=folder
            )
        for i, d in enumerate(p.ablation_datasets if p else ()):
            keys = [f"{name}-ablations-{d}"] + ([f"{name}-ablations"] if i == 0 else [])
            out |= {
                k: Target(name, d, ablations=True, folder=name if d == "synthetic" else k)
                for k in keys
            }
    return out
