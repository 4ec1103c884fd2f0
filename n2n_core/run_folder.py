"""A training run on disk, owned by one type: ``RunFolder``.

    RUN/run.json              method, data and configs (``record``) and who ran it
    RUN/train_log.jsonl       the logged losses
    RUN/checkpoints/<name>/   the running stage's or the model's last checkpoint
                              (``n2n_core.checkpoint``; ``last`` for the model)
    RUN/<stage>/              a finished stage (e.g. DeCo-Diff's ``vae``), with its train_info.json
    RUN/model.safetensors     the trained model; RUN/train_info.json what training cost

``train``, ``evaluate``, ``reproduce`` and the CLI ask it whether a run is empty, resumable or
finished, and read or write these files through it; while one of them writes, ``RUN/.lock``
(``RunFolder.lock``) keeps every other writer out. ``run_files`` reads the outputs for notebooks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from n2n_core.config import DataSpec, TrainConfig, from_dict, to_dict
from n2n_core.io import atomic_write_text

__all__ = ["RunFolder", "RunFolderLocked", "record", "write_weights"]

HEARTBEAT_S = 30.0  # the lock's holder touches it this often
STALE_S = 300.0  # a lock untouched this long belongs to a process that is gone (any host)
UNREADABLE_S = 10.0  # an empty or garbled lock older than this: its writer died creating it


class RunFolderLocked(FileExistsError):
    """Another process is writing the run folder (``RUN/.lock`` says which)."""


def record(model_cfg: Any, train_cfg: TrainConfig, data: DataSpec) -> dict:
    """What run.json holds, normalised through JSON (tuples → lists) for comparisons."""
    from n2n_core import methods

    rec = {
        "method": methods.method_of(model_cfg).name,
        "model": to_dict(model_cfg),
        "train": to_dict(train_cfg),
        "data": to_dict(data),
    }
    return json.loads(json.dumps(rec))


def write_weights(model: torch.nn.Module, path: Path) -> None:
    """A module's state dict as safetensors, written atomically (CPU copies of its tensors)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, tmp)
    tmp.replace(path)


def _moved_to_model(config: type, model: dict, train: dict) -> tuple[dict, dict]:
    """An older run.json's training settings that now belong to the method's config (e.g.
    DiffusionAD's texture folder), moved to its model entry."""
    if not (isinstance(model, dict) and isinstance(train, dict)):
        return model, train
    ours = {f.name for f in dataclasses.fields(TrainConfig)}
    theirs = {f.name for f in dataclasses.fields(config)}
    moved = {k: v for k, v in train.items() if k not in ours and k in theirs and k not in model}
    if not moved:
        return model, train
    return {**model, **moved}, {k: v for k, v in train.items() if k not in moved}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


