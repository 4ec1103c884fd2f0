"""The training loop of every method, on 🤗 accelerate (mixed precision, several
processes/GPUs, gradient accumulation): progress bar, periodic atomic checkpoints, exact
resume and a NaN guard, with one ``Accelerator`` per ``train()``. The method
(``n2n_core.methods``) provides the model and its feed; a method of kind ``fitted`` (no
gradients, e.g. a memory bank) is fitted in one pass.

A run folder holds ``run.json`` (method, data, configs, and the environment that started it:
versions, device, git commit), ``train_log.jsonl`` (losses),
``train_info.json`` (steps, seconds, processes, peak GPU memory, the environment),
``checkpoints/last/`` (``n2n_core.checkpoint``: model, optimiser, learning-rate schedule,
step, every process's RNG states, our data generator; no pickles) and, at the end,
``model.safetensors`` (``n2n_core.run_folder`` owns these files). Resuming from
``checkpoints/last`` replays the same batches, timesteps and noise: the resumed run's losses
equal those of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from n2n_core import checkpoint, methods
from n2n_core.config import DataSpec, TrainConfig, categories_of
from n2n_core.device import configure_cuda, default_device, precision_for
from n2n_core.dry_run import STEP_PROBE
from n2n_core.io import atomic_write_text
from n2n_core.methods import load_run
from n2n_core.methods.base import ParamGroup
from n2n_core.progress import progress
from n2n_core.run_folder import RunFolder, record
from n2n_core.selection import SelectionOnTest, scorer_on_test

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


def _lr_lambda(train_cfg: TrainConfig, steps: int, per_epoch: int = 1):
    """Multiplier of the peak lr at each optimiser step: linear warm-up, then constant or a
    cosine to ``min_lr`` over ``cosine_span`` × the training. With ``lr_per="epoch"`` the
    count is the epoch (``per_epoch`` steps each) and the warm-up starts at 0."""
    tc = train_cfg
    by_epoch = tc.lr_per == "epoch"
    warm = tc.warmup_epochs if by_epoch else tc.warmup_steps
    length = steps // per_epoch if by_epoch else steps
    length = length if tc.cosine_span == 1 else tc.cosine_span * length

    def f(step: int) -> float:
        n = step // per_epoch if by_epoch else step
        if n < warm:
            return n / warm if by_epoch else (n + 1) / warm
        if tc.min_lr is None:
            return 1.0
        progress = min(1.0, (n - warm) / max(1, length - warm))
        floor = tc.min_lr / tc.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _optimizer(
    model: torch.nn.Module, train_cfg: TrainConfig, steps: int, per_epoch: int = 1,
    groups: list[ParamGroup] | None = None,
) -> tuple:  # fmt: skip
    """The optimiser and its schedule: one group at the run's lr and schedule, or the
    method's ``groups`` (each its own lr; its own schedule, or the run's)."""
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(train_cfg.optimizer)
    if opt_cls is None:
        raise ValueError(f"optimizer must be 'adam' or 'adamw', got {train_cfg.optimizer!r}")
    run_schedule = _lr_lambda(train_cfg, steps, per_epoch)
    groups = groups or [ParamGroup(list(model.parameters()), train_cfg.lr)]
    optimizer = opt_cls(
        [{"params": g.params, "lr": g.lr} for g in groups],
        lr=train_cfg.lr, weight_decay=train_cfg.weight_decay,
    )  # fmt: skip
    schedules = [g.schedule or run_schedule for g in groups]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedules)


def _step(model, feed, optimizer, scheduler, train_cfg, accelerator, gen, step, ckpt) -> dict:
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
                    f"loss is not finite at step {step + 1} ({got}); training stopped. "
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


def _logged(line: str, step: int) -> bool:
    """Whether a log line records a step up to ``step`` (a line cut off by a crash: no)."""
    try:
        return json.loads(line)["step"] <= step
    except (json.JSONDecodeError, KeyError, TypeError):
        return False


def _updates_per_epoch(tcfg: TrainConfig, feed: Any) -> int:
    return tcfg.updates_per_epoch(len(feed))


def _steps_per_epoch(tcfg: TrainConfig, feed: Any) -> int:
    """Optimiser updates per epoch with ``lr_per="epoch"`` (else 1: the schedule counts steps)."""
    return _updates_per_epoch(tcfg, feed) if tcfg.lr_per == "epoch" else 1


def _total_steps(tcfg: TrainConfig, feed: Any) -> int:
    return tcfg.total_steps(len(feed))


class _Log:
    """train_log.jsonl of the main process; on resume, the lines up to the checkpoint kept."""

    def __init__(self, folder: Path, main: bool, resume: bool, step: int) -> None:
        self.path, self.main = folder / "train_log.jsonl", main
        if main:
            kept = []
            if resume and self.path.exists():
                kept = [ln for ln in self.path.read_text().splitlines() if _logged(ln, step)]
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))

    def write(self, step: int, values: dict) -> None:
        if self.main:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")


def _prepare(
    model: torch.nn.Module, tcfg: TrainConfig, steps: int, per_epoch: int, accelerator: Any,
    groups: list[ParamGroup] | None,
) -> tuple:  # fmt: skip
    """The model, optimiser and schedule, prepared by the run's accelerator for this loop."""
    if tcfg.gradient_checkpointing:
        for net in model.children():
            if hasattr(net, "enable_gradient_checkpointing"):
                net.enable_gradient_checkpointing()
    if tcfg.mixed_precision != accelerator.mixed_precision:
        raise ValueError(
            f"train.mixed_precision {tcfg.mixed_precision!r} differs from the run's "
            f"({accelerator.mixed_precision!r}): every stage of a run trains in one precision"
        )
    accelerator.gradient_accumulation_steps = tcfg.grad_accum
    accelerator.step = 0  # micro-batches of this loop (checkpoints fall on update boundaries)
    optimizer, scheduler = _optimizer(model, tcfg, steps, per_epoch, groups)
    return accelerator.prepare(model, optimizer, scheduler)


