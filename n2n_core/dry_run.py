"""``train … --dry-run N``: N optimiser steps of the real configuration in a throw-away run
folder, then the seconds per step, the peak memory and the bytes autograd saved for one
step's backward (the activations), to compare with ``plan``'s prediction before paying for a
long run. The training loop is the real one (``train``); a :class:`StepProbe` set in
``STEP_PROBE`` ends each of its loops after N steps and times and measures them.
"""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from n2n_core.config import DataSpec, TrainConfig

__all__ = ["STEP_PROBE", "SavedBytes", "StepProbe", "dry_run", "format_dry_run"]


class SavedBytes:
    """The bytes of the tensors autograd saves for the backward pass while this context is
    open, each storage once and the parameters not counted: the activations a training step
    keeps in memory. Counting stops at the first backward (``unpack``): with gradient
    accumulation, one micro-batch. ``keep=False`` measures without keeping them: autograd
    gets a placeholder instead (no backward is then possible), so a full-size forward needs
    little memory; a storage counts again only once it has been freed."""

    def __init__(self, model: torch.nn.Module, keep: bool = True) -> None:
        self._params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._live: dict[int, tuple[weakref.ref, int]] = {}  # data_ptr → (a tensor, bytes)
        self.total, self._open, self._keep = 0, True, keep
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> Any:
        if self._open and t.device.type != "meta":
            s = t.untyped_storage()
            ptr, seen = s.data_ptr(), self._live.get(s.data_ptr())
            if ptr not in self._params and (seen is None or seen[0]() is None):
                self._live[ptr] = (weakref.ref(t), s.nbytes())
                self.total += s.nbytes()
            elif ptr not in self._params and s.nbytes() > seen[1]:  # a larger view's storage
                self.total += s.nbytes() - seen[1]
                self._live[ptr] = (seen[0], s.nbytes())
        return t if self._keep else None

    def _unpack(self, t: Any) -> torch.Tensor:
        self._open = False
        if t is None:
            raise RuntimeError("SavedBytes(keep=False) measured this graph: no backward")
        return t

    def __enter__(self) -> SavedBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


class StepProbe:
    """Ends every training loop of a run after ``steps`` optimiser steps and records, per loop
    (a stage, then the model), the seconds of each step and the activation bytes of its
    first; ``keep``: write checkpoints as usual (otherwise none are written)."""

    def __init__(self, steps: int, keep: bool = False) -> None:
        self.steps, self.keep = steps, keep
        self.loops: list[dict[str, Any]] = []

    def start(self, desc: str, total: int, model: torch.nn.Module) -> int:
        """A loop of ``total`` steps begins; returns the step it ends at."""
        self.loops.append({"loop": desc, "total_steps": total, "seconds": [], "model": model})
        return min(total, self.steps)

    @contextmanager
    def step(self) -> Iterator[None]:
        loop = self.loops[-1]
        first = not loop["seconds"]
        synchronize = torch.cuda.synchronize if torch.cuda.is_available() else lambda: None
        with SavedBytes(loop["model"]) if first else nullcontext() as saved:
            synchronize()
            t = time.perf_counter()
            yield
            synchronize()
        loop["seconds"].append(time.perf_counter() - t)
        if first:
            loop["activation_bytes"] = saved.total


STEP_PROBE: ContextVar[StepProbe | None] = ContextVar("n2n_step_probe", default=None)


def _peak_memory() -> dict[str, float]:
    """The process's peak resident memory (GiB) and, on CUDA, the peak allocated by torch."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out = {"peak_rss_gib": rss / (2**30 if sys.platform == "darwin" else 2**20)}
    if torch.cuda.is_available():
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def dry_run(
    model_cfg: Any, train_cfg: TrainConfig, data: DataSpec, steps: int = 2,
    keep: Path | str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``steps`` optimiser steps of every training loop of this configuration (stages
    included), with its batch, precision and schedule, in a temporary run folder that is
    removed afterwards (``keep``: a folder to leave it in). Test-set checkpoint selection is
    skipped. Returns, per loop, the seconds of each step, the activation bytes of the first
    and the loop's full length in steps, with the peak memory."""
    from n2n_core.run_folder import RunFolder
    from n2n_core.train import train

    if steps < 1:
        raise ValueError(f"--dry-run takes a positive number of steps, got {steps}")
    tcfg = replace(train_cfg, select_on_test_every=None, log_every=1)
    folder = Path(keep) if keep is not None else Path(tempfile.mkdtemp(prefix="n2n-dry-run-"))
    probe = StepProbe(steps, keep=keep is not None)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    token = STEP_PROBE.set(probe)
    run_dir = folder / "run" if keep is None else folder
    try:
        train(run_dir, model_cfg, tcfg, data)
        precision = RunFolder(run_dir).configs[1].mixed_precision  # "auto" made concrete
    finally:
        STEP_PROBE.reset(token)
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    loops = [{k: v for k, v in loop.items() if k != "model"} for loop in probe.loops]
    return {"steps": steps, "loops": loops, "batch_size": tcfg.batch_size,
            "grad_accum": tcfg.grad_accum, "mixed_precision": precision,
            **_peak_memory()}  # fmt: skip


def format_dry_run(result: dict[str, Any]) -> str:
    """The lines ``train --dry-run`` prints."""
    lines = []
    for loop in result["loops"]:
        secs = loop["seconds"]
        steady = secs[1:] or secs  # the first step also warms up (allocations, kernels)
        per_step = sum(steady) / len(steady)
        total = loop["total_steps"] * per_step
        took = f"{total / 3600:.1f} h" if total >= 3600 else f"{total / 60:.1f} min"
        lines.append(
            f"{loop['loop']}: {len(secs)} steps, {per_step:.2f} s/step (first {secs[0]:.2f} s); "
            f"activations {loop['activation_bytes'] / 2**30:.2f} GiB per micro-batch; the "
            f"full loop: {loop['total_steps']:,} steps ≈ {took} at this rate"
        )
    mem = f"peak resident memory {result['peak_rss_gib']:.1f} GiB"
    if "peak_gpu_gib" in result:
        mem += f", peak GPU memory {result['peak_gpu_gib']:.1f} GiB"
    batch = f"batch {result['batch_size']} × {result['grad_accum']} accumulated"
    lines.append(f"{mem}; {batch}, mixed precision {result['mixed_precision']}")
    return "\n".join(lines)
