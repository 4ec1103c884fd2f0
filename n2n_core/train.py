"""The training loop, on 🤗 accelerate (mixed precision, several processes/GPUs, gradient
accumulation): progress bar, periodic atomic checkpoints, exact resume and a NaN guard.

A run folder holds ``run.json`` (method, data, configs), ``train_log.jsonl`` (losses),
``checkpoints/last/`` (model, optimiser, step, every process's RNG states, our data
generator) and, at the end, ``model.safetensors``. Resuming from ``checkpoints/last``
replays the same batches, timesteps and noise: the resumed run's losses equal those of an
uninterrupted one.
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
from n2n_core.data import AnomalyDataset, foreground_masks, is_texture, load_samples
from n2n_core.io import atomic_write_text
from n2n_core.methods.diffusionad import DiffusionAD, DiffusionADConfig
from n2n_core.synthesis import AnomalySynthesizer, TextureSource

__all__ = ["DataSpec", "TrainConfig", "TrainingDiverged", "ensure_trained", "load_run", "train"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class DataSpec:
    source: str = "synthetic"
    root: str = "data/synthetic"
    category: str = "cap"
    foreground_dir: str | None = None  # precomputed foreground masks (<stem>.png)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimiser updates (each of grad_accum micro-batches)
    epochs: int | None = None  # if set: steps = ceil(epochs × #train images / batch_size)
    batch_size: int = 6  # per process; half normal, half synthetic (§4.2: 3 + 3)
    lr: float = 1e-4  # Adam (§4.2)
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 10
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    texture_dir: str | None = None  # DTD images for anomaly appearances; None: procedural


TRAIN_PROFILES = {
    # smoke: small CPU nets converge much faster at 1e-3 than at the paper's 1e-4 (measured)
    "smoke": TrainConfig(steps=900, lr=1e-3, checkpoint_every=300, log_every=25),
    "paper": TrainConfig(steps=0, epochs=500, checkpoint_every=2000, log_every=50),
}


class _State:
    """Step counter, saved with the checkpoint."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, d: dict) -> None:
        self.step = int(d["step"])


class _Generator:
    """Makes a torch.Generator checkpointable through accelerate."""

    def __init__(self, g: torch.Generator) -> None:
        self.g = g

    def state_dict(self) -> dict:
        return {"state": self.g.get_state()}

    def load_state_dict(self, d: dict) -> None:
        self.g.set_state(d["state"])


def load_run(run_dir: Path | str) -> tuple[DiffusionADConfig, TrainConfig, DataSpec]:
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a training run folder")
    d = json.loads(path.read_text())
    if d.get("method") != "diffusionad":
        raise ValueError(f"{path}: unsupported method {d.get('method')!r}")
    return (
        from_dict(DiffusionADConfig, d["model"]),
        from_dict(TrainConfig, d["train"]),
        from_dict(DataSpec, d["data"]),
    )


def _train_images(
    data: DataSpec, size: int, run_dir: Path
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All training images as uint8 (N, 3, S, S) and foregrounds (N, 1, S, S) (None: texture)."""
    samples = load_samples(data.source, data.root, data.category, "train")
    texture = is_texture(data.source, data.category)
    fgs = foreground_masks(
        samples, cache_dir=run_dir / "foreground", precomputed=data.foreground_dir, texture=texture
    )
    ds = AnomalyDataset(samples, size, (0.0, 1.0), foreground=None if texture else fgs)
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([(it["image"] * 255).round().to(torch.uint8) for it in items])
    fg = None if texture else torch.stack([it["foreground"] > 0.5 for it in items])
    return images, fg


def _record(model_cfg: DiffusionADConfig, train_cfg: TrainConfig, data: DataSpec) -> dict:
    """What run.json holds, normalised through JSON (tuples → lists) for comparisons."""
    record = {
        "method": "diffusionad",
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
    model_cfg: DiffusionADConfig,
    train_cfg: TrainConfig,
    data: DataSpec,
    resume: bool = False,
    stop_after: int | None = None,
) -> dict[str, object]:
    """Train DiffusionAD (Alg. 1) into ``run_dir``. ``stop_after`` ends the run after that
    many steps with a checkpoint, as an interruption would (used to test resuming)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

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

    images, fg = _train_images(data, model_cfg.image_size, run_dir)
    steps = train_cfg.steps
    if train_cfg.epochs:
        steps = math.ceil(train_cfg.epochs * len(images) / train_cfg.batch_size)
    set_seed(train_cfg.seed)  # the same initial weights on every process and every run
    model = DiffusionAD(model_cfg)
    if train_cfg.gradient_checkpointing and model.denoiser is not None:
        model.denoiser.enable_gradient_checkpointing()
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    synthesizer = AnomalySynthesizer(textures=TextureSource(train_cfg.texture_dir))
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
    unwrapped = accelerator.unwrap_model(model)
    needs_anomalies = unwrapped.needs_anomalies
    quiet = {} if main else {"disable": True}  # main: tqdm's own defaults, so TQDM_DISABLE=1 works
    bar = tqdm(total=steps, initial=state.step, desc=f"diffusionad {data.category}", **quiet)
    start = time.perf_counter()
    last: dict[str, float] = {}
    while state.step < steps:
        for _ in range(train_cfg.grad_accum):
            with accelerator.accumulate(model):
                idx = torch.randint(len(images), (train_cfg.batch_size,), generator=gen)
                normals = images[idx].float() / 255
                if needs_anomalies:
                    fgb = None if fg is None else fg[idx]
                    batch, masks, _ = synthesizer.batch(normals, gen, fgb)
                else:
                    batch, masks = normals, torch.zeros_like(normals[:, :1])
                x = (batch * 2 - 1).to(accelerator.device)
                with accelerator.autocast():
                    loss, parts = model(x, masks.to(accelerator.device), gen)
                finite = accelerator.gather(torch.isfinite(loss.detach()).reshape(1))
                if not bool(finite.all()):
                    got = {k: float(v) for k, v in parts.items()}
                    raise TrainingDiverged(
                        f"loss is not finite at step {state.step + 1} ({got}); training stopped. "
                        f"The last good checkpoint is {ckpt} (resume with --resume); "
                        "try a lower --lr or --mixed-precision no."
                    )
                accelerator.backward(loss)
                optimizer.step()
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
        summary["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return summary


def ensure_trained(
    run_dir: Path | str, model_cfg: DiffusionADConfig, train_cfg: TrainConfig, data: DataSpec
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
