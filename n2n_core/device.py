"""One device rule for training and evaluation: accelerate's.

Training runs on ``Accelerator().device``; evaluation, reproduction and the notebooks ask
:func:`default_device`, which is the same choice (CUDA, else Apple's MPS, else the CPU;
``ACCELERATE_USE_CPU=1`` forces the CPU), so a Mac trains and evaluates on one device.
"""

from __future__ import annotations

import torch

__all__ = ["default_device"]


def default_device() -> torch.device:
    """The device accelerate puts this process on."""
    from accelerate import PartialState

    return PartialState().device
