"""The training loop of both methods, on 🤗 accelerate (mixed precision, several
processes/GPUs, gradient accumulation): progress bar, periodic atomic checkpoints, exact
resume and a NaN guard.

A run folder holds ``run.json`` (method, data, configs), ``train_log.jsonl`` (losses),
``train_info.json`` (steps, seconds, processes, peak GPU memory), ``checkpoints/last/``
(model, optimiser, learning-rate schedule, step, every process's RNG
states, our data generator) and, at the end, ``model.safetensors``. A DeCo-Diff run also
holds ``vae/`` when its autoencoder is trained on the data (smoke profile). Resuming from
``checkpoints/last`` replays the same batches, timesteps and noise: the resumed run's losses
equal those of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from n2n_core.config import from_dict, to_dict
from n2n_core.data import (
    AnomalyDataset,
    foreground_masks,
    is_texture,
    list_categories,
    load_samples,
)
from n2n_core.io import atomic_write_text
from n2n_core.methods.decodiff import DeCoDiff, DeCoDiffConfig
from n2n_core.methods.diffusionad import DiffusionAD, DiffusionADConfig
from n2n_core.progress import progress
from n2n_core.synthesis import AnomalySynthesizer, TextureSource

__all__ = [
    "METHODS",
    "TRAIN_PROFILES",
    "DataSpec",
    "TrainConfig",
    "TrainingDiverged",
    "categories_of",
    "ensure_trained",
    "latent_training_set",
    "load_run",
    "method_of",
    "train",
]

ModelConfig = DiffusionADConfig | DeCoDiffConfig
METHODS: dict[str, tuple[type, type]] = {
    "diffusionad": (DiffusionADConfig, DiffusionAD),
    "decodiff": (DeCoDiffConfig, DeCoDiff),
}


def method_of(cfg: ModelConfig) -> str:
    for name, (cfg_type, _) in METHODS.items():
        if isinstance(cfg, cfg_type):
            return name
    raise TypeError(f"not a method config: {type(cfg).__name__}")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class DataSpec:
    source: str = "synthetic"
    root: str = "data/synthetic"
    category: str = "cap"  # or "all": every category of the dataset (DeCo-Diff, multi-class)
    foreground_dir: str | None = None  # precomputed foreground masks (<stem>.png)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimiser updates (each of grad_accum micro-batches)
    epochs: int | None = None  # if set: steps = ceil(epochs × #train images / batch_size)
    batch_size: int = 6  # per process; DiffusionAD: half normal, half synthetic (§4.2: 3 + 3)
    lr: float = 1e-4  # Adam (DiffusionAD §4.2); AdamW peak (DeCo-Diff §5.1)
    optimizer: str = "adam"  # "adam" | "adamw"
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    min_lr: float | None = None  # cosine decay from lr to min_lr after warm-up; None: constant
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 10
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    texture_dir: str | None = None  # DTD images for anomaly appearances; None: procedural


TRAIN_PROFILES: dict[str, dict[str, TrainConfig]] = {
    "diffusionad": {
        # smoke: small CPU nets converge much faster at 1e-3 than at the paper's 1e-4 (measured)
        "smoke": TrainConfig(steps=900, lr=1e-3, checkpoint_every=300, log_every=25),
        "paper": TrainConfig(steps=0, epochs=500, checkpoint_every=2000, log_every=50),
    },
    "decodiff": {
        # §5.1: AdamW, warm-up then cosine 1e-4 → 1e-5, batch 128, 800 epochs (MVTec AD;
        # 200 for VisA); weight decay and the 10 warm-up epochs from the official code
        "smoke": TrainConfig(
            steps=1500, batch_size=32, lr=1e-3, min_lr=1e-4, optimizer="adamw",
            weight_decay=1e-4, warmup_steps=100, checkpoint_every=500, log_every=25,
        ),
        "paper": TrainConfig(
            steps=0, epochs=800, batch_size=128, lr=1e-4, min_lr=1e-5, optimizer="adamw",
            weight_decay=1e-4, warmup_steps=300, checkpoint_every=2000, log_every=50,
        ),
    },
}  # fmt: skip


class _State:
    """Step counter and training seconds so far, saved with the checkpoint."""

    def __init__(self) -> None:
        self.step = 0
        self.seconds = 0.0

    def state_dict(self) -> dict:
        return {"step": self.step, "seconds": self.seconds}

    def load_state_dict(self, d: dict) -> None:
        self.step = int(d["step"])
        self.seconds = float(d.get("seconds", 0.0))  # absent in older checkpoints


class _Generator:
    """Makes a torch.Generator checkpointable through accelerate."""

    def __init__(self, g: torch.Generator) -> None:
        self.g = g

    def state_dict(self) -> dict:
        return {"state": self.g.get_state()}

    def load_state_dict(self, d: dict) -> None:
        self.g.set_state(d["state"])


def load_run(run_dir: Path | str) -> tuple[ModelConfig, TrainConfig, DataSpec]:
    """The model config (DiffusionADConfig or DeCoDiffConfig), training config and data of a
    run folder."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a training run folder")
    d = json.loads(path.read_text())
    if d.get("method") not in METHODS:
        raise ValueError(f"{path}: unsupported method {d.get('method')!r}; known: {list(METHODS)}")
    return (
        from_dict(METHODS[d["method"]][0], d["model"]),
        from_dict(TrainConfig, d["train"]),
        from_dict(DataSpec, d["data"]),
    )


