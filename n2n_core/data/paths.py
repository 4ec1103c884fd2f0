"""Where datasets live by default."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_root"]


def default_root() -> Path:
    """``$N2N_DATA`` if set; else the ``data/`` folder of this checkout; else ``./data``
    (an installed package, e.g. on Colab)."""
    if os.environ.get("N2N_DATA"):
        return Path(os.environ["N2N_DATA"])
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "n2n_core").is_dir():
        return repo / "data"
    return Path.cwd() / "data"
