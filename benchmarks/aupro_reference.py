"""A straightforward AUPRO in the style of the MVTec AD evaluation code (the speed/memory
baseline of metrics_bench.py): per-pixel change arrays, one global argsort, full-length
cumulative sums, tie runs reduced afterwards. Same definition as n2n_core.metrics, none of
its economies."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    fp_change = np.zeros(maps.shape, dtype=np.uint32)
    pro_change = np.zeros(maps.shape, dtype=np.float64)
    num_ok, num_regions = 0, 0
    for i, gt in enumerate(masks):
        labeled, n = ndimage.label(gt, structure=np.ones((3, 3), dtype=int))
        num_regions += n
        ok = labeled == 0
        num_ok += int(ok.sum())
        fp_change[i][ok] = 1
        for k in range(1, n + 1):
            region = labeled == k
            pro_change[i][region] = 1.0 / region.sum()
    scores = maps.ravel()
    order = np.argsort(scores)[::-1]
    sorted_scores = scores[order]
    fprs = np.cumsum(fp_change.ravel()[order], dtype=np.uint64).astype(np.float64) / num_ok
    pros = np.cumsum(pro_change.ravel()[order]) / num_regions
    keep = np.append(np.diff(sorted_scores) != 0, True)  # last point of every tie run
    fprs = np.clip(np.concatenate(([0.0], fprs[keep], [1.0])), 0, 1)
    pros = np.clip(np.concatenate(([0.0], pros[keep], [1.0])), 0, 1)
    return _trapezoid_to(fprs, pros, fpr_limit) / fpr_limit


def _trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    correction = 0.0
    if x_max not in x:
        ins = int(np.searchsorted(x, x_max, side="right"))
        y_lim = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_lim + y[ins - 1]) * (x_max - x[ins - 1])
    m = x <= x_max
    x, y = x[m], y[m]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)