def categories_of(data: DataSpec) -> list[str]:
    """The categories a run trains on: one, or every category of the dataset for "all"."""
    if data.category == "all":
        return list_categories(data.source, data.root)
    return [data.category]


def _train_images(
    data: DataSpec, category: str, size: int, run_dir: Path, foreground: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A category's training images as uint8 (N, 3, S, S) and, if ``foreground`` and the
    category is an object, foregrounds (N, 1, S, S) (else None)."""
    samples = load_samples(data.source, data.root, category, "train")
    fgs = None
    if foreground and not is_texture(data.source, category):
        fgs = foreground_masks(
            samples, cache_dir=run_dir / "foreground", precomputed=data.foreground_dir
        )
    ds = AnomalyDataset(samples, size, (0.0, 1.0), foreground=fgs)
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([(it["image"] * 255).round().to(torch.uint8) for it in items])
    fg = None if fgs is None else torch.stack([it["foreground"] > 0.5 for it in items])
    return images, fg


class _DiffusionADFeed:
    """Alg. 1's batches: normal images, half of them turned into synthetic anomalies."""

    def __init__(
        self, cfg: DiffusionADConfig, train_cfg: TrainConfig, data: DataSpec, run_dir: Path
    ) -> None:
        if data.category == "all":
            raise ValueError("DiffusionAD trains one model per category: pass a --category")
        self.images, self.fg = _train_images(data, data.category, cfg.image_size, run_dir, True)
        self.synthesizer = AnomalySynthesizer(textures=TextureSource(train_cfg.texture_dir))
        self.anomalies = cfg.needs_anomalies

    def __len__(self) -> int:
        return len(self.images)

    def __call__(self, idx: torch.Tensor, gen: torch.Generator, device: object) -> tuple:
        normals = self.images[idx].float() / 255
        if self.anomalies:
            batch, masks, _ = self.synthesizer.batch(
                normals, gen, None if self.fg is None else self.fg[idx]
            )
        else:
            batch, masks = normals, torch.zeros_like(normals[:, :1])
        return (batch * 2 - 1).to(device), masks.to(device)


def latent_training_set(
    cfg: DeCoDiffConfig, data: DataSpec, run_dir: Path | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeCo-Diff's training images (uint8, every category of the run) and class indices; the
    small autoencoder of a run is trained on exactly these (``ensure_vae``)."""
    cats = categories_of(data)
    missing = [c for c in cats if cfg.classes and c not in cfg.classes]
    if missing:
        raise ValueError(f"categories {missing} are not in the model's classes {cfg.classes}")
    parts = [_train_images(data, c, cfg.image_size, Path(run_dir), False)[0] for c in cats]
    labels = [
        torch.full((len(p),), cfg.classes.index(c) if cfg.classes else 0)
        for c, p in zip(cats, parts, strict=True)
    ]
    return torch.cat(parts), torch.cat(labels)


class _DeCoDiffFeed:
    """Latents of normal images of every category, sampled from q(z | x) as the official
    code does, with their class indices."""

    def __init__(
        self, cfg: DeCoDiffConfig, train_cfg: TrainConfig, data: DataSpec, run_dir: Path,
        accelerator: object,
    ) -> None:  # fmt: skip
        from n2n_core.models.vae import ensure_vae

        images, self.labels = latent_training_set(cfg, data, run_dir)
        if accelerator.is_main_process:  # trains the small autoencoder once, if needed
            ensure_vae(cfg.vae, run_dir / "vae", images, train_cfg.seed)
        accelerator.wait_for_everyone()
        vae = ensure_vae(cfg.vae, run_dir / "vae").to(accelerator.device)
        means, stds = [], []
        for i in range(0, len(images), 32):
            x = (images[i : i + 32].float() / 127.5 - 1).to(accelerator.device)
            m, sd = vae.encode_dist(x)
            means.append(m.float().cpu())
            stds.append(sd.float().cpu())
        self.mean, self.std = torch.cat(means), torch.cat(stds)

    def __len__(self) -> int:
        return len(self.mean)

    def __call__(self, idx: torch.Tensor, gen: torch.Generator, device: object) -> tuple:
        z = self.mean[idx] + self.std[idx] * torch.randn(self.mean[idx].shape, generator=gen)
        return z.to(device), self.labels[idx].to(device)


def _lr_lambda(train_cfg: TrainConfig, steps: int):
    """Multiplier of the peak lr at each step: linear warm-up, then constant or cosine."""

    def f(step: int) -> float:
        if step < train_cfg.warmup_steps:
            return (step + 1) / train_cfg.warmup_steps
        if train_cfg.min_lr is None:
            return 1.0
        span = max(1, steps - train_cfg.warmup_steps)
        progress = min(1.0, (step - train_cfg.warmup_steps) / span)
        floor = train_cfg.min_lr / train_cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _record(model_cfg: ModelConfig, train_cfg: TrainConfig, data: DataSpec) -> dict:
    """What run.json holds, normalised through JSON (tuples → lists) for comparisons."""
    record = {
        "method": method_of(model_cfg),
        "model": to_dict(model_cfg),
        "train": to_dict(train_cfg),
        "data": to_dict(data),
    }
    return json.loads(json.dumps(record))


def _save_checkpoint(accelerator: object, ckpt: Path) -> None:
    """accelerate's state into a temporary folder, then swapped in: a crash never leaves a
    half-written checkpoint in place of the last good one."""
    tmp, old = ckpt.with_name(ckpt.name + ".tmp"), ckpt.with_name(ckpt.name + ".old")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ckpt.exists():
            ckpt.rename(old)
        tmp.rename(ckpt)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def train(
    run_dir: Path | str,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    data: DataSpec,
    resume: bool = False,
    stop_after: int | None = None,
) -> dict[str, object]:
    """Train DiffusionAD (Alg. 1) or DeCo-Diff (Eq. 7, 12) into ``run_dir``. ``stop_after``
    ends the run after that many steps with a checkpoint, as an interruption would (used to
    test resuming)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    run_dir = Path(run_dir)
    accelerator = Accelerator(
        mixed_precision=train_cfg.mixed_precision, gradient_accumulation_steps=train_cfg.grad_accum
    )
    main = accelerator.is_main_process
    record = _record(model_cfg, train_cfg, data)
    run_json = run_dir / "run.json"
    ckpt = run_dir / "checkpoints" / "last"
    if resume:
        if not ckpt.is_dir():
            raise FileNotFoundError(f"nothing to resume: {ckpt} does not exist")
        stored = json.loads(run_json.read_text())
        if stored != record:
            raise ValueError(
                f"{run_json} was written with other settings; resume with the same ones"
            )
    elif run_json.exists():
        raise FileExistsError(
            f"{run_dir} already holds a run: pass --resume, or choose another --out"
        )
    accelerator.wait_for_everyone()  # every process checks before the main one writes
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_json, json.dumps(record, indent=2) + "\n")
    accelerator.wait_for_everyone()

    method = method_of(model_cfg)
    if method == "decodiff":
        feed = _DeCoDiffFeed(model_cfg, train_cfg, data, run_dir, accelerator)
    else:
        feed = _DiffusionADFeed(model_cfg, train_cfg, data, run_dir)
    steps = train_cfg.steps
    if train_cfg.epochs:
        steps = math.ceil(train_cfg.epochs * len(feed) / train_cfg.batch_size)
    set_seed(train_cfg.seed)  # the same initial weights on every process and every run
    model = METHODS[method][1](model_cfg)
    if train_cfg.gradient_checkpointing:
        for net in model.children():
            if hasattr(net, "enable_gradient_checkpointing"):
                net.enable_gradient_checkpointing()
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(train_cfg.optimizer)
    if opt_cls is None:
        raise ValueError(f"optimizer must be 'adam' or 'adamw', got {train_cfg.optimizer!r}")
    optimizer = opt_cls(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(train_cfg, steps))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    gen = torch.Generator().manual_seed(train_cfg.seed * 1009 + accelerator.process_index)
    state = _State()
    accelerator.register_for_checkpointing(state, _Generator(gen))
    if resume:
        accelerator.load_state(str(ckpt))

    log_path = run_dir / "train_log.jsonl"
    if main:
        kept = []
        if resume and log_path.exists():
            kept = [
                ln
                for ln in log_path.read_text().splitlines()
                if json.loads(ln)["step"] <= state.step
            ]
        atomic_write_text(log_path, "".join(ln + "\n" for ln in kept))
    bar = progress(
        total=steps, initial=state.step, desc=f"{method} {data.category}", disable=not main
    )
    start, before = time.perf_counter(), state.seconds  # before: earlier segments of the run
    last: dict[str, float] = {}
    while state.step < steps:
        for _ in range(train_cfg.grad_accum):
            with accelerator.accumulate(model):
                idx = torch.randint(len(feed), (train_cfg.batch_size,), generator=gen)
                inputs = feed(idx, gen, accelerator.device)
                with accelerator.autocast():
                    loss, parts = model(*inputs, gen)
                finite = accelerator.gather(torch.isfinite(loss.detach()).reshape(1))
                if not bool(finite.all()):
                    got = {k: float(v.detach()) for k, v in parts.items()}
                    raise TrainingDiverged(
                        f"loss is not finite at step {state.step + 1} ({got}); training stopped. "
                        f"The last good checkpoint is {ckpt} (resume with --resume); "
                        "try a lower --lr or --mixed-precision no."
                    )
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
        state.step += 1
        bar.update(1)
        vals = accelerator.gather(
            torch.stack([loss, *parts.values()]).detach().float().reshape(1, -1)
        ).mean(0)
        last = {
            "loss": float(vals[0]),
            **{k: float(v) for k, v in zip(parts, vals[1:], strict=True)},
        }
        if main and (state.step % train_cfg.log_every == 0 or state.step == steps):
            with log_path.open("a") as f:
                f.write(json.dumps({"step": state.step, **last}) + "\n")
            bar.set_postfix({k: f"{v:.4f}" for k, v in last.items()})
        stopping = stop_after is not None and state.step >= stop_after
        if state.step % train_cfg.checkpoint_every == 0 or state.step == steps or stopping:
            state.seconds = before + time.perf_counter() - start
            _save_checkpoint(accelerator, ckpt)
        if stopping:
            break
    bar.close()
    seconds = time.perf_counter() - start
    if main and state.step >= steps:
        from safetensors.torch import save_file

        tmp = run_dir / ".model.safetensors.tmp"
        save_file(
            {k: v.contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()},
            tmp,
        )
        tmp.replace(run_dir / "model.safetensors")
    accelerator.wait_for_everyone()
    summary = {
        "steps": state.step,
        "seconds": seconds,
        "last": last,
        "processes": accelerator.num_processes,
    }
    if torch.cuda.is_available():
        summary["device"] = torch.cuda.get_device_name()
        summary["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if main and state.step >= steps:  # what the run cost, summed over resumed segments
        total = before + seconds
        info = {**summary, "seconds": total, "steps_per_second": steps / total}
        atomic_write_text(run_dir / "train_info.json", json.dumps(info, indent=2) + "\n")
    return summary


def ensure_trained(
    run_dir: Path | str, model_cfg: ModelConfig, train_cfg: TrainConfig, data: DataSpec
) -> Path:
    """A finished run with exactly these settings: reused if ``run_dir`` holds one, resumed if
    it was interrupted, trained otherwise (notebooks and ``make reproduce`` call this)."""
    run_dir = Path(run_dir)
    record = _record(model_cfg, train_cfg, data)
    run_json = run_dir / "run.json"
    if run_json.is_file():
        if json.loads(run_json.read_text()) != record:
            raise FileExistsError(
                f"{run_dir} holds a run with other settings; choose another folder"
            )
        if (run_dir / "model.safetensors").is_file():
            return run_dir
        if (run_dir / "checkpoints" / "last").is_dir():
            train(run_dir, model_cfg, train_cfg, data, resume=True)
            return run_dir
        shutil.rmtree(run_dir)  # started but never checkpointed: start over
    train(run_dir, model_cfg, train_cfg, data)
    return run_dir
