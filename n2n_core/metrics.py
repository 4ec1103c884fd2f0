"""Anomaly detection metrics: image and pixel AUROC, AP, F1-max, and AUPRO.

Definitions (MVTec AD's protocol; docs/metrics.md and notebook 04 explain them):

- AUROC: area under the exact ROC curve (trapezoids between distinct thresholds; ties form
  one diagonal step), as ``sklearn.metrics.roc_auc_score``.
- AP: step-wise average precision Σ_k (R_k − R_{k−1}) P_k over distinct thresholds, as
  ``sklearn.metrics.average_precision_score`` (not the trapezoidal AUPR of torchmetrics).
- F1-max: the best 2PR/(P+R) over all distinct thresholds of the exact PR curve.
- AUPRO (MVTec AD, Bergmann et al. IJCV 2021): ground-truth regions are the 8-connected
  components of each mask; walking down the sorted scores, each normal pixel moves the
  false-positive rate by 1/#normal and each pixel of region r adds 1/|r| to the summed
  per-region overlap (PRO = sum / #regions). The exact curve (one point per distinct score,
  starting at (0, 0)) is integrated with trapezoids up to ``fpr_limit`` (0.3), interpolating
  at the limit, and divided by the limit. No threshold grid: every metric here is invariant
  under strictly increasing transforms of the scores.

Pixel scores are compared at the maps' own precision: float32 (what the models make; half
precision is widened to it) or float64 (float64 maps and integer maps of 32 bits or more are
never rounded to float32, which would tie scores that differ). On the CPU the four pixel
metrics come from a sort of the normal pixels' scores and one of the defect pixels' (32- or
64-bit keys), visiting only the tie runs that hold a defect pixel (``_positive_run_metrics``):
counts are int64, PRO sums float64.
Maps that live on a GPU (torch tensors on CUDA) take one ``torch.sort`` on their device and the
full sweep over every tie run (``backend="torch"``, chosen automatically): only the masks'
region labelling and the curve points at tie-run ends come to the CPU. Values agree with the
NumPy path to float64 rounding (tested on CPU tensors). ``pro_curve`` (for plots) sweeps a
packed uint64 key (descending float32 score bits | region id). ``aupro_grid`` is the official
codes' threshold-grid approximation, opt-in and named so (``pixel_aupro_official_grid``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "GRIDS",
    "METRIC_KEYS",
    "OFFICIAL_GRID",
    "aupro_grid",
    "binary_metrics",
    "compute",
    "evaluate",
    "grid_pro_curve",
    "mean_or_none",
    "mean_table",
    "pixel_metrics",
    "pro_curve",
    "to_markdown",
]

METRIC_KEYS = (
    "image_auroc",
    "image_ap",
    "image_f1max",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1max",
    "pixel_aupro",
)
# the AUPRO as the official codes compute it (``aupro_grid``): its one name, beside the exact one
OFFICIAL_GRID = "pixel_aupro_official_grid"
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# ----------------------------------------------------------------------------- input checks
def _to_numpy(x: object, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; no copy when it already lives on the CPU
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:  # bfloat16 / float16: NumPy lacks
            x = x.float()  # bfloat16, and float16 scores tie too often to rank exactly
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got dtype object")
    return arr


def _as_maps(maps: object, name: str = "maps") -> np.ndarray:
    a = _to_numpy(maps, name)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W), got {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} are empty (shape {a.shape}): no pixel to score")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    wide = a.dtype == np.float64 or (np.issubdtype(a.dtype, np.integer) and a.dtype.itemsize >= 4)
    a = np.ascontiguousarray(a, dtype=np.float64 if wide else np.float32)
    bad = [i for i, img in enumerate(a) if not np.isfinite(img).all()]  # no full-size temporary
    if bad:
        raise ValueError(
            f"{name} contain NaN or inf (images {bad[:5]}{' ...' if len(bad) > 5 else ''})"
        )
    return a


def _as_binary(x: object, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = _to_numpy(x, name)
    if shape is not None and a.ndim == len(shape) + 1 and a.shape[1] == 1:
        a = a[:, 0]
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} shape {a.shape} does not match {shape}")
    if a.dtype == bool:
        return a
    if np.issubdtype(a.dtype, np.number) and not ((a != 0) & (a != 1)).any():
        return a.astype(bool)
    hint = " (masks stored as 0/255? pass mask > 0)" if a.size and a.max() == 255 else ""
    raise ValueError(f"{name} must be binary (bool or 0/1){hint}")


def _as_scores(x: object, name: str, n: int | None = None) -> np.ndarray:
    a = _to_numpy(x, name).astype(np.float64).ravel()
    if n is not None and a.size != n:
        raise ValueError(f"{name} has {a.size} entries, expected {n}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contain NaN or inf at {np.flatnonzero(~np.isfinite(a))[:5]}")
    return a


# ------------------------------------------------------------------- curves from tie runs
@dataclass
class _Sweep:
    """Running state of a descending sweep over scores, updated one batch of tie-run ends at
    a time (a run end is the last item of a group of equal scores: one curve point)."""

    P: int  # positives
    N: int  # negatives
    R: int = 0  # ground-truth regions (AUPRO)
    fpr_limit: float = 0.3
    tp: int = 0  # counts at the last curve point
    fp: int = 0
    pro: float = 0.0
    roc2: int = 0  # 2·P·N·AUROC, accumulated exactly in integers
    ap: float = 0.0  # Σ ΔTP · precision (divided by P at the end)
    f1: float = 0.0
    pro_area: float = 0.0  # ∫ PRO dFPR up to the limit
    pro_done: bool = False

    def update(self, tp: np.ndarray, fp: np.ndarray, pro: np.ndarray | None = None) -> None:
        if tp.size == 0:
            return
        tp_prev = np.concatenate(([self.tp], tp[:-1]))
        fp_prev = np.concatenate(([self.fp], fp[:-1]))
        self.roc2 += int(np.dot(fp - fp_prev, tp + tp_prev))  # trapezoids × 2PN, exact
        dtp = tp - tp_prev
        hit = dtp > 0  # precision is only needed where recall moves (and tp > 0 there)
        self.ap += float(np.dot(dtp[hit], tp[hit] / (tp[hit] + fp[hit])))
        self.f1 = max(self.f1, float((2 * tp / (tp + fp + self.P)).max()))
        if pro is not None and not self.pro_done:
            self._pro_update(fp, fp_prev, pro)
        self.tp, self.fp = int(tp[-1]), int(fp[-1])
        if pro is not None:
            self.pro = float(pro[-1])

    def _pro_update(self, fp: np.ndarray, fp_prev: np.ndarray, pro: np.ndarray) -> None:
        x, x_prev = fp / self.N, fp_prev / self.N
        y = pro / self.R
        y_prev = np.concatenate(([self.pro / self.R], y[:-1]))
        k = int(np.count_nonzero(x <= self.fpr_limit))  # x is non-decreasing: a prefix
        self.pro_area += float(np.dot(x[:k] - x_prev[:k], (y[:k] + y_prev[:k]) / 2))
        if k < x.size:  # the segment that crosses the limit: interpolate PRO at the limit
            x0, x1, y0, y1 = x_prev[k], x[k], y_prev[k], y[k]
            y_lim = y0 + (y1 - y0) * (self.fpr_limit - x0) / (x1 - x0)
            self.pro_area += (self.fpr_limit - x0) * (y0 + y_lim) / 2
            self.pro_done = True

    def results(self) -> dict[str, float]:
        out = {
            "auroc": self.roc2 / (2 * self.P * self.N),
            "ap": self.ap / self.P,
            "f1max": self.f1,
        }
        if self.R:
            out["aupro"] = self.pro_area / self.fpr_limit
        return out


def _check_two_classes(P: int, N: int, what: str) -> None:
    if P == 0:
        raise ValueError(f"{what}: no anomalous samples; AUROC, AP, F1-max and AUPRO are undefined")
    if N == 0:
        raise ValueError(f"{what}: no normal samples; AUROC and AUPRO are undefined")


def binary_metrics(scores: object, labels: object) -> dict[str, float]:
    """AUROC, AP and F1-max of scores against binary labels (1 = anomalous)."""
    y = _as_binary(labels, "labels").ravel()
    s = _as_scores(scores, "scores", y.size)
    P = int(y.sum())
    _check_two_classes(P, y.size - P, "labels")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last index of each tie run
    tp = np.cumsum(y, dtype=np.int64)[ends]
    sweep = _Sweep(P=P, N=y.size - P)
    sweep.update(tp, ends + 1 - tp)
    return sweep.results()


# --------------------------------------------------------------------------- pixel level
def _regions(masks: np.ndarray) -> tuple[list[np.ndarray | None], np.ndarray]:
    """Per image: region ids (8-connected, numbered globally from 1; None if no defect), and
    the weight 1/|r| of each id (index 0, normal pixels: weight 0)."""
    ids: list[np.ndarray | None] = []
    sizes = [np.zeros(1, dtype=np.int64)]
    offset = 0
    for m in masks:
        if not m.any():
            ids.append(None)
            continue
        lab, n = ndimage.label(m, structure=_EIGHT_CONNECTED)
        ids.append(np.where(lab > 0, lab.astype(np.uint32) + np.uint32(offset), np.uint32(0)))
        sizes.append(np.bincount(lab.ravel(), minlength=n + 1)[1:])
        offset += n
    size = np.concatenate(sizes).astype(np.float64)
    weights = np.divide(1.0, size, out=np.zeros_like(size), where=size > 0)
    return ids, weights


def _descending_keys(maps: np.ndarray, ids: list[np.ndarray | None]) -> np.ndarray:
    """uint64 keys whose ascending order is descending score: (``_descending_keys32``) << 32 |
    region id. Built image by image so no full-size temporaries are made."""
    keys = np.empty(maps.size, dtype=np.uint64)
    per = maps[0].size
    for i, (m, region) in enumerate(zip(maps, ids, strict=True)):
        bits = _descending_keys32(m)
        k = keys[i * per : (i + 1) * per]
        np.left_shift(bits.astype(np.uint64), np.uint64(32), out=k)
        if region is not None:
            k |= region.ravel()
    return keys


def _tie_runs(
    a: np.ndarray, m: np.ndarray, chunk_size: int
) -> tuple[np.ndarray, Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Sort once, then yield, chunk by chunk in descending score order, the cumulative
    (TP, FP, PRO-sum) at the end of every tie run (= every point of the exact curves).
    Chunks of ~1M keep each temporary small enough to be reused rather than re-mapped."""
    ids, weights = _regions(m)
    keys = _descending_keys(a, ids)
    del ids
    keys.sort()

    def runs() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        tp_run, pro_run = 0, 0.0
        low = np.uint64(0xFFFFFFFF)
        for start in range(0, keys.size, chunk_size):
            block = keys[start : start + chunk_size]
            score = block >> np.uint64(32)
            stop = start + block.size
            end = np.empty(block.size, dtype=bool)
            np.not_equal(score[1:], score[:-1], out=end[:-1])
            end[-1] = stop == keys.size or (keys[stop] >> np.uint64(32)) != score[-1]
            del score
            region = (block & low).astype(np.intp)
            tp = np.cumsum(region > 0, dtype=np.int64)
            tp += tp_run
            pro = np.cumsum(weights[region])
            pro += pro_run
            tp_run, pro_run = int(tp[-1]), float(pro[-1])
            idx = np.flatnonzero(end)
            tp_e = tp[idx]
            yield tp_e, idx + (start + 1) - tp_e, pro[idx]

    return weights, runs()


