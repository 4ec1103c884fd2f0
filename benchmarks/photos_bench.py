"""The photographic benchmark: DiffusionAD, DeCo-Diff and the patch nearest-neighbour baseline
trained and evaluated on ``data/photos`` (built on first use: foliage, dahlia, portrait) at the
smoke profile (or ``--profile laptop``), with the training time of each category on this machine.
``--part confirmation`` runs the confirmation categories instead (galaxies, espresso, built into
``data/photos-confirmation`` from scikit-image's photographs: ``pip install scikit-image``):
a variant is chosen on the tuning categories (foliage, dahlia) and kept only if it also helps
the confirmation ones (the portrait and these two; ``n2n_core.data.photos``).

    python benchmarks/photos_bench.py                       # all three methods, seed 0
    python benchmarks/photos_bench.py --methods patchknn diffusionad --seed 1
    python benchmarks/photos_bench.py --methods diffusionad --tag lr3e-4 --set train.lr=3e-4
    python benchmarks/photos_bench.py --part confirmation --methods patchknn diffusionad
    python benchmarks/photos_bench.py --profile laptop --categories portrait --seed 1

Runs go to ``runs/<profile>/<method>-photos[-confirmation][-<tag>][-seed<k>]``; each line of
``benchmarks/photos_results.jsonl`` is one (profile, method, tag, seed, category) with image AUROC,
pixel AUPRO, pixel AP and training seconds, and the table of all lines is printed. A finished
run is reused (delete its folder to train again). Run nothing else on the machine meanwhile:
the training times are those of 2 CPU cores alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "photos_results.jsonl"
KEYS = ("image_auroc", "pixel_aupro", "pixel_ap")


def _seconds(run: Path) -> float:
    """Training seconds of a run folder (a DeCo-Diff run: autoencoder and DoD stages together)."""
    total = 0.0
    for info in run.rglob("train_info.json"):
        total += float(json.loads(info.read_text()).get("seconds", 0.0))
    return total


def _confirmation(
    method: str, profile: str, out: Path, seed: int, overrides: dict,
    categories: list[str] | None = None,
) -> None:  # fmt: skip
    """Train and evaluate ``method`` on the confirmation categories (``--data folder``): one
    run per category, or one model for both (DeCo-Diff), in ``out``."""
    from n2n_core.data.photos import CONFIRMATION, ensure_photos
    from n2n_core.evaluate import evaluate_run
    from n2n_core.methods import get, resolve
    from n2n_core.paths import default_root
    from n2n_core.run_folder import RunFolder
    from n2n_core.train import DataSpec, ensure_trained

    root = ensure_photos(default_root() / "photos-confirmation", categories=tuple(CONFIRMATION))
    cats = sorted(categories or CONFIRMATION)
    groups = [(c, [c], out / c) for c in cats] if get(method).per_category else [("all", cats, out)]
    for category, names, run in groups:
        cfg, tcfg = resolve(method, profile, "folder", names, {**overrides, "train.seed": seed})
        ensure_trained(run, cfg, tcfg, DataSpec("folder", str(root), category))
        if not RunFolder(run).evaluated:  # as reproduce does for the photos part
            evaluate_run(run)


def bench(
    method: str, tag: str, seed: int, overrides: dict, part: str = "photos",
    categories: list[str] | None = None, profile: str = "smoke",
) -> list[dict]:  # fmt: skip
    from n2n_core.paths import default_runs
    from n2n_core.reproduce import reproduce
    from n2n_core.run_files import metrics_per_category

    name = f"{method}-photos" + ("-confirmation" if part == "confirmation" else "")
    name += (f"-{tag}" if tag else "") + (f"-seed{seed}" if seed else "")
    out = default_runs() / profile / name
    if part == "confirmation":
        _confirmation(method, profile, out, seed, overrides, categories)
    else:
        reproduce(
            f"{method}-photos", profile=profile, runs=out, categories=categories,
            overrides=overrides, seed=seed,
        )  # fmt: skip
    rows = []
    if (out / "model.safetensors").is_file():  # one multi-class model
        per_cat, secs = metrics_per_category(out), _seconds(out)
        n = len(per_cat) - 1
        for cat, m in per_cat.items():
            if cat != "mean":
                rows.append({"category": cat, **{k: m[k] for k in KEYS}, "seconds": secs / n})
    else:
        for run in sorted(p for p in out.iterdir() if (p / "metrics.json").is_file()):
            m = json.loads((run / "metrics.json").read_text())
            rows.append({"category": run.name, **{k: m[k] for k in KEYS}, "seconds": _seconds(run)})
    head = {"profile": profile, "method": method, "tag": tag, "seed": seed, "overrides": overrides}
    return [{**head, **r} for r in rows]


def table(lines: list[dict]) -> str:
    """Markdown: one row per (profile, method, tag, category), mean (min-max) over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in lines:
        groups[(r["profile"], r["method"], r["tag"], r["category"])].append(r)
    from n2n_core.data.photos import TUNING

    out = ["| profile | method | tag | category | part | seeds | image AUROC | pixel AUPRO | "
           "pixel AP | train s |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (profile, method, tag, cat), rs in sorted(groups.items()):
        cells = []
        for k in (*KEYS, "seconds"):
            v = [r[k] * (1 if k == "seconds" else 100) for r in rs]
            spread = f" ({min(v):.1f}–{max(v):.1f})" if len(v) > 1 else ""
            mean = sum(v) / len(v)
            cells.append(f"{mean:.0f}" if k == "seconds" else f"{mean:.1f}{spread}")
        part = "tuning" if cat in TUNING else "confirmation"
        row = f"| {profile} | {method} | {tag or '-'} | {cat} | {part} | {len(rs)} | "
        row += " | ".join(cells)
        out.append(row + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from n2n_core.cli import _settings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", nargs="*", default=["patchknn", "diffusionad", "decodiff"])
    p.add_argument("--profile", choices=("smoke", "laptop"), default="smoke")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="", help="names a variant (with --set)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--part", choices=("photos", "confirmation"), default="photos",
        help="photos: foliage, dahlia (tuning) and the portrait; confirmation: galaxies, espresso",
    )  # fmt: skip
    p.add_argument("--categories", nargs="*", help="a subset of the part's categories")
    p.add_argument("--table", action="store_true", help="only print the table of the results file")
    args = p.parse_args(argv)
    if args.set and not args.tag:
        p.error("--set needs a --tag naming the variant")
    from n2n_core.data.photos import CATEGORIES, CONFIRMATION

    part = CONFIRMATION if args.part == "confirmation" else CATEGORIES
    unknown = sorted(set(args.categories or ()) - set(part))
    if unknown:  # before any training: a wrong name would fail only after the first model
        p.error(
            f"--categories {' '.join(unknown)} not in --part {args.part} "
            f"(its categories: {', '.join(part)})"
        )
    if not args.table:
        for method in args.methods:
            rows = bench(
                method, args.tag, args.seed, _settings(args.set), args.part, args.categories,
                args.profile,
            )  # fmt: skip
            new = {_key(r) for r in rows}
            keep = [r for r in _read() if _key(r) not in new]
            RESULTS.write_text("".join(json.dumps(r) + "\n" for r in keep + rows))
    print(table(_read()))
    return 0


def _key(row: dict) -> tuple:
    return row["profile"], row["method"], row["tag"], row["seed"], row["category"]


def _read() -> list[dict]:
    return [json.loads(x) for x in RESULTS.read_text().splitlines()] if RESULTS.is_file() else []


if __name__ == "__main__":
    sys.exit(main())
