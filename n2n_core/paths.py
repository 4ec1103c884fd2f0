"""Where datasets and runs live by default."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_root", "default_runs", "notebooks_dir"]


def _checkout() -> Path | None:
    repo = Path(__file__).resolve().parents[1]
    return repo if (repo / "pyproject.toml").is_file() and (repo / "n2n_core").is_dir() else None


def default_root() -> Path:
    """Datasets: ``$N2N_DATA``; else this checkout's ``data/``; else ``./data`` (an installed
    package, e.g. on Colab)."""
    if os.environ.get("N2N_DATA"):
        return Path(os.environ["N2N_DATA"])
    repo = _checkout()
    return repo / "data" if repo else Path.cwd() / "data"


def default_runs() -> Path:
    """Training runs: ``$N2N_RUNS``; else this checkout's ``runs/``; else ``./runs``."""
    if os.environ.get("N2N_RUNS"):
        return Path(os.environ["N2N_RUNS"])
    repo = _checkout()
    return repo / "runs" if repo else Path.cwd() / "runs"


def notebooks_dir() -> Path:
    """The course: this checkout's ``notebooks/``; else the copy an installed (not editable)
    n2n_core carries as package data, ``n2n_core/notebooks/``."""
    repo = _checkout()
    return repo / "notebooks" if repo else Path(__file__).resolve().parent / "notebooks"