def _tie_runs_torch(
    a: object, m: np.ndarray, chunk_size: int
) -> tuple[np.ndarray, Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """``_tie_runs`` from one ``torch.sort`` of the (N, H, W) float32 tensor ``a`` on its
    device: the cumulative (TP, FP, PRO-sum) at every tie-run end, brought to the CPU in
    chunks. Within a run of equal scores the order differs from the key sort, which changes
    nothing at the run's end but the rounding of the PRO sum."""
    import torch

    ids, weights = _regions(m)
    per, dev = m[0].size, a.device
    rid = np.zeros(m.size, dtype=np.int64)
    for i, region in enumerate(ids):
        if region is not None:
            rid[i * per : (i + 1) * per] = region.ravel()
    del ids
    scores, order = torch.sort(a.reshape(-1), descending=True)
    region = torch.from_numpy(rid).to(dev)[order]
    del order, rid
    tp = torch.cumsum(region > 0, 0)
    pro = torch.cumsum(torch.from_numpy(weights).to(dev)[region], 0)
    del region
    end = torch.ones(scores.numel(), dtype=torch.bool, device=dev)
    end[:-1] = scores[1:] != scores[:-1]  # -0.0 == +0.0: one run, as in the key sort
    idx = torch.nonzero(end).squeeze(1)
    del end, scores

    def runs() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for start in range(0, idx.numel(), chunk_size):
            j = idx[start : start + chunk_size]
            tp_e = tp[j]
            yield tp_e.cpu().numpy(), (j + 1 - tp_e).cpu().numpy(), pro[j].cpu().numpy()

    return weights, runs()


def _backend(maps: object, backend: str) -> str:
    """ "numpy" or "torch": ``auto`` takes torch for tensors that are not on the CPU."""
    if backend not in ("auto", "numpy", "torch"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'torch', got {backend!r}")
    if backend != "auto":
        return backend
    device = getattr(maps, "device", None)
    return "torch" if device is not None and getattr(device, "type", "cpu") != "cpu" else "numpy"


def _as_maps_torch(maps: object, name: str = "maps") -> object:
    """``_as_maps`` for a torch tensor, kept on its device ((N, H, W); float64 stays float64,
    anything else becomes float32)."""
    import torch

    a = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))
    a = a.detach()
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W), got {tuple(a.shape)}")
    if a.numel() == 0:
        raise ValueError(f"{name} are empty (shape {tuple(a.shape)}): no pixel to score")
    if a.is_complex() or a.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = (a if a.dtype == torch.float64 else a.float()).contiguous()
    bad = torch.nonzero(~torch.isfinite(a).flatten(1).all(1)).flatten().tolist()
    if bad:
        raise ValueError(
            f"{name} contain NaN or inf (images {bad[:5]}{' ...' if len(bad) > 5 else ''})"
        )
    return a


