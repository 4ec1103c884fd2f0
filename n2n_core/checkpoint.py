"""Training checkpoints that load without running code: tensors in safetensors, the rest JSON.

    model.safetensors        the model's weights (unwrapped)
    optimizer.pt             its state (tensors and numbers only: loaded with weights_only=True)
    scheduler.json, scaler.json (fp16 only), state.json (step, seconds)
    rng_<process>.json       every random state of each process: Python, NumPy, torch (CPU and
                             accelerators) and the generator that draws batches and noise

Loading one restores everything a resumed run needs to repeat an uninterrupted one exactly.
A checkpoint is written into ``<name>.tmp`` and swapped in (``save``); ``recover`` completes a
swap cut off by a crash. accelerate's own ``save_state`` is not used: it pickles the random
states and custom objects, and unpickling runs whatever a shared run folder holds.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from n2n_core.io import atomic_write_text
from n2n_core.run_folder import write_weights

__all__ = ["load", "recover", "save"]

FORMAT = 2  # 1: accelerate's save_state (pickles), refused


def _hex(t: torch.Tensor) -> str:
    return t.cpu().numpy().tobytes().hex()


def _tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray.fromhex(text), dtype=torch.uint8)


def _rng_states(gen: torch.Generator) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 (global state)
    version, internal, gauss_next = random.getstate()
    states = {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": _hex(torch.get_rng_state()),
        "generator": _hex(gen.get_state()),
    }
    if torch.cuda.is_available():
        states["cuda"] = [_hex(s) for s in torch.cuda.get_rng_state_all()]
    if torch.backends.mps.is_available():
        states["mps"] = _hex(torch.mps.get_rng_state())
    return states


def _set_rng_states(states: dict[str, Any], gen: torch.Generator) -> None:
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    torch.set_rng_state(_tensor(states["torch"]))
    gen.set_state(_tensor(states["generator"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_tensor(s) for s in states["cuda"]])
    if "mps" in states and torch.backends.mps.is_available():
        torch.mps.set_rng_state(_tensor(states["mps"]))


def _write(folder: Path, accelerator: Any, model, optimizer, scheduler, gen, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rank = accelerator.process_index
    atomic_write_text(folder / f"rng_{rank}.json", json.dumps(_rng_states(gen)))
    if not accelerator.is_main_process:
        return
    write_weights(accelerator.unwrap_model(model), folder / "model.safetensors")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    atomic_write_text(folder / "scheduler.json", json.dumps(scheduler.state_dict()))
    if accelerator.scaler is not None:
        atomic_write_text(folder / "scaler.json", json.dumps(accelerator.scaler.state_dict()))
    atomic_write_text(folder / "state.json", json.dumps({**state, "format": FORMAT}))


def save(ckpt: Path, accelerator: Any, model, optimizer, scheduler, gen, state: dict) -> None:
    """Every process's state into ``<ckpt>.tmp``, then swapped in for ``ckpt``: a crash never
    leaves a half-written checkpoint in place of the last good one."""
    tmp, old = ckpt.with_name(ckpt.name + ".tmp"), ckpt.with_name(ckpt.name + ".old")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        _write(tmp, accelerator, model, optimizer, scheduler, gen, state)
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
            shutil.rmtree(old, ignore_errors=True)  # a crash's leftover never blocks the swap
            ckpt.rename(old)
        tmp.rename(ckpt)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def recover(ckpt: Path) -> None:
    """After a crash between the two renames of ``save`` (``last → last.old``,
    ``last.tmp → last``) there is no ``last``: the ``.tmp`` one is then complete (it was
    written before the first rename) and newest; without it, ``.old`` is the last good one."""
    tmp, old = ckpt.with_name(ckpt.name + ".tmp"), ckpt.with_name(ckpt.name + ".old")
    if ckpt.exists():
        shutil.rmtree(old, ignore_errors=True)  # the swap finished: .old is a leftover
        return
    if not old.exists():
        return
    (tmp if tmp.is_dir() else old).rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def load(ckpt: Path, accelerator: Any, model, optimizer, scheduler, gen) -> dict:
    """Restore a checkpoint written by ``save``; returns its state (step, seconds). Nothing in
    it can run code: a checkpoint in another format is refused, not unpickled."""
    from safetensors.torch import load_file

    state_file = ckpt / "state.json"
    if not state_file.is_file():
        raise ValueError(
            f"{ckpt} is not a checkpoint of this n2n version (no state.json; older versions "
            "wrote pickles, which n2n does not load): train again into a new --out"
        )
    try:
        state = json.loads(state_file.read_text())
        accelerator.unwrap_model(model).load_state_dict(load_file(ckpt / "model.safetensors"))
        opt = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(opt)
        scheduler.load_state_dict(json.loads((ckpt / "scheduler.json").read_text()))
        if accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(json.loads((ckpt / "scaler.json").read_text()))
        rng = ckpt / f"rng_{accelerator.process_index}.json"
        _set_rng_states(json.loads(rng.read_text()), gen)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, pickle.UnpicklingError) as exc:
        raise ValueError(
            f"cannot load the checkpoint {ckpt} ({type(exc).__name__}: {str(exc)[:200]}): it "
            f"is damaged or not n2n's; delete {ckpt} to train that stage from its start, or "
            "train again into a new --out"
        ) from None
    return {"step": int(state["step"]), "seconds": float(state.get("seconds", 0.0))}
