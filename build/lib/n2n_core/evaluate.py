"""Evaluate a training run on its test split (Alg. 2) and write the contract outputs:

``RUN_DIR/metrics.json``  the seven metrics (``n2n_core.metrics.METRIC_KEYS``), floats in [0, 1]
``RUN_DIR/eval_info.json`` how they were obtained (λ, K, resolution, seed, counts, timing)
``RUN_DIR/scores.csv``     per test image: path, label, defect, image score
``RUN_DIR/figures/samples.png``  input, x̂0, anomaly map and ground truth for a few images
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import torch

from n2n_core.data import AnomalyDataset, load_samples
from n2n_core.io import atomic_write_bytes, atomic_write_text
from n2n_core.methods.diffusionad import DiffusionAD, top_k_score
from n2n_core.metrics import METRIC_KEYS, evaluate

__all__ = ["evaluate_run", "load_model", "predict"]


def load_model(run_dir: Path | str, device: str | torch.device = "cpu") -> DiffusionAD:
    """The trained model of a finished run, in eval mode."""
    from safetensors.torch import load_file

    from n2n_core.train import load_run

    cfg, _, _ = load_run(run_dir)
    weights = Path(run_dir) / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights} not found: the run has not finished (resume it with --resume)"
        )
    model = DiffusionAD(cfg)
    model.load_state_dict(load_file(weights))
    return model.to(device).eval()


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
    """Alg. 2 over the run's test split; returns (and writes) the seven metrics."""
    from n2n_core.train import load_run

    run_dir = Path(run_dir)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(run_dir, dev)
    _, _, data = load_run(run_dir)
    samples = load_samples(data.source, data.root, data.category, "test")
    ds = AnomalyDataset(samples, model.cfg.image_size, (-1.0, 1.0))
    start = time.perf_counter()
    pred = predict(model, ds, lambdas, top_k, seed)
    seconds = time.perf_counter() - start
    metrics = evaluate(
        pred["maps"][:, 0], pred["masks"][:, 0] > 0.5, pred["scores"], pred["labels"]
    )
    metrics = {k: float(metrics[k]) for k in METRIC_KEYS}
    if write:
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        info = {
            "lambdas": list(lambdas or model.cfg.lambdas),
            "top_k": top_k or model.cfg.top_k,
            "resolution": model.cfg.image_size,
            "seed": seed,
            "variant": model.cfg.variant,
            "test_images": len(ds),
            "anomalous": int(pred["labels"].sum()),
            "seconds": seconds,
            "images_per_second": len(ds) / seconds,
            "device": str(dev),
        }
        atomic_write_text(run_dir / "eval_info.json", json.dumps(info, indent=2) + "\n")
        rows = io.StringIO()
        w = csv.writer(rows)
        w.writerow(["image", "label", "defect", "score"])
        for s, score in zip(samples, pred["scores"].tolist(), strict=True):
            w.writerow([str(s.image), s.label, s.defect, f"{score:.6f}"])
        atomic_write_text(run_dir / "scores.csv", rows.getvalue())
        atomic_write_bytes(run_dir / "figures" / "samples.png", _figure(ds, pred))
    return metrics