def _maps_and_masks(maps: object, masks: object, backend: str) -> tuple[object, np.ndarray]:
    """The checked maps (a NumPy array, or a float32 tensor left on its device for the torch
    sweep) and the binary masks as NumPy."""
    if _backend(maps, backend) == "torch":
        a = _as_maps_torch(maps)
        return a, _as_binary(masks, "masks", tuple(a.shape))
    a = _as_maps(maps)
    return a, _as_binary(masks, "masks", a.shape)


def pixel_metrics(
    maps: object,
    masks: object,
    fpr_limit: float = 0.3,
    chunk_size: int = 1 << 20,
    backend: str = "auto",
) -> dict[str, float]:
    """Pixel AUROC, AP, F1-max and AUPRO (MVTec definition, exact) from sorted scores.

    ``maps``: (N, H, W) anomaly scores (higher = more anomalous); ``masks``: (N, H, W)
    binary ground truth. ``backend``: ``"numpy"`` (sorts of the normal and the defect
    pixels' scores on the CPU), ``"torch"`` (one ``torch.sort`` on the maps' device; its
    transfers to the CPU come in ``chunk_size`` pieces) or ``"auto"`` (torch for maps on a
    GPU).
    """
    a, m = _maps_and_masks(maps, masks, backend)
    return _pixel_metrics(a, m, fpr_limit, chunk_size)


