"""Inference speed of DiffusionAD: Alg. 2 (one denoising step per λ ∈ {100, 200} + the
segmenter) vs a full T-step DDPM reverse chain, with the paper's networks at 256x256.

    python benchmarks/inference_bench.py                    # paper config, CPU (or GPU if present)
    python benchmarks/inference_bench.py --profile smoke    # 64 px CPU networks
    python benchmarks/inference_bench.py --reverse-steps 50 # time a shorter chain (stated as such)

Speed does not depend on the weights, so the networks are freshly initialised. Both paths are
timed for real; nothing is extrapolated: with --reverse-steps below T, the report says so.
"""

from __future__ import annotations

import argparse
import time

import torch

from n2n_core.methods.diffusionad import PROFILES, DiffusionAD
from n2n_core.schedules import ddpm_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=sorted(PROFILES), default="paper")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reverse-steps", type=int, default=None, help="default: T (1000)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (GPU)")
    a = p.parse_args()
    dev = torch.device(a.device)
    cfg = PROFILES[a.profile]
    model = DiffusionAD(cfg).to(dev).eval()
    x = torch.rand(a.batch, 3, cfg.image_size, cfg.image_size, device=dev) * 2 - 1
    g = torch.Generator().manual_seed(0)
    ctx = (
        torch.autocast(dev.type, dtype=torch.bfloat16)
        if a.bf16
        else torch.autocast(dev.type, enabled=False)
    )
    name = (
        torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"{a.profile} config, {cfg.image_size}x{cfg.image_size}, batch {a.batch}, {name}")
    with ctx:
        model.anomaly_map(x, g)  # warm-up
        _sync(dev)
        start = time.perf_counter()
        for _ in range(a.repeats):
            model.anomaly_map(x, g)
        _sync(dev)
        alg2 = a.repeats * a.batch / (time.perf_counter() - start)
        steps = a.reverse_steps or cfg.T
        xt = torch.randn(x.shape, generator=g).to(dev)
        _sync(dev)
        start = time.perf_counter()
        for t in range(steps, 0, -1):
            eps = model.denoiser(xt, torch.full((a.batch,), t, device=dev)).sample
            xt = ddpm_step(
                xt, t, model.schedule, eps, noise=torch.randn(x.shape, generator=g).to(dev)
            )
        _sync(dev)
        chain = a.batch / (time.perf_counter() - start)
    print(f"  Alg. 2 (λ = {list(cfg.lambdas)}, 2 UNet + 2 segmenter passes): {alg2:8.3f} images/s")
    note = "" if steps == cfg.T else f"  (a {steps}-step chain, not the full T = {cfg.T})"
    print(f"  DDPM reverse chain, {steps} steps: {chain:8.4f} images/s{note}")
    print(f"  ratio: {alg2 / chain:.0f}x")
    if dev.type == "cuda":
        print(f"  peak GPU memory: {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
