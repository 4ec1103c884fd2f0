"""What made a result: library versions, the device and the CPU kernel path, the git commit.

Training on the CPU is bit-reproducible only for the same CPU capability (ATen's SIMD path,
``ATEN_CPU_CAPABILITY``), the same number of threads and the same library versions: each of
these changes the losses from the first step (measured; benchmarks/RESULTS.md, "Smoke runs
on the embedded data"). Runs therefore record them beside their results.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["describe", "environment", "recorded"]

PACKAGES = ("torch", "diffusers", "numpy", "scikit-learn", "accelerate")


def _git() -> dict[str, object] | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode:
            return None
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def environment() -> dict[str, object]:
    """Versions (python and ``PACKAGES``), device, CPU capability, threads and git commit."""
    import torch

    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "tf32": torch.cuda.is_available() and torch.backends.cuda.matmul.allow_tf32,
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "platform": sys.platform,
        "git": _git(),
    }


def describe(env: dict) -> str:
    """One line for reports: versions, device and commit of an ``environment()`` record."""
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    git = env.get("git") or {}
    commit = git.get("commit")
    where = f"commit {commit[:12]}{' (dirty)' if git.get('dirty') else ''}" if commit else "no git"
    return f"{versions}; device {env.get('device', '?')}; {where}"


def recorded(folder: Path | str) -> list[str]:
    """The distinct environments the runs under ``folder`` were trained in (their
    train_info.json), each as ``describe`` writes it."""
    import json

    seen: dict[str, None] = {}
    for info in sorted(Path(folder).rglob("train_info.json")):
        try:
            env = json.loads(info.read_text(encoding="utf-8")).get("environment")
        except (OSError, ValueError):
            continue
        if env:
            seen[describe(env)] = None
    return list(seen)
