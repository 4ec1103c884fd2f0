"""Figures and widgets for the notebooks: the only module that imports matplotlib/ipywidgets."""

from __future__ import annotations

import csv
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from n2n_core.schedules import NoiseSchedule

__all__ = [
    "dataset_gallery",
    "image_strip",
    "overlay_mask",
    "plot_metric_curves",
    "plot_pro_exact_vs_grid",
    "plot_schedules",
    "prediction_grid",
    "report_bars",
    "show_image",
    "show_synthesis",
    "slider_or_grid",
    "to_display",
]


def to_display(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] → (H, W, C) in [0, 1] for imshow; 1-channel maps stay 2-D."""
    x = ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


Scale = tuple[float, float]


def show_image(ax: Axes, x: torch.Tensor, title: str = "", scale: Scale = (0.0, 1.0)) -> None:
    """An RGB image in [-1, 1], or a 1-channel map drawn on the fixed ``scale`` (vmin, vmax):
    never stretched to its own range, so a weak map looks weak next to a strong one."""
    if x.shape[0] == 1:
        ax.imshow(x[0].detach().float().cpu().numpy(), cmap="inferno", vmin=scale[0], vmax=scale[1])
    else:
        ax.imshow(to_display(x))
    ax.set_title(textwrap.fill(title, 22), fontsize=8)
    ax.axis("off")


def image_strip(
    images: Sequence[torch.Tensor],
    titles: Sequence[str],
    size: float = 1.8,
    scale: Scale | Sequence[Scale | None] = (0.0, 1.0),
) -> Figure:
    """One row of images with a title each. 1-channel maps are drawn on ``scale``: one
    (vmin, vmax) for all, or one per image (None for RGB images)."""
    scales = [scale] * len(images) if isinstance(scale[0], (int, float)) else list(scale)
    if len(scales) != len(images):
        raise ValueError(f"scale: one (vmin, vmax) per image expected, got {len(scales)}")
    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size * 1.3))
    for ax, img, title, sc in zip(np.atleast_1d(axes), images, titles, scales, strict=True):
        show_image(ax, img, title, sc or (0.0, 1.0))
    fig.tight_layout()
    return fig


def plot_schedules(schedules: Mapping[str, NoiseSchedule]) -> Figure:
    """ᾱ_t and log₁₀ SNR against the normalised time t/T, one curve per schedule."""
    fig, (ax_a, ax_s) = plt.subplots(1, 2, figsize=(10, 3.4))
    for label, s in schedules.items():
        tau = torch.arange(1, s.T + 1) / s.T
        marker = "o" if s.T <= 50 else None
        ax_a.plot(tau, s.alpha_bar[1:], marker=marker, ms=3, label=label)
        ax_s.plot(tau, s.snr()[1:].clamp_min(1e-12).log10(), marker=marker, ms=3, label=label)
    ax_a.set(xlabel="t / T", ylabel="ᾱ_t", title="signal kept: ᾱ_t")
    ax_s.set(xlabel="t / T", ylabel="log₁₀ SNR", title="SNR = ᾱ_t / (1 − ᾱ_t)")
    for ax in (ax_a, ax_s):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def slider_or_grid(
    draw: Callable[..., None],
    params: Mapping[str, Sequence[object]],
    interactive: bool,
    grid: Sequence[Mapping[str, object]] = (),
) -> Figure | None:
    """Sliders over ``params`` calling ``draw(ax, **values)``, or, headless
    (``interactive=False``: papermill, CI), a static row with one panel per entry of ``grid``."""
    if interactive:
        import ipywidgets

        def _one(**kw: object) -> None:
            _, ax = plt.subplots(figsize=(3.2, 3.4))
            draw(ax, **kw)
            plt.show()

        ipywidgets.interact(
            _one,
            **{
                k: ipywidgets.SelectionSlider(options=list(v), description=k)
                for k, v in params.items()
            },
        )
        return None
    shown = list(grid) or [{k: v[0] for k, v in params.items()}]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.2 * len(shown), 2.5))
    for ax, kw in zip(np.atleast_1d(axes), shown, strict=True):
        draw(ax, **kw)
    fig.tight_layout()
    return fig


def plot_metric_curves(
    curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], fpr_limit: float = 0.3
) -> Figure:
    """ROC, PR and PRO curves side by side; ``curves[name]`` holds ``roc=(fpr, tpr)``,
    ``pr=(recall, precision)`` and ``pro=(fpr, pro)``."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    titles = {
        "roc": ("ROC", "FPR", "TPR"),
        "pr": ("precision-recall", "recall", "precision"),
        "pro": ("PRO", "FPR", "per-region overlap"),
    }
    for ax, (key, (title, xl, yl)) in zip(axes, titles.items(), strict=True):
        for name, c in curves.items():
            ax.plot(*c[key], label=name, lw=1.5)
        ax.set(title=title, xlabel=xl, ylabel=yl, xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[2].axvspan(
        0, fpr_limit, color="grey", alpha=0.12, label=f"AUPRO range (FPR ≤ {fpr_limit})"
    )
    axes[2].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_pro_exact_vs_grid(
    exact: tuple[np.ndarray, np.ndarray],
    grid: tuple[np.ndarray, np.ndarray],
    fpr_limit: float = 0.3,
) -> Figure:
    """The exact PRO curve with its integration range, beside the grid version's rescaled one."""
    fig, (ax_e, ax_g) = plt.subplots(1, 2, figsize=(9, 3.4))
    fpr, pro = exact
    inside = fpr <= fpr_limit
    ax_e.plot(fpr, pro, lw=1.5)
    ax_e.fill_between(fpr[inside], pro[inside], alpha=0.2)
    ax_e.axvline(fpr_limit, color="grey", ls="--", lw=1)
    ax_e.set(title="exact: area up to FPR 0.3, ÷ 0.3", xlabel="FPR", ylabel="PRO", xlim=(0, 1))
    ax_g.plot(*grid, marker=".", ms=4, lw=1)
    ax_g.fill_between(*grid, alpha=0.2)
    ax_g.set(title="grid: FPR < 0.3 rescaled to [0, 1]", xlabel="rescaled FPR", ylabel="PRO")
    for ax in (ax_e, ax_g):
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def overlay_mask(
    image: np.ndarray, mask: np.ndarray | None, colour: tuple[int, int, int] = (255, 0, 255)
) -> np.ndarray:
    """(H, W, 3) uint8 image with the outline of a boolean mask drawn around it: just outside
    the mask, so a thin anomaly (a scratch, a sliver) stays visible under its outline."""
    from scipy import ndimage

    out = image.copy()
    if mask is not None and mask.any():
        mask = mask.astype(bool)
        ring = ndimage.binary_dilation(mask, iterations=max(1, mask.shape[0] // 128)) & ~mask
        out[ring] = colour
    return out


def dataset_gallery(
    source: str, root: object, categories: Sequence[str], n_normal: int = 2
) -> Figure:
    """Per category: ``n_normal`` normal test images, then the first image of every defect type
    with its ground-truth outline."""
    from n2n_core.data import load_image, load_mask, load_samples

    rows = []
    for cat in categories:
        test = load_samples(source, root, cat, "test")
        picks = [s for s in test if not s.label][:n_normal]
        seen: set[str] = set()
        for s in test:
            if s.label and s.defect not in seen:
                seen.add(s.defect)
                picks.append(s)
        rows.append((cat, picks))
    ncols = max(len(p) for _, p in rows)
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(1.6 * ncols, 1.75 * len(rows)), squeeze=False
    )
    for r, (cat, picks) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(picks):
                s = picks[c]
                mask = load_mask(s.mask) if s.mask else None
                ax.imshow(overlay_mask(load_image(s.image), mask))
                ax.set_title(f"{cat}: {s.defect}", fontsize=8)
    fig.tight_layout()
    return fig


def show_synthesis(steps: Mapping[str, torch.Tensor], title: str = "") -> Figure:
    """The panels of DiffusionAD Fig. 4: images (3, H, W) in [0, 1] or masks (H, W)."""
    fig, axes = plt.subplots(1, len(steps), figsize=(1.9 * len(steps), 2.2))
    for ax, (name, x) in zip(np.atleast_1d(axes), steps.items(), strict=True):
        x = x.detach().float().cpu()
        ax.imshow(
            x.numpy() if x.dim() == 2 else x.permute(1, 2, 0).clamp(0, 1).numpy(),
            cmap="gray" if x.dim() == 2 else None,
            vmin=0,
            vmax=1,
        )
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def prediction_grid(
    images: Sequence[torch.Tensor],
    x0_hats: Sequence[torch.Tensor] | None,
    maps: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    titles: Sequence[str],
    repair_label: str = "x̂0",
) -> Figure:
    """Columns of input, the repair (if any; DiffusionAD's x̂0, DeCo-Diff's x̃0: name it with
    ``repair_label``), anomaly map and ground truth (like DiffusionAD Fig. 5); images in
    [-1, 1], maps and masks (1, H, W) in [0, 1]."""
    rows = [("input", images)] + ([(repair_label, x0_hats)] if x0_hats is not None else [])
    rows += [("anomaly map", maps), ("ground truth", masks)]
    n = len(images)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.7 * n, 1.75 * len(rows)), squeeze=False)
    for r, (name, xs) in enumerate(rows):
        for c, x in enumerate(xs):
            ax = axes[r, c]
            if name in ("anomaly map", "ground truth"):
                ax.imshow(
                    x[0].float().cpu().numpy(),
                    cmap="inferno" if name == "anomaly map" else "gray",
                    vmin=0,
                    vmax=1,
                )
            else:
                show_image(ax, x)
                ax.axis("on")  # show_image hides the axis, and with it the row label
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
    fig.tight_layout()
    return fig


def report_bars(folder: str | Path) -> Figure | None:
    """Ours vs the paper, one pair of bars per category and metric, from a ``reproduce``
    report (``folder``/report.csv): the mean rows where the paper reports only means (as
    DeCo-Diff's tables); None when the paper reports nothing to compare with."""
    with (Path(folder) / "report.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["paper"]]
    rows = [r for r in rows if r["category"] != "mean"] or rows
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(5, len(rows) * 0.5), 3))
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [100 * float(r["ours"]) for r in rows], 0.4, label="ours")
    ax.bar(xs + 0.2, [100 * float(r["paper"]) for r in rows], 0.4, label="paper")
    ax.set_xticks(xs, [f"{r['category']}\n{r['metric']}" for r in rows], rotation=90, fontsize=7)
    ax.legend()
    fig.tight_layout()
    return fig