def _loop(
    model: torch.nn.Module, feed: Any, tcfg: TrainConfig, gen: torch.Generator, folder: Path,
    ckpt: Path, accelerator: Any, resume: bool, stop_after: int | None, desc: str,
    groups: list[ParamGroup] | None = None, select: SelectionOnTest | None = None,
) -> tuple[torch.nn.Module, dict, float]:  # fmt: skip
    """Train ``model`` on ``feed``: logs to ``folder``/train_log.jsonl, checkpoints to ``ckpt``
    (resumed from there if ``resume`` and it exists). Returns the unwrapped model, the summary
    and the seconds of this and earlier segments."""
    steps, per_epoch = _total_steps(tcfg, feed), _steps_per_epoch(tcfg, feed)
    main = accelerator.is_main_process
    model, optimizer, scheduler = _prepare(model, tcfg, steps, per_epoch, accelerator, groups)
    parts = (accelerator, model, optimizer, scheduler, gen)
    state = {"step": 0, "seconds": 0.0}
    if resume and main:
        checkpoint.recover(ckpt)
    accelerator.wait_for_everyone()
    if resume and ckpt.is_dir():
        state = checkpoint.load(ckpt, *parts)
    log = _Log(folder, main, resume, state["step"])
    probe = STEP_PROBE.get()  # a dry run: its steps, timed and measured
    end = steps if probe is None else probe.start(desc, steps, model)
    bar = progress(total=end, initial=state["step"], desc=desc, disable=not main)
    start, before = time.perf_counter(), state["seconds"]  # before: earlier segments
    last: dict[str, float] = {}
    with _StopRequest() as request:
        while state["step"] < end:
            with nullcontext() if probe is None else probe.step():
                last = _step(
                    model, feed, optimizer, scheduler, tcfg, accelerator, gen, state["step"], ckpt
                )
            state["step"] += 1
            bar.update(1)
            if state["step"] % tcfg.log_every == 0 or state["step"] == end:
                log.write(state["step"], last)
                bar.set_postfix({k: f"{v:.4f}" for k, v in last.items()})
            if select is not None:
                select.after(state["step"], accelerator.unwrap_model(model), state, accelerator)
            signalled = _requested(request, accelerator)
            stopping = signalled or (stop_after is not None and state["step"] >= stop_after)
            at = state["step"] % tcfg.checkpoint_every == 0 or state["step"] == end or stopping
            if at and (probe is None or probe.keep):
                state["seconds"] = before + time.perf_counter() - start
                checkpoint.save(ckpt, *parts, state)
            if signalled:
                bar.close()
                raise _interrupted(request.signum, state["step"], steps, desc, ckpt)
            if stopping:
                break
    bar.close()
    seconds = time.perf_counter() - start
    summary = _summary(state, end, seconds, last, accelerator)
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model), summary, before + seconds


def _interrupted(signum: int, step: int, steps: int, desc: str, ckpt: Path) -> Exception:
    return TrainingInterrupted(
        f"{signal.Signals(signum).name} at step {step}/{steps} ({desc}): saved {ckpt}; run the "
        "same command again to continue (`train` with --resume)",
        signum,
    )


