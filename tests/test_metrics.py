"""n2n_core.metrics against scikit-learn, brute-force sweeps and hand-computed cases."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, roc_auc_score

from n2n_core import metrics as M


# ---------------------------------------------------------------- independent references
def brute_aupro(maps, masks, limit=0.3):
    """Threshold sweep over every distinct score, written from the MVTec AD definition."""
    regions = []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(i, lab == r) for r in range(1, n + 1)]
    normal = ~masks.astype(bool)
    xs, ys = [0.0], [0.0]
    for th in np.unique(maps)[::-1]:
        pred = maps >= th
        xs.append((pred & normal).sum() / normal.sum())
        ys.append(np.mean([(pred[i] & reg).sum() / reg.sum() for i, reg in regions]))
    area = 0.0
    for k in range(1, len(xs)):
        x0, x1, y0, y1 = xs[k - 1], xs[k], ys[k - 1], ys[k]
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += (limit - x0) * (y0 + y_lim) / 2
            break
    return area / limit


def brute_f1max(scores, labels):
    best = 0.0
    for th in np.unique(scores):
        pred = scores >= th
        tp = (pred & labels).sum()
        if tp:
            p, r = tp / pred.sum(), tp / labels.sum()
            best = max(best, 2 * p * r / (p + r))
    return best


def random_case(seed, n=6, size=12, levels=None):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(0, n, 2):  # half the images have 1-2 defects
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, size - 3, 2)
            h, w = rng.integers(1, 4, 2)
            masks[i, y : y + h, x : x + w] = True
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    if levels:  # quantise to force many ties
        maps = np.round(maps * levels) / levels
    return maps.astype(np.float32), masks


# ------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("levels", [None, 2])
def test_pixel_metrics_match_sklearn_and_brute_force(seed, levels):
    maps, masks = random_case(seed, levels=levels)
    got = M.pixel_metrics(maps, masks, chunk_size=97)  # tiny chunks: ties cross boundaries
    y, s = masks.ravel(), maps.ravel()
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert got["pixel_f1max"] == pytest.approx(brute_f1max(s, y), abs=1e-12)
    assert got["pixel_aupro"] == pytest.approx(brute_aupro(maps, masks), abs=1e-12)
    # the chunk size changes nothing
    assert M.pixel_metrics(maps, masks) == pytest.approx(got, abs=1e-12)


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_limits(limit):
    maps, masks = random_case(7, n=8, size=16)
    got = M.pixel_metrics(maps, masks, fpr_limit=limit)["pixel_aupro"]
    assert got == pytest.approx(brute_aupro(maps, masks, limit), abs=1e-12)


def test_image_metrics_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.normal(size=300) + labels, 1)  # many ties
    got = M.binary_metrics(scores, labels)
    assert got["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert got["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert got["f1max"] == pytest.approx(brute_f1max(scores, labels), abs=1e-12)


def test_two_regions_of_different_sizes_by_hand():
    """One image, a 1-pixel and a 3-pixel region, and a normal image.

    Scores: the small region 0.9, the big region 0.8, 0.7, 0.1; normal pixels 0.5 except one
    0.85 in the normal image. Walking down (N normal pixels = 16 - 4 + 16 - 0 = 28):
      0.9:  PRO = (1 + 0)/2 = 0.5, FPR 0
      0.85: FPR 1/28
      0.8:  PRO = (1 + 1/3)/2
      0.7:  PRO = (1 + 2/3)/2
      0.5:  FPR = 1 (all remaining normal pixels), 0.1: PRO = 1.
    """
    maps = np.full((2, 4, 4), 0.5, dtype=np.float32)
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 0, 0] = True
    maps[0, 0, 0] = 0.9
    masks[0, 2, 1:4] = True
    maps[0, 2, 1:4] = [0.8, 0.7, 0.1]
    maps[1, 3, 3] = 0.85
    x = [0, 0, 1 / 28, 1 / 28, 1 / 28, 1.0]
    y = [0, 0.5, 0.5, 2 / 3, 5 / 6, 5 / 6]
    limit = 0.3
    y_lim = 5 / 6  # flat from 1/28 to 1.0
    area = sum((x[k] - x[k - 1]) * (y[k] + y[k - 1]) / 2 for k in range(1, 5))
    area += (limit - 1 / 28) * (5 / 6 + y_lim) / 2
    got = M.pixel_metrics(maps, masks)
    assert got["pixel_aupro"] == pytest.approx(area / limit, abs=1e-12)
    # F1-max by hand: threshold 0.7 → TP 3 (of 4), FP 1, precision 3/4, recall 3/4
    assert got["pixel_f1max"] == pytest.approx(0.75, abs=1e-12)


def test_eight_connectivity_joins_diagonal_pixels():
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal neighbours: one region, not two
    maps = np.zeros((1, 4, 4), dtype=np.float32)
    maps[0, 0, 0] = 1.0  # half of the single region found before any false positive
    maps[0, 1, 1] = -1.0  # the other half found last
    got = M.pixel_metrics(maps, masks, fpr_limit=1.0)["pixel_aupro"]
    # one region: PRO jumps to 0.5 at FPR 0, stays 0.5 to FPR 1, then → 1 at FPR 1
    assert got == pytest.approx(0.5, abs=1e-12)


def test_invariant_under_strictly_increasing_transforms():
    maps, masks = random_case(3, n=8, size=16)
    maps = np.round(maps, 2)  # well-separated values survive the transforms in float32
    scores = maps.max(axis=(1, 2))
    ref = M.compute(maps, masks, scores)
    for f in (lambda v: 3 * v + 7, lambda v: np.exp(v / 2), lambda v: np.arctan(v / 5)):
        got = M.compute(f(maps.astype(np.float64)), masks, f(scores.astype(np.float64)))
        assert got == pytest.approx(ref, abs=1e-12)


def test_the_former_name_evaluate_warns_and_computes_the_same():
    maps, masks = random_case(4, n=6, size=16)
    with pytest.warns(DeprecationWarning, match=r"metrics\.compute"):
        old = M.evaluate(maps, masks, official_grid="decodiff")
    assert old == M.compute(maps, masks, official_grid="decodiff")


def test_float64_maps_are_ranked_at_float64_precision():
    """No ties introduced by a cast: scores 1e-12 apart, or 1e8 + 3 vs 1e8, keep their order
    (the same as sklearn's on the float64 values), on the NumPy and the torch sweep alike;
    float32 maps are ranked as float32."""
    maps, masks = random_case(9, n=4, size=8)
    maps64 = maps.astype(np.float64)
    maps64[masks] = 1.0 + 1e-12  # anomalous pixels just above ...
    maps64[~masks & (maps64 > 0.5)] = 1.0  # ... some normal ones, within float32 resolution
    want = roc_auc_score(masks.ravel(), maps64.ravel())
    assert M.pixel_metrics(maps64, masks)["pixel_auroc"] == pytest.approx(want, abs=1e-12)
    t = torch.from_numpy(maps64)
    assert M.pixel_metrics(t, masks, backend="torch")["pixel_auroc"] == pytest.approx(
        want, abs=1e-12
    )
    as32 = maps64.astype(np.float32)
    got32 = M.pixel_metrics(as32, masks)["pixel_auroc"]
    assert got32 == pytest.approx(roc_auc_score(masks.ravel(), as32.ravel()), abs=1e-12)
    assert got32 < want
    big = np.full(masks.shape, 1e8)
    big[masks] += 3  # 1e8 + 3 vs 1e8: equal in float32
    out = M.compute(big, masks)
    assert out["pixel_auroc"] == out["pixel_ap"] == 1.0  # float32: 0.5 and a fraction
    assert out["pixel_aupro"] == pytest.approx(1.0, abs=1e-12)
    assert M.binary_metrics(big.reshape(len(big), -1).max(1), masks.any((1, 2)))["auroc"] == 1.0


def test_evaluate_returns_the_seven_keys_and_accepts_torch():
    maps, masks = random_case(5)
    out = M.compute(torch.from_numpy(maps).unsqueeze(1), torch.from_numpy(masks))
    assert tuple(out) == M.METRIC_KEYS
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in out.values())
    assert out["image_auroc"] == pytest.approx(
        roc_auc_score(masks.any(axis=(1, 2)), maps.max(axis=(1, 2))), abs=1e-12
    )


def test_grid_aupro_is_opt_in_and_differs_from_exact():
    maps, masks = random_case(11, n=10, size=24)
    exact = M.compute(maps, masks)
    assert M.OFFICIAL_GRID not in exact
    both = M.compute(maps, masks, official_grid="decodiff")
    assert both["pixel_aupro"] == exact["pixel_aupro"]
    assert both[M.OFFICIAL_GRID] == M.aupro_grid(maps, masks, "decodiff")
    # the grid version rescales FPR to [0, 1] and moves under a monotone transform
    g1 = M.aupro_grid(maps, masks, num_thresholds=200)
    g2 = M.aupro_grid(np.exp(4 * maps), masks, num_thresholds=200)
    assert abs(g1 - g2) > 1e-3
    e2 = M.pixel_metrics(np.exp(4 * maps.astype(np.float64)), masks)["pixel_aupro"]
    assert e2 == pytest.approx(exact["pixel_aupro"], abs=1e-9)


OFFICIAL_GRID_CASES = Path(__file__).parent / "fixtures" / "official_grid"


@pytest.mark.parametrize("case", range(8))
def test_grid_aupro_equals_the_official_codes_on_recorded_cases(case):
    """The official functions' own results (tests/fixtures/official_grid, recorded under the
    NumPy they pinned), bit for bit: ties, rectangles and rings with a dot in the hole."""
    d = np.load(OFFICIAL_GRID_CASES / "cases.npz")
    want = json.loads((OFFICIAL_GRID_CASES / "official.json").read_text())
    maps, masks = d[f"maps{case}"], d[f"masks{case}"]
    assert M.aupro_grid(maps, masks, "diffusionad") == want[f"dad{case}"]
    assert M.aupro_grid(maps, masks, "decodiff") == want[f"dd{case}"]
    assert M.aupro_grid(maps, masks, "decodiff", num_thresholds=100) == want[f"dd100_{case}"]


def _official_grid_by_hand(maps, masks, code, n):
    """Each official loop from its definition, one threshold at a time, with the NumPy 1.x
    dtypes made explicit: δ = float64(max − min)/n; thresholds float64, compared at float32."""
    lo, hi = maps.min(), maps.max()
    delta = np.float64(hi - lo) / n
    if code == "diffusionad":  # max − s·δ, s = 0..n-1
        ths = [np.float64(hi) - s * delta for s in range(n)]
    else:  # np.arange(min, max, δ)
        ths = list(np.arange(np.float64(lo), np.float64(hi), delta))
    regions = []
    for i, m in enumerate(masks):
        lab, k = ndimage.label(m, structure=np.ones((3, 3)))
        for r in range(1, k + 1):
            own = lab == r
            counted = (
                ndimage.binary_fill_holes(own, np.ones((3, 3))) if code == "diffusionad" else own
            )
            regions.append((i, counted, own.sum()))
    fprs, pros = [], []
    for th in ths:
        pred = maps > np.float32(th)
        fprs.append((pred & ~masks).sum() / (~masks).sum())
        pros.append(np.mean([(pred[i] & c).sum() / area for i, c, area in regions]))
    fprs, pros = np.array(fprs), np.array(pros)
    if code == "diffusionad":
        keep = fprs <= 0.3
        x = (fprs[keep] - fprs[keep].min()) / (fprs[keep].max() - fprs[keep].min())
    else:
        keep = fprs < 0.3
        x = fprs[keep] / fprs[keep].max()
    return auc(x, pros[keep])


@pytest.mark.parametrize("code", ["diffusionad", "decodiff"])
@pytest.mark.parametrize("seed", [12, 13])
def test_grid_aupro_equals_its_definition_by_brute_force(code, seed):
    maps, masks = random_case(seed, n=6, size=16, levels=4 if seed == 13 else None)
    masks[1, 2:9, 2:9] = True  # a ring around a hole holding a dot: filled by DiffusionAD's
    masks[1, 4:7, 4:7] = False
    masks[1, 5, 5] = True
    assert M.aupro_grid(maps, masks, code, 50) == _official_grid_by_hand(maps, masks, code, 50)


def test_each_official_grid_rule_moves_the_value():
    """Hole filling, the FPR limit's ≤ / <, the threshold order and the rescaling all
    matter: changing any one of them changes the value on a case built for it."""
    from dataclasses import replace

    d = np.load(OFFICIAL_GRID_CASES / "cases.npz")
    ring = d["maps0"], d["masks0"]
    # ten normal pixels 0.0 … 0.9, six defect pixels: FPR is exactly 0.3 at some thresholds
    top = d["maps0"].copy(), d["masks0"]
    top[0][0, 0, 0] = top[0].max() + 0.01  # a normal pixel on top: the max threshold matters
    steps = np.r_[np.arange(10) / 10, 0.35, 0.55, 0.75, 0.95, 1.0, 1.1].astype(np.float32)
    fpr_at_limit = steps.reshape(1, 4, 4), (np.arange(16) >= 10).reshape(1, 4, 4)
    # the max is a normal pixel, thresholds exact in binary (0, 1/8, …, 7/8): FPR never 0
    scores = [0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1, 0.5, 0.7, 0.9, 0.95, 0.97, 0.99]
    normal_on_top = np.float32(scores).reshape(1, 4, 4), fpr_at_limit[1]
    for base, change, case in [
        ("diffusionad", {"fill_holes": False}, ring),
        ("diffusionad", {"descending": False}, top),
        ("diffusionad", {"keep_equal": False}, fpr_at_limit),
        ("decodiff", {"rescale": "minmax"}, normal_on_top),  # from the max down, FPR's min is 0
    ]:
        M.GRIDS["variant"] = replace(M.GRIDS[base], **change)
        try:
            n = 8 if case is normal_on_top else None
            assert M.aupro_grid(*case, "variant", n) != M.aupro_grid(*case, base, n), change
        finally:
            del M.GRIDS["variant"]


def test_grid_aupro_nan_when_one_fpr_survives():
    maps, masks = random_case(13)
    y, x = np.argwhere(masks[0])[0]
    maps[0, y, x] = 1e6  # one defect outlier: every normal pixel below the grid's first steps
    with pytest.warns(UserWarning, match="NaN"):
        assert np.isnan(M.aupro_grid(maps, masks, num_thresholds=200))
    assert 0 <= M.pixel_metrics(maps, masks)["pixel_aupro"] <= 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"maps": np.full((2, 4, 4), np.nan)}, "NaN or inf"),
        ({"maps": np.zeros((2, 4))}, r"shape \(N, H, W\)"),
        ({"masks": np.zeros((2, 4, 5), dtype=bool)}, "does not match"),
        ({"masks": np.full((2, 4, 4), 255, dtype=np.uint8)}, "0/255"),
        ({"masks": np.zeros((2, 4, 4), dtype=bool)}, "no anomalous"),
        ({"masks": np.ones((2, 4, 4), dtype=bool)}, "no normal"),
        ({"image_scores": [0.1, np.inf]}, "image_scores contain NaN or inf"),
        ({"labels": [0, 0]}, "labels disagree with masks at images \\[0\\]: a normal"),
        ({"labels": [1]}, "one per map"),
    ],
)
def test_bad_input_is_named(kwargs, match):
    maps = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 1, 1] = True
    args = {"maps": maps, "masks": masks, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        M.compute(**args)


def test_an_anomalous_image_without_defect_pixels_counts_at_image_level_only():
    """A tiny defect lost to resizing: its image stays anomalous; its pixels are all normal."""
    maps, masks = random_case(21)
    labels = masks.any(axis=(1, 2))
    assert labels[0]
    masks[0] = False  # image 0 stays anomalous (label 1) but has no defect pixel any more
    scores = maps.max(axis=(1, 2))
    got = M.compute(maps, masks, scores, labels)
    pixel = M.pixel_metrics(maps, masks)
    assert all(got[k] == pytest.approx(v, abs=1e-12) for k, v in pixel.items())
    image = M.binary_metrics(scores, labels)
    assert got["image_auroc"] == pytest.approx(image["auroc"], abs=1e-12)


def test_single_class_image_labels():
    with pytest.raises(ValueError, match="no anomalous samples"):
        M.binary_metrics([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="binary"):
        M.binary_metrics([0.1, 0.2], [0, 2])


def test_tables():
    per = {"a": dict.fromkeys(M.METRIC_KEYS, 0.9), "b": dict.fromkeys(M.METRIC_KEYS, 0.7)}
    t = M.mean_table(per)
    assert list(t) == ["a", "b", "mean"] and t["mean"]["pixel_aupro"] == pytest.approx(0.8)
    md = M.to_markdown(t)
    assert "| mean | 80.0 |" in md and md.count("\n") == 4


# ------------------------------------------------------------- the torch sweep (GPU maps)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("levels", [None, 2])
def test_torch_backend_equals_the_numpy_path(seed, levels):
    """``backend="torch"`` (what maps on a GPU take) on CPU tensors: the same values as the
    key sort to 1e-12, ties (``levels``) and chunk boundaries included, and -0.0 ties +0.0."""
    maps, masks = random_case(seed, n=8, size=16, levels=levels)
    maps[1, :2] = -0.0
    maps[3, :2] = 0.0
    t, tm = torch.from_numpy(maps), torch.from_numpy(masks)
    want = M.compute(maps, masks, official_grid="diffusionad")
    got = M.compute(t.unsqueeze(1), tm, official_grid="diffusionad", backend="torch")
    assert got.keys() == want.keys() and got == pytest.approx(want, abs=1e-12)
    for chunk in (1, 97):
        got = M.pixel_metrics(t, tm, chunk_size=chunk, backend="torch")
        assert got == pytest.approx(M.pixel_metrics(maps, masks), abs=1e-12)
    assert M.pixel_metrics(t, tm, backend="torch")["pixel_auroc"] == pytest.approx(
        roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12
    )


def test_torch_backend_checks_its_input_and_is_chosen_for_gpu_tensors():
    maps, masks = random_case(2)
    bad = torch.from_numpy(maps).clone()
    bad[3, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf \(images \[3\]\)"):
        M.pixel_metrics(bad, masks, backend="torch")
    with pytest.raises(ValueError, match="backend must be"):
        M.pixel_metrics(maps, masks, backend="cupy")
    assert M._backend(torch.zeros(1), "auto") == "numpy"  # CPU tensors: the key sort
    assert M._backend(maps, "auto") == "numpy"
    meta = torch.empty(1, device="meta")  # any non-CPU device stands for a GPU here
    assert M._backend(meta, "auto") == "torch"


@pytest.mark.parametrize("seed", range(4))
def test_positive_run_sweep_equals_the_full_sweep(seed):
    """pixel_metrics visits only the tie runs that hold a defect pixel; the full sweep over
    every run (the torch path's, and pro_curve's) must give the same four numbers: heavy
    ties, -0.0 beside +0.0, large flat regions, defects tied with normal pixels, FPR limits."""
    rng = np.random.default_rng(seed)
    for trial in range(40):
        n, h, w = rng.integers(2, 6), rng.integers(3, 24), rng.integers(3, 24)
        maps = rng.standard_normal((n, h, w)).astype(np.float32)
        if trial % 2:
            maps = (np.round(maps * rng.integers(1, 4)) / 2).astype(np.float32)
        if trial % 3 == 0:
            maps[maps < rng.uniform(-0.5, 1.5)] = 0.0
        if trial % 4 == 0:
            maps[maps == 0] = -0.0
        masks = rng.random((n, h, w)) < rng.uniform(0.02, 0.5)
        masks[0] = False
        if not masks.any():
            continue
        limit = float(rng.choice([0.3, 1.0, 0.02]))
        fast = M.pixel_metrics(maps, masks, fpr_limit=limit)
        P = int(masks.sum())
        weights, runs = M._tie_runs(maps, masks, 64)  # small chunks: many sweep updates
        sweep = M._Sweep(P=P, N=masks.size - P, R=weights.size - 1, fpr_limit=limit)
        for tp, fp, pro in runs:
            sweep.update(tp, fp, pro)
        full = {f"pixel_{k}": v for k, v in sweep.results().items()}
        for k, v in full.items():
            assert fast[k] == pytest.approx(v, abs=1e-12), (trial, k)


def test_a_mean_over_categories_with_an_unknown_value_is_unknown():
    assert M.mean_or_none([0.5, 0.7]) == pytest.approx(0.6)
    assert M.mean_or_none([0.5, None]) is None  # not the mean of the known half
    assert M.mean_or_none([]) is None


def test_degenerate_inputs_are_errors_that_say_what_is_wrong():
    masks = np.zeros((2, 0, 0), bool)
    for maps in (np.zeros((2, 0, 0), np.float32), torch.zeros(2, 0, 0)):
        with pytest.raises(ValueError, match="maps are empty"):
            M.pixel_metrics(maps, masks, backend="torch" if torch.is_tensor(maps) else "numpy")
    maps, masks = random_case(1, n=2, size=8)
    with pytest.raises(ValueError, match="num_thresholds must be an integer ≥ 2, got 0"):
        M.aupro_grid(maps, masks, num_thresholds=0)
    with pytest.raises(ValueError, match=r"category 'b' has no 'image_ap'"):
        M.mean_table({"a": {"image_auroc": 1, "image_ap": 1}, "b": {"image_auroc": 1}},
                     keys=("image_auroc", "image_ap"))  # fmt: skip
