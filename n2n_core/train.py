"""The training loop of every method, on 🤗 accelerate (mixed precision, several
processes/GPUs, gradient accumulation): progress bar, periodic atomic checkpoints, exact
resume and a NaN guard. The method (``n2n_core.methods``) provides the model and its feed; a
model with a ``fit(feed, g)`` method (no gradients, e.g. a memory bank) is fitted in one pass.

A run folder holds ``run.json`` (method, data, configs, and the environment that started it:
versions, device, git commit), ``train_log.jsonl`` (losses),
``train_info.json`` (steps, seconds, processes, peak GPU memory, the environment),
``checkpoints/last/`` (model, optimiser, learning-rate schedule, step, every process's RNG
states, our data generator) and, at the end, ``model.safetensors``. Resuming from
``checkpoints/last`` replays the same batches, timesteps and noise: the resumed run's losses
equal those of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from n2n_core import methods
from n2n_core.config import DataSpec, TrainConfig, categories_of, to_dict
from n2n_core.io import atomic_write_text
from n2n_core.methods import load_run
from n2n_core.progress import progress

__all__ = [
    "DataSpec",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingInterrupted",
    "adopt",
    "categories_of",
    "ensure_trained",
    "import_official",
    "load_run",
    "train",
]


def __getattr__(name: str) -> Any:
    if name == "TRAIN_PROFILES":  # every registered method's training profiles, by name
        return {n: methods.get(n).train_profiles for n in methods.names()}
    raise AttributeError(name)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C (SIGINT) or SIGTERM stopped training after a checkpoint of the current step."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class _StopRequest:
    """While active, SIGINT and SIGTERM (Ctrl-C, ``timeout``, SLURM, Colab) only ask the loop to
    stop after the running step, so that a checkpoint holds every finished step; a second
    signal interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second signal: give up waiting
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


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


def _record(model_cfg: Any, train_cfg: TrainConfig, data: DataSpec) -> dict:
    """What run.json holds, normalised through JSON (tuples → lists) for comparisons."""
    record = {
        "method": methods.method_of(model_cfg).name,
        "model": to_dict(model_cfg),
        "train": to_dict(train_cfg),
        "data": to_dict(data),
    }
    return json.loads(json.dumps(record))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def settings_differ(run_dir: Path, record: dict) -> list[str]:
    """The settings (dotted keys) in which ``run_dir``'s run.json differs from ``record``.
    Fields that a run.json lacks (added to n2n later) count with their default values, so
    older run folders stay valid when the default reproduces their behaviour."""
    try:
        stored = _record(*load_run(run_dir))
    except (ValueError, TypeError, KeyError) as e:
        return [f"run.json: {e}"]
    a, b = _flat(stored), _flat(record)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


def _resumable(run_dir: Path) -> bool:
    """Whether an unfinished run kept any work: a checkpoint of a stage or of the model, or a
    finished stage (a sub-folder with its train_info.json)."""
    ckpts = run_dir / "checkpoints"
    if ckpts.is_dir() and any(
        p.is_dir() and p.suffix != ".tmp"
        for p in ckpts.iterdir()  # .old: _recover
    ):
        return True
    return run_dir.is_dir() and any((p / "train_info.json").is_file() for p in run_dir.iterdir())


def _holds_work(run_dir: Path) -> bool:
    """Whether a run folder kept anything worth keeping: a checkpoint, a finished stage or a
    trained model. A folder without (a first attempt that failed or was killed before its
    first checkpoint) starts over."""
    return _resumable(run_dir) or (run_dir / "model.safetensors").exists()


