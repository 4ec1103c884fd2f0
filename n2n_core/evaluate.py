"""Evaluate a training run on its test split and write the contract outputs:

``RUN_DIR/metrics.json``  the seven metrics (``n2n_core.metrics.METRIC_KEYS``), floats in [0, 1];
                          for a multi-category run, their mean over the categories
``RUN_DIR/metrics_per_category.csv``  one row per category and their mean (the papers' layout)
``RUN_DIR/eval_info.json`` how they were obtained (method settings, resolution, seed, timing)
``RUN_DIR/scores.csv``     per test image: category, path, label, defect, image score
``RUN_DIR/figures/samples.png``  input, repair, anomaly map and ground truth for a few images

The method (``n2n_core.methods``) loads the run and predicts; everything here is generic.
"""

from __future__ import annotations

import io
import json
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from n2n_core import methods
from n2n_core.config import categories_of
from n2n_core.data import AnomalyDataset, load_mask, load_samples
from n2n_core.device import default_device
from n2n_core.io import atomic_write_bytes, atomic_write_csv, atomic_write_text
from n2n_core.methods import Prediction
from n2n_core.metrics import (
    GRIDS,
    METRIC_KEYS,
    OFFICIAL_GRID,
    aupro_grid,
    compute,
    mean_or_none,
    mean_table,
)
from n2n_core.papers import paper_of
from n2n_core.run_folder import RunFolder

__all__ = [
    "evaluate_run",
    "load_model",
    "load_predictor",
    "metrics_of",
    "predict_categories",
    "predict_dataset",
]


def _config(run: RunFolder, overrides: dict | None) -> Any:
    cfg = run.configs[0]
    for key, value in (overrides or {}).items():
        cfg = methods.set_field(cfg, key, value)
    return cfg


def load_predictor(
    run_dir: Path | str | RunFolder,
    device: str | torch.device = "cpu",
    overrides: dict | None = None,
) -> tuple[methods.Method, Any, Any]:
    """(method, model config, what the method's ``predict`` takes) for a finished run;
    ``overrides`` replace inference settings of the stored config (e.g. ``{"lambdas": (100,)}``
    for DiffusionAD, ``{"reverse_steps": 10}`` for DeCo-Diff)."""
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    cfg = _config(run, overrides)
    method = methods.method_of(cfg)
    weights = run.weights()
    try:
        return method, cfg, method.load(run.path, cfg, weights, device)
    except (RuntimeError, KeyError, ValueError) as exc:  # state_dict mismatch: keys, shapes
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{run.weights_path} does not fit the {method.name} model that {run.record_path} "
            f"describes ({first}): was run.json edited, or the weights replaced? Train again "
            "into a new --out"
        ) from None


def load_model(run_dir: Path | str, device: str | torch.device = "cpu") -> Any:
    """The trained model of a finished run, in eval mode, as the method loads it (DeCo-Diff's
    with its autoencoder)."""
    return load_predictor(run_dir, device)[2]


@torch.no_grad()
def predict_dataset(
    method: methods.Method,
    model: Any,
    dataset: AnomalyDataset,
    class_index: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[Prediction, torch.Tensor, torch.Tensor]:
    """The method's prediction for a whole dataset (on the CPU), with the masks (N, 1, H, W)
    and labels (N,). One generator seeded with ``seed`` draws any noise, batch after batch."""
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=method.eval_batch_size)
    parts, masks, labels = [], [], []
    for batch in loader:
        p = method.predict(model, batch["image"].to(device), class_index, g)
        extras = {k: v.float().cpu() for k, v in p.extras.items()}
        parts.append(Prediction(p.maps.float().cpu(), p.scores.float().cpu(), extras))
        masks.append(batch["mask"])
        labels.append(batch["label"])
    return Prediction.cat(parts), torch.cat(masks), torch.cat(labels)