class RunFolder:
    """The files of one training run (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def record_path(self) -> Path:
        return self.path / "run.json"

    @property
    def weights_path(self) -> Path:
        return self.path / "model.safetensors"

    def checkpoint(self, name: str = "last") -> Path:
        """Where the stage ``name`` (``last``: the model) keeps its checkpoint."""
        return self.path / "checkpoints" / name

    def stage(self, name: str) -> Path:
        """The folder of the finished stage ``name``."""
        return self.path / name

    # ------------------------------------------------------------------ state
    @property
    def started(self) -> bool:
        return self.record_path.is_file()

    @property
    def finished(self) -> bool:
        return self.weights_path.is_file()

    @property
    def resumable(self) -> bool:
        """Whether an unfinished run kept any work: a checkpoint of a stage or of the model
        (``.old`` counts: ``recover``), or a finished stage."""
        ckpts = self.path / "checkpoints"
        if ckpts.is_dir() and any(p.is_dir() and p.suffix != ".tmp" for p in ckpts.iterdir()):
            return True
        return self.path.is_dir() and any(
            (p / "train_info.json").is_file() for p in self.path.iterdir()
        )

    @property
    def evaluated(self) -> bool:
        """Whether ``metrics.json`` was written after the model (it evaluates these weights)."""
        metrics = self.path / "metrics.json"
        return (
            self.finished
            and metrics.is_file()
            and metrics.stat().st_mtime >= self.weights_path.stat().st_mtime
        )

    @property
    def status(self) -> str:
        """``empty`` (no run.json), ``started`` (run.json, nothing worth keeping: starts over),
        ``resumable`` or ``finished``."""
        if not self.started:
            return "empty"
        if self.finished:
            return "finished"
        return "resumable" if self.resumable else "started"

    # ------------------------------------------------------------------ run.json
    @cached_property
    def stored(self) -> dict:
        """run.json as written (read once)."""
        if not self.record_path.is_file():
            raise FileNotFoundError(
                f"{self.record_path} not found: {self.path} is not a training run folder"
            )
        try:
            d = json.loads(self.record_path.read_text())
            if not isinstance(d, dict):
                raise ValueError(f"expected a JSON object, got {type(d).__name__}")
            return d
        except ValueError as e:  # JSONDecodeError too
            raise ValueError(f"{self.record_path} is not a valid run record: {e}") from None

    @cached_property
    def configs(self) -> tuple[Any, TrainConfig, DataSpec]:
        """The model config, training config and data. Fields added to the configs after the
        run was made take their defaults."""
        from n2n_core import methods

        d = self.stored
        try:
            method = methods.get(str(d.get("method")))
            model, train = _moved_to_model(method.config, d["model"], d["train"])
            return (
                from_dict(method.config, model),
                from_dict(TrainConfig, train),
                from_dict(DataSpec, d["data"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{self.record_path} is not a valid run record: {type(e).__name__}: {e}"
            ) from None

    @property
    def method(self) -> Any:
        from n2n_core import methods

        return methods.method_of(self.configs[0])

    def differs(self, rec: dict) -> list[str]:
        """The settings (dotted keys) in which run.json differs from ``rec``. Fields that a
        run.json lacks (added to n2n later) count with their default values, so older run
        folders stay valid when the default reproduces their behaviour."""
        try:
            stored = record(*self.configs)
        except (ValueError, TypeError, KeyError) as e:
            return [f"run.json: {e}"]
        a, b = _flat(stored), _flat(rec)
        return sorted(
            k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>")
        )

    def write_record(self, rec: dict) -> None:
        """run.json: the settings and the environment that wrote them (not a setting)."""
        from n2n_core.provenance import environment

        self.path.mkdir(parents=True, exist_ok=True)
        stamped = {**rec, "environment": environment()}
        atomic_write_text(self.record_path, json.dumps(stamped, indent=2) + "\n")
        self.__dict__.pop("stored", None)
        self.__dict__.pop("configs", None)

    # ------------------------------------------------------------------ weights and info
    def save_weights(self, model: torch.nn.Module, folder: Path | None = None) -> None:
        """model.safetensors, written atomically."""
        write_weights(model, (folder or self.path) / "model.safetensors")

    def weights(self) -> dict[str, torch.Tensor]:
        """The trained model's tensors; an unfinished or damaged run is an error saying what to
        do."""
        from safetensors.torch import load_file

        if not self.finished:
            hint = (
                "resume it: train with the same options and --resume"
                if self.resumable
                else "it has no checkpoint either: train it again with the same --out"
            )
            raise FileNotFoundError(
                f"{self.weights_path} not found: the run has not finished ({hint})"
            )
        try:
            return load_file(self.weights_path)
        except Exception as exc:  # truncated or not a safetensors file
            raise ValueError(
                f"cannot read {self.weights_path} ({exc}): the file is damaged; train again, or "
                "resume if checkpoints/last exists"
            ) from None

    def write_info(self, summary: dict, seconds: float, steps: int, folder: Path | None = None):
        """train_info.json: what the run (or a stage, in ``folder``) cost over resumed
        segments."""
        from n2n_core.provenance import environment

        info = {**summary, "seconds": seconds, "steps_per_second": steps / seconds}
        info["environment"] = environment()
        atomic_write_text(
            (folder or self.path) / "train_info.json", json.dumps(info, indent=2) + "\n"
        )

    def finish_stage(self, name: str, partial: Path) -> None:
        """A stage's folder, written whole as ``partial``, takes its place; its checkpoint goes."""
        partial.rename(self.stage(name))
        shutil.rmtree(self.checkpoint(name), ignore_errors=True)

    # ------------------------------------------------------------------ one writer
    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    @contextmanager
    def lock(self, purpose: str) -> Iterator[None]:
        """Hold ``RUN/.lock`` (pid, host, purpose) while writing; another writer is refused
        with one line naming the holder. A lock whose process is gone is taken over: on this
        host, a dead pid; on any host, no heartbeat for ``STALE_S`` seconds (a Colab VM that
        disconnected from a run folder on Drive)."""
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"{self.path} is a file, not a run folder")
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        stop = threading.Event()
        try:
            self._acquire(purpose)
            beat = threading.Thread(target=self._heartbeat, args=(stop,), daemon=True)
            beat.start()
            try:
                yield
            finally:
                stop.set()
                beat.join()
                self.lock_path.unlink(missing_ok=True)
        finally:
            if created and not any(self.path.iterdir()):
                self.path.rmdir()  # refused, or nothing was written: leave nothing behind

    def _acquire(self, purpose: str) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose}
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None or not self._stale(holder):
                    raise RunFolderLocked(self._locked_message(holder)) from None
                self.lock_path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({**me, "since": time.time()}, f)
            return
        raise RunFolderLocked(self._locked_message(self._holder()))

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.lock_path.read_text())
            age = time.time() - self.lock_path.stat().st_mtime
            return {**holder, "age": age} if isinstance(holder, dict) else {"age": age}
        except FileNotFoundError:
            return {"age": STALE_S + 1}  # released meanwhile: try again
        except (OSError, ValueError):  # half-written by a writer that died at once
            return {"age": time.time() - self.lock_path.stat().st_mtime}

    @staticmethod
    def _stale(holder: dict) -> bool:
        if holder["age"] > STALE_S:
            return True
        if "pid" not in holder and holder["age"] > UNREADABLE_S:
            return True  # a live writer fills its lock at once: this one's writer died
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            try:
                os.kill(holder["pid"], 0)
            except ProcessLookupError:
                return True
            except PermissionError:  # alive, another user's
                return False
        return False

    def _locked_message(self, holder: dict | None) -> str:
        who = holder or {}
        return (
            f"{self.path} is being written by another process ({who.get('purpose', '?')}: pid "
            f"{who.get('pid', '?')} on {who.get('host', '?')}, last seen "
            f"{who.get('age', 0):.0f} s ago); wait for it to finish, or delete {self.lock_path} "
            "if that process is gone"
        )

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.lock_path)
            except OSError:
                pass