def _pixel_metrics(a: object, m: np.ndarray, fpr_limit: float, chunk_size: int) -> dict:
    """A NumPy ``a``: sorts of the normal and the defect pixels' scores, then only the tie
    runs that hold a defect pixel (``_positive_run_metrics``); a torch tensor: one
    ``torch.sort`` on its device and the full sweep (``_tie_runs_torch``)."""
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must lie in (0, 1], got {fpr_limit}")
    P = int(np.count_nonzero(m))
    _check_two_classes(P, m.size - P, "masks (pixels)")
    if isinstance(a, np.ndarray):
        return _positive_run_metrics(a, m, P, fpr_limit)
    weights, runs = _tie_runs_torch(a, m, chunk_size)
    sweep = _Sweep(P=P, N=m.size - P, R=weights.size - 1, fpr_limit=fpr_limit)
    for tp, fp, pro in runs:
        sweep.update(tp, fp, pro)
    return {f"pixel_{k}": v for k, v in sweep.results().items()}


def _descending_keys32(m: np.ndarray) -> np.ndarray:
    """Unsigned keys of one float32 (uint32 keys) or float64 map (uint64 keys) whose ascending
    order is the descending score order (-0.0 counts as +0.0): x ≥ 0 → bits ^ 0x7FF…F,
    x < 0 → bits."""
    u, i = (np.uint64, np.int64) if m.dtype == np.float64 else (np.uint32, np.int32)
    bits = (m + m.dtype.type(0)).view(u).ravel()
    flip = bits.view(i) >> (8 * bits.itemsize - 1)  # 0 for x ≥ 0, -1 for x < 0
    np.invert(flip, out=flip)
    np.bitwise_and(flip, i(np.iinfo(i).max), out=flip)
    np.bitwise_xor(bits, flip.view(u), out=bits)
    return bits