def _start(run_dir: Path, record: dict, resume: bool, accelerator: Any) -> bool:
    """Check the folder, then write run.json. Returns whether to resume: a resumable run with
    the same settings; a run.json with no work behind it starts over, with or without
    ``--resume``."""
    if not (run_dir / "run.json").exists():
        if resume:
            raise FileNotFoundError(f"nothing to resume in {run_dir}: it holds no run.json")
    elif not _holds_work(run_dir):
        resume = False  # nothing was saved: start over in place
    elif not resume:
        raise FileExistsError(
            f"{run_dir} already holds a run: pass --resume, or choose another --out"
        )
    else:
        differ = settings_differ(run_dir, record)
        if differ:
            raise ValueError(
                f"{run_dir / 'run.json'} was written with other settings ({', '.join(differ)}); "
                "resume with the same ones"
            )
    accelerator.wait_for_everyone()  # every process checks before the main one writes
    if accelerator.is_main_process:
        from n2n_core.provenance import environment

        run_dir.mkdir(parents=True, exist_ok=True)
        stamped = {**record, "environment": environment()}  # who ran it: not a setting
        atomic_write_text(run_dir / "run.json", json.dumps(stamped, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return resume


def _save_checkpoint(accelerator: Any, ckpt: Path) -> None:
    """accelerate's state into a temporary folder, then swapped in: a crash never leaves a
    half-written checkpoint in place of the last good one."""
    tmp, old = ckpt.with_name(ckpt.name + ".tmp"), ckpt.with_name(ckpt.name + ".old")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
    except (OSError, RuntimeError) as exc:  # e.g. a full disk: torch says "unexpected pos"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(
            f"could not write the checkpoint {tmp} ({exc}); is the disk full or read-only? "
            f"The previous checkpoint {ckpt} is kept"
        ) from exc
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ckpt.exists():
            ckpt.rename(old)
        tmp.rename(ckpt)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _recover(ckpt: Path) -> None:
    """After a crash between the two renames of ``_save_checkpoint`` (``last → last.old``,
    ``last.tmp → last``) there is no ``last``: the ``.tmp`` one is then complete (it was
    written before the first rename) and newest; without it, ``.old`` is the last good one."""
    tmp, old = ckpt.with_name(ckpt.name + ".tmp"), ckpt.with_name(ckpt.name + ".old")
    if ckpt.exists() or not old.exists():
        return
    (tmp if tmp.is_dir() else old).rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def _optimizer(model: torch.nn.Module, train_cfg: TrainConfig, steps: int) -> tuple:
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(train_cfg.optimizer)
    if opt_cls is None:
        raise ValueError(f"optimizer must be 'adam' or 'adamw', got {train_cfg.optimizer!r}")
    optimizer = opt_cls(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(train_cfg, steps))


def _step(model, feed, optimizer, scheduler, train_cfg, accelerator, gen, state, ckpt) -> dict:
    """One optimiser update (of ``grad_accum`` micro-batches); returns the mean losses."""
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
    vals = accelerator.gather(torch.stack([loss, *parts.values()]).detach().float().reshape(1, -1))
    vals = vals.mean(0)
    return {"loss": float(vals[0]), **{k: float(v) for k, v in zip(parts, vals[1:], strict=True)}}


def _save_model(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(path)


def _info(summary: dict, total: float, steps: int) -> str:
    """train_info.json: what the run (or stage) cost, over resumed segments."""
    from n2n_core.provenance import environment

    info = {**summary, "seconds": total, "steps_per_second": steps / total}
    info["environment"] = environment()
    return json.dumps(info, indent=2) + "\n"


def _logged(line: str, step: int) -> bool:
    """Whether a log line records a step up to ``step`` (a line cut off by a crash: no)."""
    try:
        return json.loads(line)["step"] <= step
    except (json.JSONDecodeError, KeyError, TypeError):
        return False


def _loop(
    model: torch.nn.Module, feed: Any, tcfg: TrainConfig, gen: torch.Generator, folder: Path,
    ckpt: Path, accelerator: Any, resume: bool, stop_after: int | None, desc: str,
) -> tuple[torch.nn.Module, dict, float]:  # fmt: skip
    """Train ``model`` on ``feed``: logs to ``folder``/train_log.jsonl, checkpoints to ``ckpt``
    (resumed from there if ``resume`` and it exists). Returns the unwrapped model, the summary
    and the seconds of this and earlier segments."""
    steps = tcfg.steps
    if tcfg.epochs:
        steps = math.ceil(tcfg.epochs * len(feed) / tcfg.batch_size)
    main = accelerator.is_main_process
    if tcfg.gradient_checkpointing:
        for net in model.children():
            if hasattr(net, "enable_gradient_checkpointing"):
                net.enable_gradient_checkpointing()
    optimizer, scheduler = _optimizer(model, tcfg, steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    state = _State()
    accelerator.register_for_checkpointing(state, _Generator(gen))
    if resume and accelerator.is_main_process:
        _recover(ckpt)
    accelerator.wait_for_everyone()
    if resume and ckpt.is_dir():
        accelerator.load_state(str(ckpt))
    log_path = folder / "train_log.jsonl"
    if main:
        kept = []
        if resume and log_path.exists():
            kept = [ln for ln in log_path.read_text().splitlines() if _logged(ln, state.step)]
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(log_path, "".join(ln + "\n" for ln in kept))
    bar = progress(total=steps, initial=state.step, desc=desc, disable=not main)
    start, before = time.perf_counter(), state.seconds  # before: earlier segments of the run
    last: dict[str, float] = {}
    with _StopRequest() as request:
        while state.step < steps:
            last = _step(model, feed, optimizer, scheduler, tcfg, accelerator, gen, state, ckpt)
            state.step += 1
            bar.update(1)
            if main and (state.step % tcfg.log_every == 0 or state.step == steps):
                with log_path.open("a") as f:
                    f.write(json.dumps({"step": state.step, **last}) + "\n")
                bar.set_postfix({k: f"{v:.4f}" for k, v in last.items()})
            signalled = _requested(request, accelerator)
            stopping = signalled or (stop_after is not None and state.step >= stop_after)
            if state.step % tcfg.checkpoint_every == 0 or state.step == steps or stopping:
                state.seconds = before + time.perf_counter() - start
                _save_checkpoint(accelerator, ckpt)
            if signalled:  # request.signum is set (``_requested``)
                bar.close()
                raise TrainingInterrupted(
                    f"{signal.Signals(request.signum).name} at step {state.step}/{steps} "
                    f"({desc}): saved {ckpt}; continue with the same command and --resume",
                    request.signum,
                )
            if stopping:
                break
    bar.close()
    seconds = time.perf_counter() - start
    summary = {
        "steps": state.step,
        "seconds": seconds,
        "last": last,
        "finished": state.step >= steps,
    }
    summary["processes"] = accelerator.num_processes
    if torch.cuda.is_available():
        summary["device"] = torch.cuda.get_device_name()
        summary["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model), summary, before + seconds


def _requested(request: _StopRequest, accelerator: Any) -> bool:
    """Whether any process was asked to stop (all processes then stop at the same step)."""
    asked = request.signum is not None
    if accelerator.num_processes > 1:
        flag = torch.tensor([float(asked)], device=accelerator.device)
        asked = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
        if asked and request.signum is None:
            request.signum = signal.SIGTERM
    return asked


def _accelerator(tcfg: TrainConfig) -> Any:
    from accelerate import Accelerator

    return Accelerator(
        mixed_precision=tcfg.mixed_precision, gradient_accumulation_steps=tcfg.grad_accum
    )


def _train_stage(run_dir: Path, stage: methods.Stage, resume: bool, stop_after: int | None) -> bool:
    """One stage before the model (its own accelerator, checkpoints and log); when it ends
    its folder RUN/<name> appears whole. Returns whether it finished."""
    from accelerate.utils import set_seed

    accelerator = _accelerator(stage.train)
    partial, ckpt = run_dir / f"{stage.name}.partial", run_dir / "checkpoints" / stage.name
    set_seed(stage.train.seed)
    model = stage.build()
    gen = torch.Generator().manual_seed(stage.stream_seed + accelerator.process_index)
    model, summary, total = _loop(
        model, stage.feed, stage.train, gen, partial, ckpt, accelerator, resume, stop_after,
        stage.name,
    )  # fmt: skip
    if not summary.pop("finished"):
        return False
    if accelerator.is_main_process:
        stage.save(model, partial)
        atomic_write_text(partial / "train_info.json", _info(summary, total, summary["steps"]))
        partial.rename(run_dir / stage.name)
        shutil.rmtree(ckpt, ignore_errors=True)
    accelerator.wait_for_everyone()
    return True


def _check_data(data: DataSpec) -> None:
    """Every category of the run exists and has training images (raises DatasetError naming
    the path)."""
    from n2n_core.data import load_samples
    from n2n_core.data.samples import DatasetError

    for category in categories_of(data):
        if not load_samples(data.source, data.root, category, "train"):
            raise DatasetError(f"{category!r} under {data.root} has no training images")


def train(
    run_dir: Path | str,
    model_cfg: Any,
    train_cfg: TrainConfig,
    data: DataSpec,
    resume: bool = False,
    stop_after: int | None = None,
    until: str | None = None,
) -> dict[str, object]:
    """Train the method whose config ``model_cfg`` is (DiffusionAD: Alg. 1; DeCo-Diff: Eq. 7,
    12; ...) into ``run_dir``: first the method's stages (e.g. DeCo-Diff's autoencoder), then
    its model. ``stop_after`` ends the running stage after that many steps with a checkpoint,
    as an interruption would (used to test resuming); ``until`` names a stage after which to
    stop (e.g. ``"vae"``: only DeCo-Diff's autoencoder; nothing when the method has no such
    stage, as DeCo-Diff with a pretrained VAE)."""
    from accelerate.utils import set_seed

    run_dir, method = Path(run_dir), methods.method_of(model_cfg)
    _check_data(data)  # before the run folder exists: a bad dataset leaves nothing behind
    train_cfg = method.prepare(model_cfg, train_cfg, data)  # e.g. DTD found or missing
    accelerator = _accelerator(train_cfg)
    main = accelerator.is_main_process
    resume = _start(run_dir, _record(model_cfg, train_cfg, data), resume, accelerator)
    stages = method.stages(model_cfg, train_cfg, data, run_dir)
    if until is not None and until not in [s.name for s in stages]:
        return {"stage": until, "finished": True}  # e.g. no "vae" stage: a pretrained VAE
    for stage in stages:
        if not (run_dir / stage.name).is_dir():
            if not _train_stage(run_dir, stage, resume, stop_after):
                return {"stage": stage.name, "finished": False}
        if stage.name == until:
            return {"stage": stage.name, "finished": True}
    accelerator = _accelerator(train_cfg)  # the stages' accelerators hold their own models
    feed = method.feed(model_cfg, train_cfg, data, run_dir, accelerator)
    set_seed(train_cfg.seed)  # the same initial weights on every process and every run
    model = method.build(model_cfg)
    gen = torch.Generator().manual_seed(train_cfg.seed * 1009 + accelerator.process_index)
    if hasattr(model, "fit"):  # no gradients: one pass over the training set
        start = time.perf_counter()
        model.fit(feed, gen)
        seconds = time.perf_counter() - start
        summary = {"steps": 1, "seconds": seconds, "last": {}, "processes": 1}
        if main:
            _save_model(model, run_dir / "model.safetensors")
            atomic_write_text(run_dir / "train_info.json", _info(summary, seconds, 1))
        return summary
    ckpt = run_dir / "checkpoints" / "last"
    desc = f"{method.name} {data.category}"
    model, summary, total = _loop(
        model, feed, train_cfg, gen, run_dir, ckpt, accelerator, resume, stop_after, desc
    )
    if summary.pop("finished") and main:
        _save_model(model, run_dir / "model.safetensors")
        atomic_write_text(run_dir / "train_info.json", _info(summary, total, summary["steps"]))
    accelerator.wait_for_everyone()
    return summary


def ensure_trained(
    run_dir: Path | str,
    model_cfg: Any,
    train_cfg: TrainConfig,
    data: DataSpec,
    until: str | None = None,
) -> Path:
    """A finished run with these settings: reused if ``run_dir`` holds one, resumed if it was
    interrupted, trained otherwise (notebooks and ``reproduce`` call this); ``until``: only up
    to the end of that stage (see ``train``). A run.json that lacks fields added later, whose
    defaults are these settings, counts as the same."""
    run_dir = Path(run_dir)
    try:
        train_cfg = methods.method_of(model_cfg).prepare(model_cfg, train_cfg, data)
    except ValueError:
        if not (run_dir / "model.safetensors").is_file():
            raise
        # a finished run is reused where what only training needs (e.g. DTD) is absent
        train_cfg = replace(train_cfg, texture_dir=load_run(run_dir)[1].texture_dir)
    if (run_dir / "run.json").is_file():
        differ = settings_differ(run_dir, _record(model_cfg, train_cfg, data))
        if differ:
            raise FileExistsError(
                f"{run_dir} holds a run with other settings ({', '.join(differ)}); "
                "choose another folder"
            )
        if (run_dir / "model.safetensors").is_file() or (until and (run_dir / until).is_dir()):
            return run_dir
    # resumed if the folder kept any work; one that never did starts over (``_start``)
    resume = (run_dir / "run.json").is_file()
    train(run_dir, model_cfg, train_cfg, data, resume=resume, until=until)
    return run_dir


def adopt(
    run_dir: Path | str,
    model: torch.nn.Module,
    model_cfg: Any,
    train_cfg: TrainConfig,
    data: DataSpec,
    info: dict[str, Any],
) -> Path:
    """A run folder for weights trained elsewhere (e.g. the released checkpoints of a paper):
    run.json, model.safetensors and train_info.json (``info`` says where they came from), so
    that ``evaluate`` and ``load_predictor`` treat it like any finished run."""
    from n2n_core.provenance import environment

    run_dir = Path(run_dir)
    if (run_dir / "run.json").exists():
        raise FileExistsError(f"{run_dir} already holds a run: choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        run_dir / "run.json", json.dumps(_record(model_cfg, train_cfg, data), indent=2) + "\n"
    )
    _save_model(model, run_dir / "model.safetensors")
    info = {"steps": 0, "seconds": 0.0, **info, "environment": environment()}
    atomic_write_text(run_dir / "train_info.json", json.dumps(info, indent=2) + "\n")
    return run_dir


def import_official(
    run_dir: Path | str,
    method: str,
    checkpoint: Path | str,
    config: str,
    classes: str,
    vae: str | None,
    data: DataSpec,
) -> Path:
    """A run folder (``adopt``) from a checkpoint released by ``method``'s authors
    (``Method.import_official``), recording where it came from."""
    checkpoint = Path(checkpoint)
    model, cfg, tcfg = methods.get(method).import_official(checkpoint, config, classes, vae, data)
    info = {"imported_from": str(checkpoint.resolve()), "config": config}
    return adopt(run_dir, model, cfg, tcfg, data, info)
