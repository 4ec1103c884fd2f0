"""How much the smoke profiles' trained results move with the seed and the CPU kernel path.

Trains exactly what notebooks 05, 08 and 09 train (the smoke profiles, embedded data), with
the training seed replaced, evaluates it, and appends one JSON line per seed with every
quantity a notebook asserts on: loss ratios, autoencoder PSNR and latent statistics, mean
metrics, and DeCo-Diff's Table 4 maps. The notebooks' assert margins come from these lines
(benchmarks/RESULTS.md, "Smoke runs on the embedded data").

    python benchmarks/seed_spread.py --seeds 0 1 2
    python benchmarks/seed_spread.py --report        # RESULTS.md's tables from the recorded lines
    ATEN_CPU_CAPABILITY=default python benchmarks/seed_spread.py --seeds 0   # another kernel path

≈ 16 min per seed on 2 CPU cores. Runs land in runs/spread/<cpu capability>-seed<N>/. Results are
bit-identical for the same CPU capability, thread count and library versions, and differ otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from n2n_core import metrics
from n2n_core.data import AnomalyDataset, ensure_synthetic, list_categories, load_samples
from n2n_core.deviation import MAP_KINDS
from n2n_core.evaluate import evaluate_run, load_predictor, metrics_of, predict_dataset
from n2n_core.methods import resolve
from n2n_core.methods.decodiff import latent_training_set
from n2n_core.models.vae import psnr
from n2n_core.paths import default_root, default_runs
from n2n_core.train import DataSpec, ensure_trained


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]


def diffusionad(seed: int, root: Path, runs: Path, cats: list[str]) -> dict:
    cfg, tcfg = resolve("diffusionad", "smoke", "synthetic", cats, {"train.seed": seed})
    per_cat, losses = {}, {}
    for cat in cats:
        run = ensure_trained(
            runs / "diffusionad" / cat, cfg, tcfg, DataSpec("synthetic", str(root), cat)
        )
        log = _log(run)
        late = log[-8:]  # as notebook 05 asserts: the last 8 logged batches against the first
        losses[cat] = {
            k + "_ratio": sum(e[k] for e in late) / len(late) / log[0][k] for k in ("noise", "mask")
        }
        per_cat[cat] = evaluate_run(run, seed=0)
    return {"losses": losses, "metrics": metrics.mean_table(per_cat)}


def decodiff(seed: int, root: Path, runs: Path, cats: list[str]) -> dict:
    cfg, tcfg = resolve("decodiff", "smoke", "synthetic", cats, {"train.seed": seed})
    spec = DataSpec("synthetic", str(root), "all")
    run = ensure_trained(runs / "decodiff", cfg, tcfg, spec)
    method, _, detector = load_predictor(run)
    vae = detector.vae
    images, _ = latent_training_set(cfg, spec, run)
    z = torch.cat(
        [vae.encode(images[i : i + 64].float() / 127.5 - 1) for i in range(0, len(images), 64)]
    )
    out: dict = {"latent_mean": float(z.mean()), "latent_std": float(z.std()), "psnr": {}}
    out["network"] = cfg.network
    for cat in cats:
        test = load_samples("synthetic", root, cat, "test")
        good = AnomalyDataset([s for s in test if not s.label], cfg.image_size, (-1.0, 1.0))
        x = torch.stack([good[j]["image"] for j in range(len(good))])
        out["psnr"][cat] = float(psnr(vae.decode(vae.encode(x)), x).mean())
    log = _log(run)
    out["dod_ratio"] = sum(e["dod"] for e in log[-5:]) / 5 / log[0]["dod"]
    kinds: dict = {k: {} for k in MAP_KINDS}
    for i, cat in enumerate(cats):
        ds = AnomalyDataset(
            load_samples("synthetic", root, cat, "test"), cfg.image_size, (-1.0, 1.0)
        )
        pred, masks, labels = predict_dataset(method, detector, ds, i)
        for k in MAP_KINDS:
            kinds[k][cat] = metrics_of(pred, masks, labels, k)
    out["table4"] = {k: metrics.mean_table(v)["mean"] for k, v in kinds.items()}
    out["metrics"] = metrics.mean_table(kinds[cfg.anomaly_map])
    return out


def _cell(values: list[float], scale: float = 100, digits: int = 1) -> str:
    """'mean (min–max)' of values, in percent by default."""
    v = [x * scale for x in values]
    return f"{sum(v) / len(v):.{digits}f} ({min(v):.{digits}f}–{max(v):.{digits}f})"


def _network(row: dict) -> str:
    """DeCo-Diff's smoke network of a recorded run (lines before the field: n2n's UNet2DModel,
    which older n2n called "n2n")."""
    name = row["decodiff"].get("network", "unet2d")
    return "unet2d" if name == "n2n" else name


def report(path: str) -> str:
    """Markdown tables of every recorded run: per category mean (min–max) for each method (and
    DeCo-Diff network), then one line per run."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    keys = ("image_auroc", "pixel_aupro", "pixel_ap")
    out = [
        f"{len(rows)} runs: " + ", ".join(f"seed {r['seed']} {r['cpu_capability']}" for r in rows)
    ]
    groups = [("DiffusionAD", [r["diffusionad"] for r in rows if "diffusionad" in r])]
    for net in sorted({_network(r) for r in rows if "decodiff" in r}):
        picked = [r["decodiff"] for r in rows if "decodiff" in r and _network(r) == net]
        groups.append((f"DeCo-Diff ({net} network)", picked))
    for name, picked in groups:
        runs = [p["metrics"] for p in picked]
        out += ["", f"{name}: mean (min–max) over {len(runs)} runs", ""]
        out += ["| category | image AUROC | pixel AUPRO | pixel AP |", "|---|---|---|---|"]
        for cat in runs[0]:
            cells = [_cell([m[cat][k] for m in runs]) for k in keys]
            out.append(f"| {cat} | " + " | ".join(cells) + " |")
    out += ["", "| run | DiffusionAD mean I-AUROC / AUPRO / P-AP | DeCo-Diff network | DeCo-Diff "
            "mean I-AUROC / AUPRO / P-AP | DeCo-Diff pixel AP: geometric / pixel-only / "
            "latent-only |", "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        cells = [f"seed {r['seed']}, {r['cpu_capability']}"]
        if "diffusionad" in r:
            d = r["diffusionad"]["metrics"]["mean"]
            cells.append(" / ".join(f"{100 * d[k]:.1f}" for k in keys))
        else:
            cells.append("—")
        if "decodiff" in r:
            e, t4 = r["decodiff"]["metrics"]["mean"], r["decodiff"]["table4"]
            cells += [_network(r), " / ".join(f"{100 * e[k]:.1f}" for k in keys)]
            kinds = ("geometric", "pixel", "latent")
            cells.append(" / ".join(f"{100 * t4[k]['pixel_ap']:.1f}" for k in kinds))
        else:
            cells += ["—", "—", "—"]
        out.append("| " + " | ".join(cells) + " |")
    dif = [v for r in rows if "diffusionad" in r for v in r["diffusionad"]["losses"].values()]
    ratios = {
        "noise loss, last 8 / first (05)": [v["noise_ratio"] for v in dif],
        "mask loss, last 8 / first (05)": [v["mask_ratio"] for v in dif],
    }
    for net in sorted({_network(r) for r in rows if "decodiff" in r}):
        deco = [r["decodiff"] for r in rows if "decodiff" in r and _network(r) == net]
        ratios[f"DoD loss, last 5 / first (09), {net}"] = [d["dod_ratio"] for d in deco]
        t4 = [d["table4"] for d in deco]
        ratios[f"geometric − latent-only pixel AP (09), {net}"] = [
            x["geometric"]["pixel_ap"] - x["latent"]["pixel_ap"] for x in t4
        ]
        for k in ("image_auroc", "pixel_aupro"):
            ratios[f"mean {k} (09), {net}"] = [d["metrics"]["mean"][k] for d in deco]
    deco = [r["decodiff"] for r in rows if "decodiff" in r]
    ratios["lowest category PSNR, dB (08)"] = [min(d["psnr"].values()) for d in deco]
    ratios["latent mean (08)"] = [d["latent_mean"] for d in deco]
    out += ["", "| asserted quantity | mean (min–max) |", "|---|---|"]
    out += [f"| {k} | {_cell(v, 1, 2) if v else '—'} |" for k, v in ratios.items()]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["diffusionad", "decodiff"])
    p.add_argument("--out", default="benchmarks/seed_spread.jsonl")
    p.add_argument(
        "--runs",
        help="reuse this folder's finished runs (diffusionad/<cat>, decodiff) for one seed, e.g. "
        "a clone's runs/smoke after make test",
    )
    p.add_argument("--report", action="store_true", help="print the tables of --out and stop")
    a = p.parse_args()
    if a.report:
        print(report(a.out))
        return
    root = default_root() / "synthetic"
    ensure_synthetic(root)
    cats = list_categories("synthetic", root)
    cap = torch.backends.cpu.get_cpu_capability()
    for seed in a.seeds:
        runs = Path(a.runs) if a.runs else default_runs() / "spread" / f"{cap.lower()}-seed{seed}"
        row = {
            "seed": seed,
            "cpu_capability": cap,
            "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        }
        for method in a.methods:
            start = time.perf_counter()
            row[method] = {"diffusionad": diffusionad, "decodiff": decodiff}[method](
                seed, root, runs, cats
            )
            row[method]["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(row), flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