def _positive_run_metrics(a: np.ndarray, m: np.ndarray, P: int, fpr_limit: float) -> dict:
    """The four pixel metrics from a sort of the normal pixels' scores (32-bit keys) and of
    the defect pixels', visiting only the tie runs (equal scores) that hold a defect pixel.

    Exact because between two such runs only false positives accrue: precision and F1 fall,
    so AP's terms and F1's maximum sit at positive runs; at a run of score s, FP = the normal
    pixels scoring ≥ s and dFP those scoring = s (two binary searches in the sorted normal
    keys); 2PN·AUROC = Σ dTP (2(N − FP) + dFP) counts, for each positive, the negatives below
    it and half of those tied with it; and PRO is constant between positive runs, so its
    curve is a rectangle there and, across a positive run, the same trapezoid as the full
    sweep draws."""
    ids, weights = _regions(m)
    n_img, per = len(a), a[0].size
    N, R = m.size - P, weights.size - 1
    key = np.uint64 if a.dtype == np.float64 else np.uint32
    neg = np.empty(N, dtype=key)
    pos_keys = np.empty(P, dtype=key)
    pos_region = np.empty(P, dtype=np.uint32)
    i_neg = i_pos = 0
    for i in range(n_img):
        k = _descending_keys32(a[i])
        if ids[i] is None:
            neg[i_neg : i_neg + per] = k
            i_neg += per
            continue
        defect = m[i].ravel()
        normal = k[~defect]
        neg[i_neg : i_neg + normal.size] = normal
        i_neg += normal.size
        d = k[defect]
        pos_keys[i_pos : i_pos + d.size] = d
        pos_region[i_pos : i_pos + d.size] = ids[i].ravel()[defect]
        i_pos += d.size
    del ids
    neg.sort()
    order = np.argsort(pos_keys, kind="stable")
    pos_keys, pos_region = pos_keys[order], pos_region[order]
    last = np.flatnonzero(np.r_[pos_keys[1:] != pos_keys[:-1], True])  # each run's last
    run_key = pos_keys[last]
    tp = last + 1  # TP, FP and the PRO sum at the end of each positive run
    above = np.searchsorted(neg, run_key, side="left")  # normal pixels scoring higher
    fp = above.copy()
    tied = above < N
    tied[tied] = neg[above[tied]] == run_key[tied]  # normal pixels with the same score: rare
    fp[tied] = np.searchsorted(neg, run_key[tied], side="right")
    dfp = fp - above
    dtp = np.diff(np.r_[0, tp])
    pro = np.cumsum(weights[pos_region])[last] / R
    out = {
        "pixel_auroc": int(np.dot(dtp, 2 * (N - fp) + dfp)) / (2 * P * N),
        "pixel_ap": float(np.dot(dtp, tp / (tp + fp))) / P,
        "pixel_f1max": float((2 * tp / (tp + fp + P)).max()),
    }
    out["pixel_aupro"] = _aupro_at_positive_runs(fp, dfp, pro, N, fpr_limit)
    return out