def predict_categories(
    run_dir: Path | str | RunFolder,
    seed: int = 0,
    device: str | torch.device = "cpu",
    overrides: dict | None = None,
) -> Iterator[tuple[str, AnomalyDataset, Prediction, torch.Tensor, torch.Tensor, float]]:
    """For each category of a run's test split: (category, dataset, prediction, masks, labels,
    seconds the prediction took), the model loaded once (``overrides`` as in
    ``load_predictor``)."""
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    method, cfg, model = load_predictor(run, device, overrides)
    data = run.configs[2]
    _check_generated(data, run)
    for cat in categories_of(data):
        ds = method.dataset(cfg, load_samples(data.source, data.root, cat, "test"))
        start = time.perf_counter()
        pred, masks, labels = predict_dataset(
            method, model, ds, method.class_index(cfg, cat), seed, device
        )
        seconds = time.perf_counter() - start
        lost = [i for i in range(len(ds)) if labels[i] and not bool(masks[i].any())]
        empty = [
            i for i in lost if ds.samples[i].mask is None or not load_mask(ds.samples[i].mask).any()
        ]
        if empty:
            names = ", ".join(str(ds.samples[i].mask or ds.samples[i].image) for i in empty[:10])
            warnings.warn(
                f"{cat}: {len(empty)} anomalous test image(s) have an empty mask file (no "
                f"defect pixel at all): {names}. They count as anomalous images with no defect "
                "pixels; check those masks",
                stacklevel=2,
            )
        lost = [i for i in lost if i not in empty]
        if lost:
            names = ", ".join(str(ds.samples[i].image) for i in lost[:10])
            warnings.warn(
                f"{cat}: {len(lost)} anomalous test image(s) have no defect pixel left at "
                f"{masks.shape[-1]} px (the defect vanished when the mask was resized): {names}. "
                "They count as anomalous images with no defect pixels; a larger image size "
                "keeps them",
                stacklevel=2,
            )
        yield cat, ds, pred, masks, labels, seconds


def _check_generated(data: Any, run: RunFolder) -> None:
    """Evaluation reads the run's data; it never generates an embedded dataset wherever a
    run.json says (a copied or edited run folder could name any folder)."""
    from n2n_core.data.readers import GENERATED

    root = Path(data.root)
    if data.source in GENERATED and not (root / GENERATED[data.source]).is_file():
        from n2n_core.data.samples import DatasetError

        raise DatasetError(
            f"the {data.source} dataset this run was trained on is not at {root} (data.root in "
            f"{run.record_path}); generate it there with `python -m n2n_core data {data.source} "
            f"--root {root}`, then evaluate again"
        )


def metrics_of(
    pred: Prediction, masks: torch.Tensor, labels: torch.Tensor, kind: str | None = None
) -> dict[str, float]:
    """The seven metrics of a prediction, or of its extra map ``kind`` (scored by
    ``extras["score_<kind>"]``)."""
    maps = pred.maps if kind is None else pred.extras[kind]
    scores = pred.scores if kind is None else pred.extras[f"score_{kind}"]
    m = compute(maps[:, 0], masks[:, 0] > 0.5, scores, labels)
    return {k: float(m[k]) for k in METRIC_KEYS}


