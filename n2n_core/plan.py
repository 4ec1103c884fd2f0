"""``python -m n2n_core plan TARGET``: what a training target costs, before paying for a GPU.

Counted on this machine's CPU, on the real networks of the profile: parameters; FLOPs per
training image (forward, backward and the feed's own work, e.g. encoding with a frozen VAE)
and per test image (the method's ``predict``), by ``torch.utils.flop_counter.FlopCounterMode``;
the bytes autograd saves during one training forward (:class:`~n2n_core.dry_run.SavedBytes`),
measured at batch 1 and 2 in float32 and under bf16 autocast and extrapolated linearly. The
inputs come from a stand-in dataset of random images (costs do not depend on pixel values),
and pretrained weights that are not here are replaced by untrained networks of the same
architecture (``Method.stand_in``); a method's stages (e.g. DeCo-Diff's own autoencoder in the
smoke profile) stand in untrained and are not counted.

Then for each card: weights, gradients and Adam's two moments (16 bytes per trained
parameter, float32 masters under autocast) + frozen networks (4 bytes per parameter) +
activations + ``RESERVED_GIB``; whether the configured batch fits, the largest that does, the
gradient accumulation that keeps the configured effective batch, and hours at
``UTILISATION`` of the card's dense tensor-core peak. The peaks are the vendors' datasheet
figures without sparsity; the utilisation is an assumption, not a measurement: compare with
``train … --dry-run`` on the card.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image

from n2n_core.config import DataSpec, TrainConfig
from n2n_core.data.download import MVTEC_CATEGORIES, VISA_CATEGORIES
from n2n_core.device import precision_for_capability
from n2n_core.dry_run import SavedBytes

__all__ = [
    "CARDS", "DATASETS", "Card", "Measured", "card_plan", "format_hours", "format_plan", "measure",
    "plan", "plan_config",
]  # fmt: skip


@dataclass(frozen=True)
class Card:
    name: str
    memory_gib: float  # what torch.cuda.mem_get_info reports as total
    tflops: float  # dense tensor-core peak in ``precision`` (datasheet, without sparsity)
    capability: tuple[int, int]  # CUDA compute capability

    @property
    def precision(self) -> str:
        """What ``mixed_precision="auto"`` chooses on this card."""
        return precision_for_capability(self.capability)


CARDS = {
    c.name: c
    for c in (
        Card("T4", 14.7, 65.0, (7, 5)),  # fp16 tensor cores, no bf16
        Card("L4", 22.0, 121.0, (8, 9)),  # 242 with sparsity
        Card("A100-40", 39.4, 312.0, (8, 0)),
        Card("A100-80", 79.2, 312.0, (8, 0)),
        Card("H100", 79.1, 989.0, (9, 0)),  # SXM; the PCIe card: 756
    )
}
UTILISATION = 0.3  # of the dense peak: typical of convolutional UNets in mixed precision
RESERVED_GIB = 1.5  # CUDA context, cuDNN workspaces, allocator slack

# the official splits' image counts (train, test) and categories; DAGM's vary per class
DATASETS: dict[str, tuple[int | None, int | None, tuple[str, ...]]] = {
    "mvtec": (3629, 1725, MVTEC_CATEGORIES),
    "visa": (8659, 2162, VISA_CATEGORIES),
    "dagm": (None, None, tuple(f"Class{i}" for i in range(1, 11))),
}


@dataclass(frozen=True)
class Measured:
    """One model's costs, counted on the CPU."""

    trained: int  # parameters
    frozen: int  # parameters of frozen networks the training feed runs (e.g. a VAE)
    train_flops: float  # per training image: forward + backward + the feed
    test_flops: float  # per test image
    act_fp32: tuple[float, float]  # bytes saved for backward at batch 1 and 2, float32
    act_mixed: tuple[float, float]  # the same under bf16 autocast (fp16: the same sizes)

    def activations(self, batch: int, mixed: bool) -> float:
        a1, a2 = self.act_mixed if mixed else self.act_fp32
        return a1 + (a2 - a1) * (batch - 1)


def _stand_in_data(root: Path, categories: tuple[str, ...], size: int, n: int = 2) -> None:
    """``n`` random training images per category in the MVTec AD layout."""
    rng = np.random.default_rng(0)
    for c in categories:
        folder = root / c / "train" / "good"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"stand_in_{i}.png")  # in no split list