def _aupro_at_positive_runs(
    fp: np.ndarray, dfp: np.ndarray, pro: np.ndarray, N: int, fpr_limit: float
) -> float:
    """PRO against FPR: a rectangle up to each positive run, a trapezoid across it, a
    rectangle after the last one; the area up to the FPR limit, divided by the limit."""
    x_end = fp / N
    x_start = (fp - dfp) / N
    y_prev = np.r_[0.0, pro[:-1]]
    x0 = np.concatenate([np.r_[0.0, x_end], x_start])
    x1 = np.concatenate([np.r_[x_start, 1.0], x_end])
    y0 = np.concatenate([np.r_[y_prev, pro[-1]], y_prev])
    y1 = np.concatenate([np.r_[y_prev, pro[-1]], pro])
    keep = x0 < fpr_limit
    x0, x1, y0, y1 = x0[keep], x1[keep], y0[keep], y1[keep]
    xc = np.minimum(x1, fpr_limit)
    width = x1 - x0
    yc = np.where(width > 0, y0 + (y1 - y0) * (xc - x0) / np.where(width > 0, width, 1), y1)
    return float(np.dot(xc - x0, (y0 + yc) / 2)) / fpr_limit


def pro_curve(maps: object, masks: object) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO curve (FPR, PRO), one point per distinct score, starting at (0, 0).
    Its area up to the FPR limit, divided by the limit, is ``pixel_aupro`` (for float32 maps;
    the curve is drawn at float32 precision). Holds one point per distinct score: meant for
    plotting, not for VisA-sized sets."""
    a = _as_maps(maps).astype(np.float32, copy=False)
    m = _as_binary(masks, "masks", a.shape)
    N = int(np.count_nonzero(~m))
    _check_two_classes(m.size - N, N, "masks (pixels)")
    weights, runs = _tie_runs(a, m, 1 << 20)
    fp, pro = zip(*((f, p) for _, f, p in runs), strict=True)
    return np.r_[0.0, np.concatenate(fp) / N], np.r_[0.0, np.concatenate(pro) / (weights.size - 1)]


@dataclass(frozen=True)
class GridCode:
    """How an official code computes its grid AUPRO (each as its code reads under the NumPy 1.x
    it pinned, whose scalar rules make the thresholds float64 and compare them at the maps'
    precision). A pixel is positive when its score is > the threshold; PRO is the mean
    per-region overlap (regions: 8-connected); the kept FPRs are rescaled and the curve
    integrated with trapezoids in the code's threshold order (``sklearn.metrics.auc``)."""

    thresholds: int  # the code's grid size
    descending: bool  # max − s·δ for s = 0..n−1 | np.arange(min, max, δ); δ = (max − min)/n
    keep_equal: bool  # keep FPR ≤ limit | FPR < limit
    rescale: str  # "minmax": (FPR − min)/(max − min) | "max": FPR / max
    fill_holes: bool  # a region's overlap counts its filled image (holes too), over its area


GRIDS = {
    # github.com/HuiZhang0812/DiffusionAD eval.py pixel_pro (NumPy 1.23.1, scikit-image 0.20)
    "diffusionad": GridCode(1000, descending=True, keep_equal=True, rescale="minmax",
                            fill_holes=True),
    # github.com/farzad-bz/DeCo-Diff evaluation_DeCo_Diff.py compute_pro (NumPy 1.26.4)
    "decodiff": GridCode(200, descending=False, keep_equal=False, rescale="max",
                         fill_holes=False),
}  # fmt: skip


def _grid_thresholds(a: np.ndarray, code: GridCode, n: int) -> np.ndarray:
    """The code's thresholds, in its order, at the maps' precision (the comparison's)."""
    lo, hi = a.min(), a.max()
    delta = np.float64(hi - lo) / n  # the difference at the maps' precision, then float64
    if code.descending:
        th = np.float64(hi) - np.arange(n) * delta
    else:
        th = np.arange(np.float64(lo), np.float64(hi), delta)  # n or n + 1 points
    return th.astype(a.dtype)


