"""One device rule for training and evaluation, accelerate's, and the GPU settings chosen by
the card.

Training runs on ``Accelerator().device``; evaluation, reproduction and the notebooks ask
:func:`default_device`, which is the same choice (CUDA, else Apple's MPS, else the CPU;
``ACCELERATE_USE_CPU=1`` forces the CPU), so a Mac trains and evaluates on one device.
``train.mixed_precision="auto"`` (the paper and official profiles) becomes
:func:`precision_for` the device: bf16 autocast on cards that compute in bf16 (compute
capability 8.0 and later: A100, L4, H100, ...), fp16 with a gradient scaler before that (T4,
V100), full precision on the CPU and MPS. On CUDA, matrix products and convolutions in float32
use TF32 (:func:`configure_cuda`), as the official DeCo-Diff code sets.
"""

from __future__ import annotations

import torch

__all__ = ["configure_cuda", "default_device", "precision_for", "precision_for_capability"]


def default_device() -> torch.device:
    """The device accelerate puts this process on."""
    from accelerate import PartialState

    return PartialState().device


def precision_for_capability(capability: tuple[int, int]) -> str:
    """The mixed precision of a CUDA card of this compute capability: "bf16" from Ampere (8.0)
    on, where tensor cores compute in bf16; "fp16" (with loss scaling) before."""
    return "bf16" if tuple(capability) >= (8, 0) else "fp16"


def precision_for(device: torch.device | str) -> str:
    """The training precision ``"auto"`` stands for on ``device``: see the module's text."""
    device = torch.device(device)
    if device.type != "cuda":
        return "no"
    return precision_for_capability(torch.cuda.get_device_capability(device))


def configure_cuda() -> None:
    """TF32 for float32 matrix products and convolutions, on CUDA (run.json records it:
    ``environment.tf32``, provenance.py)."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