def _figure(
    dataset: AnomalyDataset,
    pred: Prediction,
    masks: torch.Tensor,
    labels: torch.Tensor,
    repair_label: str,
    n: int = 6,
) -> bytes:
    from n2n_core import viz

    ys = labels.tolist()
    picks = [i for i, y in enumerate(ys) if y][: n - 2] + [i for i, y in enumerate(ys) if not y][:2]
    repair = pred.extras.get("repair")
    fig = viz.prediction_grid(
        [dataset[i]["image"] for i in picks],
        None if repair is None else [repair[i] for i in picks],
        [pred.maps[i] for i in picks],
        [masks[i] for i in picks],
        [f"{dataset.samples[i].defect}  score {float(pred.scores[i]):.2f}" for i in picks],
        repair_label,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    viz.plt.close(fig)
    return buf.getvalue()


def _write_scores(run_dir: Path, rows: list) -> None:
    """scores.csv: one row per test image scored so far, rewritten after every category so
    that a crash loses nothing; a failed write (full or read-only disk) is a warning. Scores
    keep 9 significant digits (every float32 digit): rounded, close scores of an undertrained
    model would tie in the file and rank otherwise than in metrics.json."""
    try:
        atomic_write_csv(
            run_dir / "scores.csv",
            ["category", "image", "label", "defect", "score"],
            [[cat, str(s.image), s.label, s.defect, f"{v:.9g}"] for cat, s, v in rows],
        )
    except OSError as exc:
        warnings.warn(f"could not write {run_dir / 'scores.csv'}: {exc}", stacklevel=3)


def _write(run_dir: Path, per_cat: dict, info: dict, fig: bytes | None) -> None:
    """metrics_per_category.csv, eval_info.json and the figure (scores.csv: ``_write_scores``)."""
    table = mean_table(per_cat)
    atomic_write_csv(
        run_dir / "metrics_per_category.csv",
        ["category", *METRIC_KEYS],
        [
            [cat, *(f"{r[k]:.6f}" for k in METRIC_KEYS)]
            for cat, r in (table if len(per_cat) > 1 else per_cat).items()
        ],
    )
    atomic_write_text(run_dir / "eval_info.json", json.dumps(info, indent=2) + "\n")
    if fig is not None:
        atomic_write_bytes(run_dir / "figures" / "samples.png", fig)


def evaluate_run(
    run_dir: Path | str,
    seed: int = 0,
    device: str | None = None,
    write: bool = True,
    overrides: dict | None = None,
    on_write_error: str = "warn",
) -> dict[str, float]:
    """Evaluate a run on its test split, category by category; returns (and writes) the
    seven metrics — for a multi-category run their unweighted mean over categories, as the
    papers report. ``overrides``: inference settings, as in ``load_predictor``. The run folder
    is locked while it is written (``RunFolder.lock``). If the results cannot be written (a
    full or read-only disk), an older metrics.json is removed where possible and
    ``on_write_error`` decides: ``"warn"`` (the metrics are still returned) or ``"raise"``
    (an OSError naming the folder: the command line's choice)."""
    if on_write_error not in ("warn", "raise"):
        raise ValueError(f"on_write_error must be 'warn' or 'raise', got {on_write_error!r}")
    run = RunFolder(run_dir)
    run.configs  # noqa: B018 — a folder without a valid run.json is named before anything is locked
    if not write:
        return _evaluate(run, seed, device or default_device(), False, overrides)
    with run.lock("evaluate"):
        return _evaluate(run, seed, device or default_device(), on_write_error, overrides)


def _evaluate(
    run: RunFolder, seed: int, dev: Any, write: bool | str, overrides: dict | None
) -> dict[str, float]:
    run_dir, cfg = run.path, _config(run, overrides)
    method = methods.method_of(cfg)
    paper = paper_of(method.name)
    grid = paper.grid_aupro if paper else None
    per_cat, rows, counts, grid_aupro = {}, [], {"test_images": 0, "anomalous": 0}, {}
    seconds, fig = 0.0, None
    for cat, ds, pred, masks, labels, took in predict_categories(run, seed, dev, overrides):
        seconds += took
        per_cat[cat] = metrics_of(pred, masks, labels)
        if grid and bool((masks > 0.5).any()):
            with warnings.catch_warnings():  # NaN (too few grid points) is stored as null
                warnings.simplefilter("ignore")
                v = aupro_grid(pred.maps[:, 0], masks[:, 0] > 0.5, grid)
            grid_aupro[cat] = None if math.isnan(v) else v
        rows += [(cat, s, v) for s, v in zip(ds.samples, pred.scores.tolist(), strict=True)]
        counts["test_images"] += len(ds)
        counts["anomalous"] += int(labels.sum())
        if write:
            _write_scores(run_dir, rows)  # the scores so far: nothing lost on a crash
            fig = fig if fig is not None else _figure(ds, pred, masks, labels, method.repair_symbol)
    metrics = mean_table(per_cat)["mean"] if len(per_cat) > 1 else next(iter(per_cat.values()))
    if write:
        info = {"method": method.name, "categories": list(per_cat), "resolution": cfg.image_size}
        info |= {**method.eval_info(cfg), "seed": seed, "overrides": overrides or {}, **counts}
        info |= {"seconds": seconds, "images_per_second": counts["test_images"] / seconds}
        if grid and grid_aupro:  # paper-compatible, named so; metrics.json keeps the exact one
            info[OFFICIAL_GRID] = {
                "code": grid, "thresholds": GRIDS[grid].thresholds,
                "fpr_rescale": GRIDS[grid].rescale, "categories": grid_aupro,
                "mean": mean_or_none(list(grid_aupro.values())),
            }  # fmt: skip
        info["device"] = str(dev)
        _write_results(run_dir, metrics, per_cat, info, fig, write)
    return metrics


def _write_results(run_dir: Path, metrics: dict, per_cat: dict, info: dict, fig, mode) -> None:
    try:
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        _write(run_dir, per_cat, info, fig)
    except OSError as exc:  # a full or read-only disk
        try:
            (run_dir / "metrics.json").unlink(missing_ok=True)  # never a stale one beside
        except OSError:
            pass
        message = (
            f"could not write the results into {run_dir} ({exc}); any metrics.json there is "
            "from an earlier evaluation. Free space or make the folder writable, then evaluate "
            "again"
        )
        if mode == "raise":
            raise OSError(message) from None
        warnings.warn(message, stacklevel=3)
