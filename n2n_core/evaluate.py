"""Evaluate a training run on its test split and write the contract outputs:

``RUN_DIR/metrics.json``  the seven metrics (``n2n_core.metrics.METRIC_KEYS``), floats in [0, 1];
                          for a multi-class DeCo-Diff run, their mean over the categories
``RUN_DIR/metrics_per_category.csv``  one row per category and their mean (the papers' layout)
``RUN_DIR/eval_info.json`` how they were obtained (λ, K, resolution, seed, counts, timing)
``RUN_DIR/scores.csv``     per test image: path, label, defect, image score
``RUN_DIR/figures/samples.png``  input, x̂0, anomaly map and ground truth for a few images
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import torch

from n2n_core.data import AnomalyDataset, load_samples
from n2n_core.deviation import MAP_KINDS
from n2n_core.io import atomic_write_bytes, atomic_write_csv, atomic_write_text
from n2n_core.methods.decodiff import DeCoDiff, detect, image_score
from n2n_core.methods.diffusionad import DiffusionAD, top_k_score
from n2n_core.metrics import METRIC_KEYS, evaluate, mean_table
from n2n_core.models.vae import LatentVAE

__all__ = ["evaluate_run", "load_model", "load_vae", "predict", "predict_decodiff"]


def load_model(run_dir: Path | str, device: str | torch.device = "cpu") -> DiffusionAD | DeCoDiff:
    """The trained model of a finished run, in eval mode."""
    from safetensors.torch import load_file

    from n2n_core.train import METHODS, load_run, method_of

    cfg, _, _ = load_run(run_dir)
    weights = Path(run_dir) / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} not found: the run has not finished (resume it with --resume)"
        )
    model = METHODS[method_of(cfg)][1](cfg)
    model.load_state_dict(load_file(weights))
    return model.to(device).eval()


def load_vae(run_dir: Path | str, device: str | torch.device = "cpu") -> LatentVAE:
    """The frozen autoencoder of a DeCo-Diff run (pretrained, or trained into RUN_DIR/vae)."""
    from n2n_core.models.vae import ensure_vae
    from n2n_core.train import load_run

    cfg, _, _ = load_run(run_dir)
    return ensure_vae(cfg.vae, Path(run_dir) / "vae").to(device)


@torch.no_grad()
def predict_decodiff(
    model: DeCoDiff,
    vae: LatentVAE,
    dataset: AnomalyDataset,
    label: int = 0,
    strategy: str | None = None,
    reverse_steps: int | None = None,
    batch_size: int = 32,
) -> dict[str, torch.Tensor]:
    """Every map kind of Table 4 (N, 1, H, W) with its image scores (``scores_<kind>``),
    masks, labels and the corrected images, for a dataset of one category (class ``label``)."""
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        x = batch["image"].to(device)
        labels = torch.full((len(x),), label, device=device)
        res = detect(model, vae, x, labels, strategy, reverse_steps)
        for k in (*MAP_KINDS, "corrected"):
            out.setdefault(k, []).append(res[k].float().cpu())
        out.setdefault("masks", []).append(batch["mask"])
        out.setdefault("labels", []).append(batch["label"])
    pred = {k: torch.cat(v) for k, v in out.items()}
    for k in MAP_KINDS:
        pred[f"scores_{k}"] = image_score(pred[k])
    return pred


def metrics_of(pred: dict[str, torch.Tensor], kind: str | None = None) -> dict[str, float]:
    """The seven metrics of a prediction (for DeCo-Diff: of map ``kind``)."""
    maps = pred["maps"] if kind is None else pred[kind]
    scores = pred["scores"] if kind is None else pred[f"scores_{kind}"]
    m = evaluate(maps[:, 0], pred["masks"][:, 0] > 0.5, scores, pred["labels"])
    return {k: float(m[k]) for k in METRIC_KEYS}


@torch.no_grad()
def predict(
    model: DiffusionAD,
    dataset: AnomalyDataset,
    lambdas: tuple[int, ...] | None = None,
    top_k: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, torch.Tensor]:
    """Maps (N, 1, H, W), image scores (N,), masks (N, 1, H, W), labels (N,) and the first
    λ's x̂0 (N, 3, H, W, empty for SegmentationAD) for a whole dataset, on the model's device."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out: dict[str, list[torch.Tensor]] = {"maps": [], "masks": [], "labels": [], "x0_hat": []}
    for batch in loader:
        maps, x0_hats = model.anomaly_map(batch["image"].to(device), g, lambdas)
        out["maps"].append(maps.cpu())
        out["masks"].append(batch["mask"])
        out["labels"].append(batch["label"])
        if x0_hats:
            out["x0_hat"].append(x0_hats[0].float().cpu())
    res = {k: torch.cat(v) for k, v in out.items() if v}
    res["scores"] = top_k_score(res["maps"], top_k or model.cfg.top_k)
    return res