def _grid_regions(m: np.ndarray, fill_holes: bool) -> list[tuple[int, np.ndarray, int]]:
    """(image, flat pixel indices counted, area) per 8-connected region, image by image in
    label order; with ``fill_holes`` the pixels are the region's filled image."""
    out = []
    for i, mask in enumerate(m):
        lab, _ = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        for r, box in enumerate(ndimage.find_objects(lab), start=1):
            own = lab[box] == r
            counted = ndimage.binary_fill_holes(own, _EIGHT_CONNECTED) if fill_holes else own
            rows, cols = np.nonzero(counted)
            flat = (rows + box[0].start) * mask.shape[1] + cols + box[1].start
            out.append((i, flat, int(own.sum())))
    return out


def _above(scores: np.ndarray, th: np.ndarray) -> np.ndarray:
    """For each threshold, how many of ``scores`` are > it."""
    s = np.sort(scores, kind="stable")
    return s.size - np.searchsorted(s, th, side="right")


def grid_pro_curve(
    maps: object, masks: object, code: str = "diffusionad", num_thresholds: int | None = None,
    fpr_limit: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The curve behind ``aupro_grid``: (rescaled FPR, PRO) at the kept grid thresholds of the
    official ``code`` (a key of ``GRIDS``), in that code's threshold order."""
    if code not in GRIDS:
        raise ValueError(f"code must be one of {sorted(GRIDS)}, got {code!r}")
    g = GRIDS[code]
    n = g.thresholds if num_thresholds is None else num_thresholds
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"num_thresholds must be an integer ≥ 2, got {n!r}")
    a = _as_maps(maps)
    m = _as_binary(masks, "masks", a.shape)
    if not m.any():
        raise ValueError("masks (pixels): no anomalous pixels; AUPRO is undefined")
    th = _grid_thresholds(a, g, n)
    fpr = _above(a[~m], th) / np.count_nonzero(~m)
    flat = a.reshape(len(a), -1)
    regions = _grid_regions(m, g.fill_holes)
    overlap = np.stack([_above(flat[i, px], th) / area for i, px, area in regions], axis=1)
    pro = np.array([row.mean() for row in overlap])  # np.mean per threshold, region order
    keep = fpr <= fpr_limit if g.keep_equal else fpr < fpr_limit
    fpr, pro = fpr[keep], pro[keep]
    if fpr.size < 2:
        return np.full(fpr.size, np.nan), pro
    with np.errstate(invalid="ignore", divide="ignore"):  # one distinct FPR: NaN, as the code
        low = fpr.min() if g.rescale == "minmax" else 0.0
        return (fpr - low) / (fpr.max() - low), pro


def aupro_grid(
    maps: object,
    masks: object,
    code: str = "diffusionad",
    num_thresholds: int | None = None,
    fpr_limit: float = 0.3,
) -> float:
    """**Paper-compatible approximation**, opt-in: the AUPRO as the official ``code``
    computes it (``GRIDS``: "diffusionad", 1000 thresholds from the max down, FPR ≤ 0.3
    min-max rescaled; "decodiff", 200 thresholds from the min up, FPR < 0.3 divided by its
    max), equal to that code's own result on the same maps.

    The rescaling makes the value depend on how the thresholds happen to fall (not invariant
    under monotone transforms), and it is NaN when fewer than two distinct FPRs survive.
    Prefer ``pixel_metrics`` (exact).
    """
    x, pro = grid_pro_curve(maps, masks, code, num_thresholds, fpr_limit)
    if x.size < 2 or np.isnan(x).any():
        warnings.warn("aupro_grid: fewer than two distinct FPRs below the limit: NaN", stacklevel=2)
        return float("nan")
    area = np.trapezoid(pro, x)
    return float(area if x[-1] >= x[0] else -area)  # sklearn.metrics.auc, either direction