def _saved(model: torch.nn.Module, inputs: tuple, g: torch.Generator, mixed: bool) -> int:
    with torch.autocast("cpu", torch.bfloat16, enabled=mixed), SavedBytes(model, False) as saved:
        loss, _ = model(*inputs, g)
    del loss
    return saved.total


def measure(method: Any, cfg: Any, tcfg: TrainConfig, categories: tuple[str, ...]) -> Measured:
    """Count ``method``'s costs at ``cfg`` (see the module's text); one category's data for a
    method with one model per category, every category's for a multi-class one."""
    from torch.utils.flop_counter import FlopCounterMode

    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="n2n-plan-") as tmp:
        root, run_dir = Path(tmp) / "data", Path(tmp) / "run"
        cats = categories[:1] if method.per_category else categories
        _stand_in_data(root, cats, getattr(cfg, "load_size", None) or cfg.image_size)
        cfg = method.stand_in(cfg, Path(tmp))
        data = DataSpec("mvtec", str(root), cats[0] if method.per_category else "all")
        for stage in method.stages(cfg, tcfg, data, run_dir):  # untrained: not counted
            stage.save(stage.build(), run_dir / stage.name)
        feed = method.feed(cfg, tcfg, data, run_dir, SimpleNamespace(device=cpu))
        torch.manual_seed(0)
        model, g = method.build(cfg).train(), torch.Generator().manual_seed(0)
        frozen = sum(
            p.numel() for m in vars(feed).values() if isinstance(m, torch.nn.Module)
            for p in m.parameters()
        )  # fmt: skip
        with FlopCounterMode(display=False) as train_count:
            loss, _ = model(*feed(torch.tensor([0]), g, cpu), g)
            loss.backward()
        model.zero_grad(set_to_none=True)
        acts = {
            mixed: tuple(
                _saved(model, feed(torch.arange(b) % len(feed), g, cpu), g, mixed)
                for b in (1, 2)
            )
            for mixed in (False, True)
        }  # fmt: skip
        detector = method.load(run_dir, cfg, model.state_dict(), cpu)
        image = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
        with torch.no_grad(), FlopCounterMode(display=False) as test_count:
            method.predict(detector, image, 0, g)
    return Measured(
        trained=sum(p.numel() for p in model.parameters() if p.requires_grad),
        frozen=frozen,
        train_flops=float(train_count.get_total_flops()),
        test_flops=float(test_count.get_total_flops()),
        act_fp32=acts[False],
        act_mixed=acts[True],
    )


def card_plan(m: Measured, card: Card, tcfg: TrainConfig, flops: float) -> dict[str, Any]:
    """Whether ``tcfg``'s batch fits ``card``, the largest micro-batch that does, the
    accumulation that keeps the effective batch, and hours for ``flops`` in all."""
    effective = tcfg.batch_size * tcfg.grad_accum
    static = 16 * m.trained + 4 * m.frozen
    free = card.memory_gib * 2**30 - RESERVED_GIB * 2**30 - static
    a1, a2 = m.act_mixed
    per, base = a2 - a1, 2 * a1 - a2  # activations(b) = base + per · b
    largest = max(0, math.floor((free - base) / per)) if per > 0 else effective
    accum = math.ceil(effective / largest) if largest else None
    micro = math.ceil(effective / accum) if accum else None
    seconds = flops / (UTILISATION * card.tflops * 1e12)
    need = (static + m.activations(tcfg.batch_size, True)) / 2**30 + RESERVED_GIB
    return {
        "card": card.name, "precision": card.precision, "memory_gib": need,
        "fits": largest >= tcfg.batch_size, "largest_batch": largest, "micro_batch": micro,
        "grad_accum": accum, "hours": seconds / 3600,
    }  # fmt: skip


_MEASURED: dict[tuple, Measured] = {}  # one count per configuration and process


