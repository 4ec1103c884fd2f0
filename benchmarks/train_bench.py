"""Training and inference cost of one method at a profile: train N steps through the real loop
(``n2n_core.train.train``), then time evaluation on the test split. Prints and appends a JSON
line with steps/s, images/s, peak GPU memory and the device — what ``benchmarks/RESULTS.md``
records for paper-profile GPU runs.

    python benchmarks/train_bench.py --method diffusionad --profile paper --data mvtec \\
        --root data/mvtec --category bottle --steps 200 --mixed-precision bf16 \\
        --gradient-checkpointing
    python benchmarks/train_bench.py --method decodiff --profile paper --data mvtec \\
        --root data/mvtec --steps 200 --mixed-precision bf16 --vae /path/to/sd-vae-ft-ema
    python benchmarks/train_bench.py --method diffusionad --profile smoke --steps 20   # CPU check
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from n2n_core import methods
from n2n_core.config import DataSpec, categories_of
from n2n_core.data import list_categories
from n2n_core.evaluate import evaluate_run
from n2n_core.paths import default_root
from n2n_core.train import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", choices=methods.names(), default=methods.DEFAULT)
    p.add_argument("--profile", choices=["smoke", "paper"], default="smoke")
    p.add_argument("--data", default="synthetic")
    p.add_argument("--root")
    p.add_argument("--category", help="per-category methods: which one (default: the first)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--vae", help="a pretrained VAE (hub id or local folder) for methods with one")
    p.add_argument("--keep", help="keep the run folder here (default: a temporary one)")
    p.add_argument("--out", default="benchmarks/train_bench.jsonl")
    a = p.parse_args()

    root = a.root or str(default_root() / a.data)
    if a.data == "synthetic":
        from n2n_core.data import ensure_synthetic

        ensure_synthetic(root)
    cats = list_categories(a.data, root)
    method = methods.get(a.method)
    data = DataSpec(a.data, root, (a.category or cats[0]) if method.per_category else "all")
    overrides = {
        "train.steps": a.steps,
        "train.mixed_precision": a.mixed_precision,
        "train.gradient_checkpointing": a.gradient_checkpointing,
        "train.checkpoint_every": 10**9,
        **({"train.batch_size": a.batch_size} if a.batch_size else {}),
        **({"model.vae.pretrained": a.vae} if a.vae else {}),
    }
    cfg, tcfg = methods.resolve(a.method, a.profile, a.data, categories_of(data), overrides)
    run = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="n2n-bench-"))
    try:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        summary = train(run, cfg, tcfg, data)
        wall = time.perf_counter() - start
        metrics = evaluate_run(run)
        info = json.loads((run / "eval_info.json").read_text())
    finally:
        if not a.keep:
            shutil.rmtree(run, ignore_errors=True)
    row = {
        "method": a.method,
        "profile": a.profile,
        "data": a.data,
        "category": data.category,
        "device": summary.get("device", "cpu"),
        "steps": summary["steps"],
        "batch_size": tcfg.batch_size,
        "mixed_precision": a.mixed_precision,
        "gradient_checkpointing": a.gradient_checkpointing,
        "train_steps_per_second": summary["steps"] / summary["seconds"],
        "train_wall_seconds_incl_setup": wall,
        "peak_gpu_memory_gib": summary.get("peak_gpu_memory_gib"),
        "eval_images_per_second": info["images_per_second"],
        "metrics_after_these_steps": metrics,
    }
    print(json.dumps(row, indent=2))
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