def _summary(state: dict, steps: int, seconds: float, last: dict, accelerator: Any) -> dict:
    summary = {"steps": state["step"], "seconds": seconds, "last": last}
    summary |= {"finished": state["step"] >= steps, "processes": accelerator.num_processes}
    if "best" in state:  # selected on the test set
        summary["selected_checkpoint"] = {"on": "test set", "optimistic": True, **state["best"]}
    if torch.cuda.is_available():
        summary["device"] = torch.cuda.get_device_name()
        summary["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return summary


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
    """The one Accelerator of a ``train()`` call (its stages use it too)."""
    from accelerate import Accelerator

    return Accelerator(
        mixed_precision=tcfg.mixed_precision, gradient_accumulation_steps=tcfg.grad_accum
    )


def _train_stage(
    run: RunFolder, stage: methods.Stage, accelerator: Any, resume: bool, stop_after: int | None
) -> bool:
    """One stage before the model (its own checkpoints and log, the run's accelerator); when
    it ends its folder RUN/<name> appears whole. Returns whether it finished."""
    from accelerate.utils import set_seed

    partial, ckpt = run.path / f"{stage.name}.partial", run.checkpoint(stage.name)
    set_seed(stage.train.seed)
    model = stage.build()
    gen = torch.Generator().manual_seed(stage.stream_seed + accelerator.process_index)
    model, summary, total = _loop(
        model, stage.feed, stage.train, gen, partial, ckpt, accelerator, resume, stop_after,
        stage.name,
    )  # fmt: skip
    accelerator.free_memory()  # the stage's model and optimiser leave the accelerator
    if not summary.pop("finished"):
        return False
    if accelerator.is_main_process:
        stage.save(model, partial)
        run.write_info(summary, total, summary["steps"], partial)
        run.finish_stage(stage.name, partial)
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


def _start(run: RunFolder, rec: dict, resume: bool, accelerator: Any) -> bool:
    """Check the folder, then write run.json. Returns whether to resume: a resumable run with
    the same settings; a run.json with no work behind it starts over, with or without
    ``--resume``."""
    status = run.status
    if status == "empty" and resume:
        raise FileNotFoundError(f"nothing to resume in {run.path}: it holds no run.json")
    if status == "started":
        resume = False  # nothing was saved: start over in place
    elif status != "empty" and not resume:
        raise FileExistsError(
            f"{run.path} already holds a run: pass --resume, or choose another --out"
        )
    elif status != "empty":
        differ = run.differs(rec)
        if differ:
            raise ValueError(
                f"{run.record_path} was written with other settings ({', '.join(differ)}); "
                "resume with the same ones"
            )
    accelerator.wait_for_everyone()  # every process checks before the main one writes
    if accelerator.is_main_process:
        run.write_record(rec)
    accelerator.wait_for_everyone()
    return resume


def _fit(run: RunFolder, model: Any, feed: Any, gen: torch.Generator, accelerator: Any) -> dict:
    """A method fitted in one pass (no gradients, e.g. a memory bank), on the run's device."""
    start = time.perf_counter()
    model.to(accelerator.device).fit(feed, gen)
    seconds = time.perf_counter() - start
    summary = {"steps": 1, "seconds": seconds, "last": {}, "processes": 1}
    if accelerator.is_main_process:
        run.save_weights(model)
        run.write_info(summary, seconds, 1)
    accelerator.wait_for_everyone()
    return summary


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
    stage, as DeCo-Diff with a pretrained VAE). The run folder is locked meanwhile: a second
    training or evaluation of it is refused (``RunFolderLocked``)."""
    run, method = RunFolder(run_dir), methods.method_of(model_cfg)
    _check_data(data)  # before the run folder exists: a bad dataset leaves nothing behind
    model_cfg, train_cfg = method.prepare(model_cfg, train_cfg, data)  # e.g. DTD found or not
    train_cfg = _with_precision(run, train_cfg)
    configure_cuda()
    accelerator = _accelerator(train_cfg)
    with run.lock("train") if accelerator.is_main_process else nullcontext():
        resume = _start(run, record(model_cfg, train_cfg, data), resume, accelerator)
        return _train_run(run, method, model_cfg, train_cfg, data, accelerator, resume,
                          stop_after, until)  # fmt: skip


def _with_precision(run: RunFolder, tcfg: TrainConfig) -> TrainConfig:
    """``mixed_precision="auto"`` made concrete: a started run keeps the precision it started
    with (a resumed Colab session may get another card); a new one gets the device's."""
    if tcfg.mixed_precision != "auto":
        return tcfg
    stored = "auto"
    if run.started:
        try:
            stored = run.configs[1].mixed_precision
        except ValueError:
            pass  # an unreadable run.json: _start reports it
    chosen = stored if stored != "auto" else precision_for(default_device())
    return replace(tcfg, mixed_precision=chosen)