def _figure(dataset: AnomalyDataset, pred: dict[str, torch.Tensor], n: int = 6) -> bytes:
    from n2n_core import viz

    labels = pred["labels"].tolist()
    picks = [i for i, y in enumerate(labels) if y][: n - 2] + [
        i for i, y in enumerate(labels) if not y
    ][:2]
    fig = viz.prediction_grid(
        [dataset[i]["image"] for i in picks],
        [pred["x0_hat"][i] for i in picks] if "x0_hat" in pred else None,
        [pred["maps"][i] for i in picks],
        [pred["masks"][i] for i in picks],
        [f"{dataset.samples[i].defect}  score {float(pred['scores'][i]):.2f}" for i in picks],
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    viz.plt.close(fig)
    return buf.getvalue()


def evaluate_run(
    run_dir: Path | str,
    lambdas: tuple[int, ...] | None = None,
    top_k: int | None = None,
    seed: int = 0,
    device: str | None = None,
    write: bool = True,
) -> dict[str, float]:
    """Evaluate a run on its test split (DiffusionAD: Alg. 2; DeCo-Diff: deviation correction
    and Eq. 15 per category); returns (and writes) the seven metrics — for a multi-class
    run their unweighted mean over categories, as the papers report. ``lambdas``/``top_k``
    apply to DiffusionAD only."""
    from n2n_core.train import categories_of, load_run, method_of

    run_dir = Path(run_dir)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(run_dir, dev)
    cfg, _, data = load_run(run_dir)
    method = method_of(cfg)
    vae = load_vae(run_dir, dev) if method == "decodiff" else None
    per_cat, scores_rows, info_counts = {}, [], {"test_images": 0, "anomalous": 0}
    seconds, fig = 0.0, None
    for cat in categories_of(data):
        samples = load_samples(data.source, data.root, cat, "test")
        ds = AnomalyDataset(samples, cfg.image_size, (-1.0, 1.0))
        start = time.perf_counter()
        if method == "decodiff":
            label = cfg.classes.index(cat) if cfg.classes else 0
            pred = predict_decodiff(model, vae, ds, label)
            pred["maps"], pred["scores"] = pred[cfg.anomaly_map], pred[f"scores_{cfg.anomaly_map}"]
            pred["x0_hat"] = pred["corrected"]
        else:
            pred = predict(model, ds, lambdas, top_k, seed)
        seconds += time.perf_counter() - start
        per_cat[cat] = metrics_of(pred)
        scores_rows += [(cat, s, v) for s, v in zip(samples, pred["scores"].tolist(), strict=True)]
        info_counts["test_images"] += len(ds)
        info_counts["anomalous"] += int(pred["labels"].sum())
        if fig is None and write:
            fig = _figure(ds, pred)
    table = mean_table(per_cat)
    metrics = table["mean"] if len(per_cat) > 1 else next(iter(per_cat.values()))
    if write:
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        atomic_write_csv(
            run_dir / "metrics_per_category.csv",
            ["category", *METRIC_KEYS],
            [
                [cat, *(f"{r[k]:.6f}" for k in METRIC_KEYS)]
                for cat, r in (table if len(per_cat) > 1 else per_cat).items()
            ],
        )
        atomic_write_csv(
            run_dir / "scores.csv",
            ["category", "image", "label", "defect", "score"],
            [[cat, str(s.image), s.label, s.defect, f"{v:.6f}"] for cat, s, v in scores_rows],
        )
        info = {"method": method, "categories": list(per_cat), "resolution": cfg.image_size}
        if method == "decodiff":
            info |= {
                "anomaly_map": cfg.anomaly_map,
                "strategy": cfg.strategy,
                "reverse_steps": cfg.reverse_steps,
                "image_score": "max of the map",
            }
        else:
            info |= {
                "lambdas": None if cfg.norm_guided else list(lambdas or cfg.lambdas),
                "norm_guided_t": list(cfg.guide_t) if cfg.norm_guided else None,
                "top_k": top_k or cfg.top_k,
                "seed": seed,
                "variant": cfg.variant,
            }
        info |= {
            **info_counts,
            "seconds": seconds,
            "images_per_second": info_counts["test_images"] / seconds,
            "device": str(dev),
        }
        atomic_write_text(run_dir / "eval_info.json", json.dumps(info, indent=2) + "\n")
        atomic_write_bytes(run_dir / "figures" / "samples.png", fig)
    return metrics
