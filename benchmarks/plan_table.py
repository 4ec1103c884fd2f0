"""The README's GPU table: ``plan`` for every paper target at the paper and official profiles.

    python benchmarks/plan_table.py [--profiles paper official] > plan.md

One row per target and profile: trained parameters, optimiser steps × images per step, FLOPs
per training image, memory at the configured batch in mixed precision, and per card the hours
(at ``plan.UTILISATION`` of its dense peak) with the micro-batch × accumulation where the
configured batch does not fit. Counting runs the full-size networks on the CPU (about a minute
per configuration; the three DiffusionAD targets of a profile share one).
"""

from __future__ import annotations

import argparse

from n2n_core.plan import CARDS, UTILISATION, format_hours, plan

TARGETS = ("diffusionad-visa", "diffusionad-mvtec", "diffusionad-dagm", "decodiff-mvtec",
           "decodiff-visa")  # fmt: skip


def row(p: dict) -> str:
    m = p["measured"]
    cells = []
    for c in p["cards"]:
        hours = format_hours(c["hours"])
        if not c["grad_accum"]:
            cells.append("does not fit")
        elif c["fits"]:
            cells.append(hours)
        else:
            cells.append(f"{hours} ({c['micro_batch']} × {c['grad_accum']})")
    steps = f"{p['steps']:,}" + (" (at 1,000 images a class)" if p["per_1000_images"] else "")
    batch = p["batch_size"] * p["grad_accum"]
    gib = p["cards"][0]["memory_gib"]
    return (
        f"| `{p['target']}` | {p['profile']} | {p['models']} | {m.trained / 1e6:.1f} M | "
        f"{steps} × {batch} | {m.train_flops / 1e12:.2f} | {gib:.1f} | " + " | ".join(cells) + " |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=["paper", "official"])
    args = ap.parse_args()
    print(
        "| target | profile | models | parameters | steps × images | TFLOP / training image | "
        "GiB at that batch (mixed) | " + " | ".join(f"{c} h" for c in CARDS) + " |"
    )
    print("|" + "---|" * (7 + len(CARDS)))
    for profile in args.profiles:
        for target in TARGETS:
            print(row(plan(target, profile)), flush=True)
    print(f"\nHours at {UTILISATION:.0%} of each card's dense bf16/fp16 peak, training and one "
          "evaluation; (m × k): micro-batch m, k accumulated.")  # fmt: skip


if __name__ == "__main__":
    main()