def _selection(
    method: Any, cfg: Any, tcfg: TrainConfig, data: DataSpec, feed: Any, run: RunFolder,
    accelerator: Any,
) -> SelectionOnTest | None:  # fmt: skip
    """The official DiffusionAD checkpoint choice, when ``select_on_test_every`` asks for it."""
    if tcfg.select_on_test_every is None:
        return None
    every = tcfg.select_on_test_every * _updates_per_epoch(tcfg, feed)
    score = scorer_on_test(method, cfg, data, accelerator.device)
    return SelectionOnTest(score, every, run.checkpoint().with_name("best") / "model.safetensors")


def _train_run(
    run: RunFolder, method: Any, model_cfg: Any, train_cfg: TrainConfig, data: DataSpec,
    accelerator: Any, resume: bool, stop_after: int | None, until: str | None,
) -> dict[str, object]:  # fmt: skip
    """The stages, then the model (``train``, with the run folder locked)."""
    from accelerate.utils import set_seed

    stages = method.stages(model_cfg, train_cfg, data, run.path)
    if until is not None and until not in [s.name for s in stages]:
        return {"stage": until, "finished": True}  # e.g. no "vae" stage: a pretrained VAE
    for stage in stages:
        if not run.stage(stage.name).is_dir():
            if not _train_stage(run, stage, accelerator, resume, stop_after):
                return {"stage": stage.name, "finished": False}
        if stage.name == until:
            return {"stage": stage.name, "finished": True}
    feed = method.feed(model_cfg, train_cfg, data, run.path, accelerator)
    set_seed(train_cfg.seed)  # the same initial weights on every process and every run
    model = method.build(model_cfg)
    gen = torch.Generator().manual_seed(train_cfg.seed * 1009 + accelerator.process_index)
    if method.kind == "fitted":
        return _fit(run, model, feed, gen, accelerator)
    desc = f"{method.name} {data.category}"
    select = _selection(method, model_cfg, train_cfg, data, feed, run, accelerator)
    model, summary, total = _loop(
        model, feed, train_cfg, gen, run.path, run.checkpoint(), accelerator, resume,
        stop_after, desc, method.param_groups(model, model_cfg, train_cfg), select,
    )  # fmt: skip
    if summary.pop("finished") and accelerator.is_main_process:
        if "selected_checkpoint" in summary:  # the test set's choice replaces the last weights
            from safetensors.torch import load_file

            model.load_state_dict(load_file(select.path))
        run.save_weights(model)
        run.write_info(summary, total, summary["steps"])
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
    run, method = RunFolder(run_dir), methods.method_of(model_cfg)
    try:
        model_cfg, train_cfg = method.prepare(model_cfg, train_cfg, data)
    except ValueError:
        if not run.finished:
            raise
        # a finished run is reused where what only training needs (e.g. DTD) is absent
        recorded = run.configs[0]
        model_cfg = replace(model_cfg, **{k: getattr(recorded, k) for k in method.resources})
    train_cfg = _with_precision(run, train_cfg)
    if run.started:
        differ = run.differs(record(model_cfg, train_cfg, data))
        if differ:
            raise FileExistsError(
                f"{run.path} holds a run with other settings ({', '.join(differ)}); "
                "choose another folder"
            )
        if run.finished or (until and run.stage(until).is_dir()):
            return run.path
    # resumed if the folder kept any work; one that never did starts over (``_start``)
    train(run.path, model_cfg, train_cfg, data, resume=run.started, until=until)
    return run.path


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

    run = RunFolder(run_dir)
    if run.started:
        raise FileExistsError(f"{run.path} already holds a run: choose another --out")
    run.write_record(record(model_cfg, train_cfg, data))
    run.save_weights(model)
    info = {"steps": 0, "seconds": 0.0, **info, "environment": environment()}
    atomic_write_text(run.path / "train_info.json", json.dumps(info, indent=2) + "\n")
    return run.path


def import_official(
    run_dir: Path | str,
    method: str,
    checkpoint_file: Path | str,
    data: DataSpec,
    **options: Any,
) -> Path:
    """A run folder (``adopt``) from a checkpoint released by ``method``'s authors
    (``Method.import_official``; ``options`` are the method's, e.g. DeCo-Diff's ``config``,
    ``classes`` and ``vae``), recording where it came from."""
    checkpoint_file = Path(checkpoint_file)
    model, cfg, tcfg = methods.get(method).import_official(checkpoint_file, data, **options)
    info = {"imported_from": str(checkpoint_file.resolve()), **options}
    return adopt(run_dir, model, cfg, tcfg, data, info)
