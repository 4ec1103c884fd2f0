"""Progress bars that honour ``TQDM_DISABLE`` everywhere.

``tqdm.auto`` picks the notebook bar inside Jupyter, and that bar ignores tqdm's
``TQDM_DISABLE`` environment variable (only the console bar reads it). An enabled notebook
bar streams widget updates to the kernel's IOPub channel; under nbval, which reads that
channel only after a cell finishes, minutes of updates overflow its queue and the cell's
final "idle" message is lost. So the variable is read here, for both kinds of bar.
"""

from __future__ import annotations

import os

__all__ = ["progress"]


def progress(*args: object, disable: bool = False, **kwargs: object) -> object:
    """``tqdm.auto.tqdm(*args, **kwargs)``, disabled by ``disable`` or ``TQDM_DISABLE``."""
    from tqdm.auto import tqdm

    off = os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")
    return tqdm(*args, disable=disable or off, **kwargs)