# ----------------------------------------------------------------------------- one entry
def compute(
    maps: object,
    masks: object,
    image_scores: object | None = None,
    labels: object | None = None,
    fpr_limit: float = 0.3,
    official_grid: str | None = None,
    backend: str = "auto",
) -> dict[str, float]:
    """All seven metrics (``METRIC_KEYS``) for one set of anomaly maps.

    ``image_scores`` default to each map's maximum (MVTec convention; DiffusionAD uses the
    top-50 mean, which the method computes and passes here). ``labels`` default to "mask is
    not empty"; when given, no normal image may have defect pixels (an anomalous one without
    any, e.g. a tiny defect lost to resizing, counts at image level only).
    ``official_grid="diffusionad"`` (or "decodiff") adds ``pixel_aupro_official_grid``, the
    AUPRO as that official code computes it (``aupro_grid``), beside the exact value.
    ``backend``: as in ``pixel_metrics`` (maps on a GPU are swept there).
    """
    a, m = _maps_and_masks(maps, masks, backend)
    has_defect = m.any(axis=(1, 2))
    if labels is None:
        y = has_defect
    else:
        y = _as_binary(labels, "labels").ravel()
        if y.size != a.shape[0]:
            raise ValueError(f"labels has {y.size} entries, expected {a.shape[0]} (one per map)")
        bad = np.flatnonzero(~y & has_defect)
        if bad.size:
            raise ValueError(
                f"labels disagree with masks at images {bad[:10].tolist()}: a normal image "
                "(label 0) has defect pixels"
            )  # an anomalous image without defect pixels is allowed (a defect lost to resizing)
    if image_scores is not None:
        s = _as_scores(image_scores, "image_scores")
    elif isinstance(a, np.ndarray):
        s = a.max(axis=(1, 2))
    else:  # the maxima where the maps are
        s = _to_numpy(a.amax(dim=(1, 2)), "maps")
    out = {f"image_{k}": v for k, v in binary_metrics(s, y).items()}
    out.update(_pixel_metrics(a, m, fpr_limit, chunk_size=1 << 20))
    if official_grid:
        grid_maps = a if isinstance(a, np.ndarray) else _to_numpy(a, "maps")
        out[OFFICIAL_GRID] = aupro_grid(grid_maps, m, official_grid, fpr_limit=fpr_limit)
    return out


def evaluate(*args: object, **kwargs: object) -> dict[str, float]:
    """The former name of ``compute`` (it read like ``n2n_core.evaluate``, which evaluates a
    run folder); kept for scripts written against it, with a DeprecationWarning."""
    warnings.warn(
        "n2n_core.metrics.evaluate is now metrics.compute (same arguments)",
        DeprecationWarning,
        stacklevel=2,
    )
    return compute(*args, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- tables
def mean_table(
    per_category: Mapping[str, Mapping[str, float]], keys: Sequence[str] = METRIC_KEYS
) -> dict[str, dict[str, float]]:
    """Per-category results plus a ``mean`` row (unweighted mean over categories, as the
    papers report)."""
    missing = [(c, k) for c, r in per_category.items() for k in keys if k not in r]
    if missing:
        c, k = missing[0]
        raise ValueError(f"mean_table: category {c!r} has no {k!r} (every row needs {list(keys)})")
    rows = {c: {k: float(r[k]) for k in keys} for c, r in per_category.items()}
    if rows:
        rows["mean"] = {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}
    return rows


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """The mean of per-category values, None if any is unknown (a grid AUPRO with too few
    grid points below the FPR limit) or there are none: a partial mean is not the mean."""
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def to_markdown(
    table: Mapping[str, Mapping[str, float]],
    keys: Sequence[str] = METRIC_KEYS,
    percent: bool = True,
    digits: int = 1,
) -> str:
    """A markdown table, categories as rows, values in percent by default."""
    scale = 100.0 if percent else 1.0
    lines = ["| category | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for cat, row in table.items():
        vals = " | ".join(f"{row[k] * scale:.{digits}f}" for k in keys)
        lines.append(f"| {cat} | {vals} |")
    return "\n".join(lines)
