from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Parameters of ``module``: the trainable ones, or all (a frozen VAE counts at test time)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