def plan(
    target: str, profile: str = "paper", cards: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The costs of reproducing ``target`` (a ``reproduce`` target) at ``profile``."""
    from n2n_core import methods
    from n2n_core.papers import targets

    known = targets()
    if target not in known:
        raise ValueError(f"unknown target {target!r}; known: {sorted(known)}")
    t = known[target]
    if t.dataset not in DATASETS:
        raise ValueError(f"plan knows the sizes of {sorted(DATASETS)}, not {t.dataset!r}")
    for c in cards or ():
        if c not in CARDS:
            raise ValueError(f"--gpu {c!r}: expected one of {sorted(CARDS)}")
    n_train, n_test, categories = DATASETS[t.dataset]
    cfg, tcfg = methods.resolve(t.method, profile, t.dataset, list(categories))
    return plan_config(t.method, cfg, tcfg, categories, n_train, n_test, cards, target, profile)


def plan_config(
    method_name: str, cfg: Any, tcfg: TrainConfig, categories: tuple[str, ...],
    n_train: int | None, n_test: int | None, cards: tuple[str, ...] | None = None,
    label: str = "", profile: str = "",
) -> dict[str, Any]:  # fmt: skip
    """The costs of training ``cfg`` / ``tcfg`` on ``n_train`` images of ``categories``
    (``None``: per 1,000 per model) and testing on ``n_test`` (``train … --plan``, ``plan``)."""
    from n2n_core import methods

    method = methods.get(method_name)
    if method.kind != "trained":
        raise ValueError(f"plan counts training by gradient steps; {method_name} is {method.kind}")
    cats = categories[:1] if method.per_category else categories
    key = (method_name, repr(cfg), repr(tcfg), cats)
    m = _MEASURED[key] = _MEASURED.get(key) or measure(method, cfg, tcfg, categories)
    models = len(categories) if method.per_category else 1
    images = n_train if n_train is not None else 1000 * models  # DAGM: per 1,000 images/class
    steps = models * tcfg.total_steps(math.ceil(images / models))
    effective = tcfg.batch_size * tcfg.grad_accum
    flops = steps * effective * m.train_flops + (n_test or 0) * m.test_flops
    return {
        "target": label or method_name, "profile": profile, "method": method_name,
        "models": models, "train_images": images, "per_1000_images": n_train is None,
        "test_images": n_test, "steps": steps, "batch_size": tcfg.batch_size,
        "grad_accum": tcfg.grad_accum, "measured": m, "total_flops": flops,
        "cards": [card_plan(m, CARDS[c], tcfg, flops) for c in (cards or tuple(CARDS))],
    }  # fmt: skip


def _flop(x: float) -> str:
    return f"{x / 1e12:.2f} TFLOP" if x >= 1e11 else f"{x / 1e9:.2f} GFLOP"


def format_hours(h: float) -> str:
    return f"{h:.1f}" if h >= 0.1 else f"{h * 60:.1f} min"


def format_plan(p: dict[str, Any]) -> str:
    """``plan``'s printout: the costs, then one table row per card."""
    m: Measured = p["measured"]
    gib = 2**30
    per = " per class, per 1,000 training images" if p["per_1000_images"] else ""
    profile = f" ({p['profile']} profile)" if p["profile"] else ""
    lines = [
        f"{p['target']}{profile}: {p['models']} model(s), "
        f"{m.trained / 1e6:.1f} M trained parameters"
        + (f" + {m.frozen / 1e6:.1f} M frozen" if m.frozen else ""),
        f"training: {p['steps']:,} steps of batch {p['batch_size']} × {p['grad_accum']}"
        f"{per}; {_flop(m.train_flops)} per training image (forward + backward)",
        f"test: {_flop(m.test_flops)} per image"
        + (f" × {p['test_images']:,} images" if p["test_images"] else ""),
        f"activations per image: {(m.act_fp32[1] - m.act_fp32[0]) / gib:.2f} GiB float32, "
        f"{(m.act_mixed[1] - m.act_mixed[0]) / gib:.2f} GiB bf16 autocast (measured at batch "
        "1 and 2 on the CPU)",
        "",
        "| card | precision | GiB at this batch | fits | largest batch | micro-batch × "
        f"accumulation | hours at {UTILISATION:.0%} of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in p["cards"]:
        acc = f"{c['micro_batch']} × {c['grad_accum']}" if c["grad_accum"] else "does not fit"
        fits = "yes" if c["fits"] else "no"
        lines.append(
            f"| {c['card']} | {c['precision']} | {c['memory_gib']:.1f} | {fits} | "
            f"{c['largest_batch']} | {acc} | {format_hours(c['hours'])} |"
        )
    return "\n".join(lines)
