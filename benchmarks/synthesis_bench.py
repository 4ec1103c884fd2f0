"""Throughput of DiffusionAD's anomaly synthesis (n2n_core.synthesis) at 256x256, one process.

    python benchmarks/synthesis_bench.py [--n 400] [--size 256] [--threads 2]

Inputs are embedded-dataset images resized to --size (objects with their estimated
foreground, textures without). The texture-folder mode reads a folder of 640x480 JPEGs
written for the run (a stand-in for DTD, which cannot be downloaded here).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as Fn
from PIL import Image

from n2n_core.data import (
    default_root,
    ensure_synthetic,
    estimate_foreground,
    load_image,
    load_samples,
)
from n2n_core.synthesis import (
    AnomalySynthesizer,
    SynthesisConfig,
    TextureSource,
    procedural_texture,
)


def _inputs(category: str, size: int, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    root = ensure_synthetic(default_root() / "synthetic")
    imgs, fgs = [], []
    for s in load_samples("synthetic", root, category, "train")[:n]:
        a = load_image(s.image)
        fgs.append(torch.from_numpy(estimate_foreground(a)).float())
        imgs.append(torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255)
    x = Fn.interpolate(torch.stack(imgs), size=(size, size), mode="bilinear", align_corners=False)
    f = Fn.interpolate(torch.stack(fgs)[:, None], size=(size, size), mode="nearest")[:, 0] > 0.5
    return x.clamp(0, 1), (f if category in ("cap", "chip") else None)


def _rate(syn: AnomalySynthesizer, x: torch.Tensor, fg: torch.Tensor | None, n: int) -> float:
    g = torch.Generator().manual_seed(0)
    syn.synthesize(x[0], g, None if fg is None else fg[0])  # warm-up
    start = time.perf_counter()
    for i in range(n):
        k = i % len(x)
        syn.synthesize(x[k], g, None if fg is None else fg[k])
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    objects, fg = _inputs("cap", a.size, 32)
    textures, _ = _inputs("weave", a.size, 32)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i in range(40):
            t = procedural_texture(480, 640, torch.Generator().manual_seed(i))
            Image.fromarray((t.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(
                folder / f"{i}.jpg"
            )
        cases = {
            "objects, default (p_texture=0.5, procedural)": (AnomalySynthesizer(), objects, fg),
            "objects, self-augmentation only": (
                AnomalySynthesizer(SynthesisConfig(p_texture=0.0)),
                objects,
                fg,
            ),
            "textures, procedural textures": (AnomalySynthesizer(), textures, None),
            "textures, texture folder (40 JPEGs)": (
                AnomalySynthesizer(textures=TextureSource(folder)),
                textures,
                None,
            ),
        }
        print(f"{a.size}x{a.size}, {a.n} samples per case, torch threads {a.threads}")
        for name, (syn, x, f) in cases.items():
            print(f"  {name:<46} {_rate(syn, x, f, a.n):7.0f} samples/s")
        syn, g = AnomalySynthesizer(), torch.Generator().manual_seed(0)
        start, batches = time.perf_counter(), a.n // 3
        for i in range(batches):
            k = (6 * i) % (len(objects) - 6)
            syn.batch(objects[k : k + 6], g, fg[k : k + 6])
        rate = batches * 3 / (time.perf_counter() - start)
        print(f"  {'objects, batch() 3 normal + 3 synthetic':<46} {rate:7.0f} synthetic samples/s")


if __name__ == "__main__":
    main()
