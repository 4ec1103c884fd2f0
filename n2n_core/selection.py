"""Checkpoint selection on the test set, as the official DiffusionAD code does it: every N
epochs the model is scored on the test split (image + pixel AUROC) and kept when both do not
fall. Opt-in (``train.select_on_test_every``) and labelled in train_info.json and the reports:
the test set then picks the model it scores, so the numbers are optimistic."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from n2n_core.config import DataSpec, categories_of
from n2n_core.run_folder import write_weights

__all__ = ["SelectionOnTest", "scorer_on_test"]


def scorer_on_test(
    method: Any, cfg: Any, data: DataSpec, device: Any
) -> Callable[[nn.Module], tuple[float, float]]:
    """model → (image AUROC, pixel AUROC) on the run's test split, averaged over categories."""
    from n2n_core.data import load_samples
    from n2n_core.evaluate import predict_dataset
    from n2n_core.metrics import binary_metrics

    tests = [  # built once: every selection scores the same test split
        (method.dataset(cfg, load_samples(data.source, data.root, cat, "test")),
         method.class_index(cfg, cat))
        for cat in categories_of(data)
    ]  # fmt: skip

    def score(model: nn.Module) -> tuple[float, float]:
        image, pixel = [], []
        for ds, index in tests:
            pred, masks, labels = predict_dataset(method, model, ds, index, 0, device)
            image.append(binary_metrics(pred.scores.numpy(), labels.numpy() > 0)["auroc"])
            pixel.append(
                binary_metrics(pred.maps.flatten().numpy(), masks.flatten().numpy() > 0.5)["auroc"]
            )
        return sum(image) / len(image), sum(pixel) / len(pixel)

    return score


class SelectionOnTest:
    """After every ``every`` optimiser steps: score the model and keep its weights in ``path``
    when image + pixel AUROC is at least the best so far and image AUROC too (the official
    rule); the best so far lives in the training state (``state["best"]``), so a resumed run
    selects as an uninterrupted one."""

    def __init__(
        self, score: Callable[[nn.Module], tuple[float, float]], every: int, path: Path
    ) -> None:
        self.score, self.every, self.path = score, every, path

    def after(self, step: int, model: nn.Module, state: dict, accelerator: Any) -> None:
        if step % self.every:
            return
        if accelerator.is_main_process:
            was_training = model.training
            model.eval()
            with torch.no_grad():
                image, pixel = self.score(model)
            model.train(was_training)
            best = state.get("best", {"image_auroc": 0.0, "pixel_auroc": 0.0})
            if (
                image + pixel >= best["image_auroc"] + best["pixel_auroc"]
                and image >= best["image_auroc"]
            ):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_weights(model, self.path)
                state["best"] = {"step": step, "image_auroc": image, "pixel_auroc": pixel}
        accelerator.wait_for_everyone()
