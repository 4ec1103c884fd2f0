"""Readers, the Dataset, the embedded synthetic set and foreground masks, on local fixtures."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from n2n_core.data import (
    AnomalyDataset,
    DatasetError,
    estimate_foreground,
    foreground_masks,
    list_categories,
    load_image,
    load_mask,
    load_samples,
)
from n2n_core.data import fixtures as F
from n2n_core.data import synthetic as S


def _bright(path):
    return load_image(path)[..., 1] > 200  # fixtures paint the defect square at 250


def _assert_pairs(samples):
    for s in samples:
        if s.label:
            item_mask = np.asarray(Image.open(s.mask).convert("L")) > 0
            assert (item_mask == _bright(s.image)).mean() > 0.97, (s.image, s.mask)


# ------------------------------------------------------------------------------ readers
def test_mvtec_reader(tmp_path):
    root = F.write_mvtec(tmp_path / "mvtec")
    assert list_categories("mvtec", root) == ["bottle", "carpet"]
    train = load_samples("mvtec", root, "bottle", "train")
    test = load_samples("mvtec", root, "bottle", "test")
    assert len(train) == 4 and all(s.label == 0 and s.mask is None for s in train)
    assert [s.defect for s in test] == ["broken", "broken", "good", "good", "scratch", "scratch"]
    assert sum(s.label for s in test) == 4
    _assert_pairs(test)


def test_masks_paired_by_stem_not_sorted_order(tmp_path):
    root = F.write_mvtec(tmp_path / "m", categories=("bottle",), defects=("broken",), n_test=3)
    d = root / "bottle" / "test" / "broken"
    g = root / "bottle" / "ground_truth" / "broken"
    for old, new in [("000", "1"), ("001", "10"), ("002", "2")]:  # sorted: 1, 10, 2 ...
        (d / f"{old}.png").rename(d / f"{new}.png")
        (g / f"{old}_mask.png").rename(g / f"{new}_mask.png")  # ... masks: 10_, 1_, 2_
    test = load_samples("mvtec", root, "bottle", "test")
    assert {s.image.stem: s.mask.stem for s in test if s.label} == {
        "1": "1_mask",
        "10": "10_mask",
        "2": "2_mask",
    }
    _assert_pairs(test)


def test_folder_source_accepts_a_tree_or_one_category(tmp_path):
    root = F.write_mvtec(tmp_path / "tree")
    assert list_categories("folder", root) == ["bottle", "carpet"]
    assert list_categories("folder", root / "carpet") == ["carpet"]
    assert len(load_samples("folder", root / "carpet", "carpet", "test")) == 6


def test_visa_raw_layout(tmp_path):
    root = F.write_visa_raw(tmp_path / "visa")
    assert list_categories("visa", root) == ["candle", "pcb1"]
    train = load_samples("visa", root, "pcb1", "train")
    test = load_samples("visa", root, "pcb1", "test")
    assert len(train) == 4 and not any(s.label for s in train)
    assert len(test) == 5 and sum(s.label for s in test) == 3
    ds = AnomalyDataset(test, image_size=32)
    masks = [ds[i]["mask"] for i in range(len(ds)) if test[i].label]
    # raw masks hold labels 1, 2, 3 (not 0/255): all binarised to exactly 0/1
    assert all(set(m.unique().tolist()) == {0.0, 1.0} for m in masks)
    assert all(abs(float(m.mean()) - 1 / 16) < 1e-6 for m in masks)  # an 8x8 square of 32x32


def test_visa_converted_layout(tmp_path):
    root = F.write_visa_converted(tmp_path / "visa")
    test = load_samples("visa", root, "candle", "test")
    assert {s.defect for s in test} == {"good", "bad"}
    assert all(s.mask.name == f"{s.image.stem}.png" for s in test if s.label)
    _assert_pairs(test)


def test_visa_raw_without_split_csv(tmp_path):
    root = F.write_visa_raw(tmp_path / "visa")
    (root / "split_csv" / "1cls.csv").unlink()
    with pytest.raises(DatasetError, match=r"1cls\.csv not found.*VisA_20220922\.tar"):
        load_samples("visa", root, "candle", "train")


def test_dagm_layout_unsupervised_split(tmp_path):
    root = F.write_dagm(tmp_path / "dagm", classes=(2, 10))
    assert list_categories("dagm", root) == ["Class2", "Class10"]  # numeric order
    train = load_samples("dagm", root, "Class10", "train")
    test = load_samples("dagm", root, "Class10", "test")
    assert len(train) == 4 and not any(s.label for s in train)  # defective train images dropped
    assert len(test) == 6 and sum(s.label for s in test) == 2
    x = AnomalyDataset(test, image_size=16)[5]
    assert x["image"].shape == (3, 16, 16)  # grayscale expanded to 3 channels
    assert torch.equal(x["image"][0], x["image"][2])
    _assert_pairs(test)


def test_dagm_bad_label_line(tmp_path):
    root = F.write_dagm(tmp_path / "dagm", classes=(1,))
    labels = root / "Class1" / "Train" / "Label" / "Labels.txt"
    labels.write_text(labels.read_text() + "7\tyes\n")
    with pytest.raises(DatasetError, match=r"Labels\.txt:\d+: expected 5 fields"):
        load_samples("dagm", root, "Class1", "train")


# ---------------------------------------------------------------------------- bad input
def test_missing_root_and_unknown_category(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist \(mvtec: get it with"):
        load_samples("mvtec", tmp_path / "nope", "bottle", "train")
    root = F.write_mvtec(tmp_path / "m")
    with pytest.raises(DatasetError, match=r"unknown category 'cable'.*found: bottle, carpet"):
        load_samples("mvtec", root, "cable", "train")
    with pytest.raises(DatasetError, match="data source must be one of"):
        load_samples("kaggle", root, "bottle", "train")


def test_empty_train_split(tmp_path):
    root = F.write_mvtec(tmp_path / "m", categories=("bottle",))
    for p in (root / "bottle" / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match=r"empty train split: no images in .*train[/\\]good"):
        load_samples("mvtec", root, "bottle", "train")


def test_anomalous_image_without_mask(tmp_path):
    root = F.write_mvtec(tmp_path / "m", categories=("bottle",), defects=("broken",))
    (root / "bottle" / "ground_truth" / "broken" / "001_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"001\.png has no mask: expected .*001_mask\.png"):
        load_samples("mvtec", root, "bottle", "test")


def test_mask_size_mismatch_is_an_error(tmp_path):
    root = F.write_mvtec(tmp_path / "m", categories=("bottle",), defects=("broken",))
    mask = root / "bottle" / "ground_truth" / "broken" / "000_mask.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(mask)
    test = load_samples("mvtec", root, "bottle", "test")
    with pytest.raises(DatasetError, match=r"is 16x16 but its image .* is 32x32"):
        AnomalyDataset(test, image_size=32)[0]


def test_corrupt_image(tmp_path):
    root = F.write_mvtec(tmp_path / "m", categories=("bottle",))
    bad = root / "bottle" / "train" / "good" / "002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    ds = AnomalyDataset(load_samples("mvtec", root, "bottle", "train"), image_size=32)
    with pytest.raises(DatasetError, match=r"cannot read image .*002\.png: corrupt"):
        ds[2]


def test_zero_one_masks_grayscale_rgba_and_non_ascii_paths(tmp_path):
    root = F.write_mvtec(tmp_path / "données_ü" / "m", categories=("bottle",), mask_scale=1)
    test = load_samples("mvtec", root, "bottle", "test")
    img = test[0].image
    Image.open(img).convert("RGBA").save(img)  # RGBA
    gray = test[1].image
    Image.open(gray).convert("L").save(gray)  # grayscale
    ds = AnomalyDataset(test, image_size=32, value_range=(0.0, 1.0))
    for i in range(len(ds)):
        x = ds[i]
        assert x["image"].shape == (3, 32, 32) and x["mask"].shape == (1, 32, 32)
        assert 0 <= float(x["image"].min()) and float(x["image"].max()) <= 1
        if test[i].label:  # 0/1 masks are read as binary masks, not as "almost empty"
            assert float(x["mask"].sum()) == 64


def test_float_images_in_0_1_and_masks_drawn_in_the_alpha_channel(tmp_path):
    """A float32 TIFF in [0, 1] is not read as black; one in [0, 255] is kept; others are an
    error naming the file. A mask painted in the alpha channel (black colour, transparent
    background) is its opaque pixels, not empty."""
    rng = np.random.default_rng(0)
    unit = rng.random((8, 8)).astype(np.float32)
    Image.fromarray(unit, mode="F").save(tmp_path / "unit.tif")
    got = load_image(tmp_path / "unit.tif")
    assert np.array_equal(got[..., 0], np.clip(np.rint(unit * 255), 0, 255).astype(np.uint8))
    Image.fromarray(unit * 255, mode="F").save(tmp_path / "scale255.tif")
    assert np.array_equal(load_image(tmp_path / "scale255.tif"), got)
    Image.fromarray(unit * 1000, mode="F").save(tmp_path / "odd.tif")
    with pytest.raises(DatasetError, match=r"odd\.tif: floating-point values in \[.*neither"):
        load_image(tmp_path / "odd.tif")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:5, 3:6, 3] = 255  # drawn only in alpha
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha_mask.png")
    want = np.zeros((8, 8), bool)
    want[2:5, 3:6] = True
    assert np.array_equal(load_mask(tmp_path / "alpha_mask.png"), want)
    opaque = np.zeros((8, 8, 4), np.uint8)
    opaque[..., 3] = 255
    opaque[1:3, 1:3, :3] = 255  # an ordinary white-on-black mask saved as RGBA
    Image.fromarray(opaque, "RGBA").save(tmp_path / "rgba_mask.png")
    assert int(load_mask(tmp_path / "rgba_mask.png").sum()) == 4


def test_dataset_value_range_and_resize(tmp_path):
    root = F.write_mvtec(tmp_path / "m", categories=("bottle",), size=40)
    test = load_samples("mvtec", root, "bottle", "test")
    x = AnomalyDataset(test, image_size=20, value_range=(-1.0, 1.0))[0]  # broken/000
    assert x["image"].shape == (3, 20, 20) and -1 <= float(x["image"].min()) < 0
    assert x["label"] == 1 and set(x["mask"].unique().tolist()) == {0.0, 1.0}
    assert float(AnomalyDataset(test, image_size=20)[2]["mask"].sum()) == 0  # good: zeros
    with pytest.raises(ValueError, match="value_range"):
        AnomalyDataset(test, value_range=(1.0, 0.0))


# --------------------------------------------------------------------- synthetic dataset
def test_synthetic_is_deterministic_and_complete(tmp_path):
    spec = S.SyntheticSpec(size=48, n_train=3, n_test_good=2, n_per_defect=2)
    a, b = S.generate(tmp_path / "a", spec), S.generate(tmp_path / "b", spec)

    def digest(root):
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    da, db = digest(a), digest(b)
    assert da == db and len(da) == 4 * (3 + 2 + 4 * 2 * 2) + 1
    other = S.SyntheticSpec(seed=1, size=48, n_train=3, n_test_good=2, n_per_defect=2)
    assert digest(S.generate(tmp_path / "c", other)) != da
    for cat in S.CATEGORIES:
        test = load_samples("synthetic", a, cat, "test")
        assert len({s.defect for s in test if s.label}) >= 3


@pytest.mark.parametrize("category", S.CATEGORIES)
def test_synthetic_masks_are_the_changed_pixels(category):
    builders = {"weave": S._weave, "grain": S._grain, "cap": S._cap, "chip": S._chip}
    for defect in S.DEFECTS[category]:
        for seed in range(3):
            rng = np.random.default_rng([seed, 7])
            out = builders[category](rng, 96)
            img, fg, extra = (*out, {}) if len(out) == 2 else out
            trial = img.copy()
            m = S._apply_defect(rng, defect, trial, fg, extra, 96)
            changed = np.abs(trial - img).max(axis=2) > 1 / 255
            assert not (changed & ~m).any(), f"{category}/{defect}: pixels changed outside the mask"
            assert changed[m].mean() > 0.9, f"{category}/{defect}: mask larger than the change"


def test_ensure_synthetic_reuses_and_protects(tmp_path):
    spec = S.SyntheticSpec(size=32, n_train=2, n_test_good=1, n_per_defect=1)
    root = S.ensure_synthetic(tmp_path / "syn", spec)
    stamp = (root / "cap" / "train" / "good" / "000.png").stat().st_mtime_ns
    S.ensure_synthetic(root, spec)  # same spec: untouched
    assert (root / "cap" / "train" / "good" / "000.png").stat().st_mtime_ns == stamp
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    with pytest.raises(DatasetError, match="not an n2n generated dataset"):
        S.ensure_synthetic(other, spec)
    assert (other / "keep.txt").read_text() == "user data"
    # reading never regenerates: a dataset made with another spec is used as it is
    assert len(load_samples("synthetic", root, "cap", "train")) == 2


def test_regenerating_replaces_only_what_n2n_wrote(tmp_path):
    """Another spec regenerates the embedded set; a user's file and own category beside it
    stay, and a regeneration cut off before the manifest moved is completed by the next one."""
    small = S.SyntheticSpec(size=32, n_train=2, n_test_good=1, n_per_defect=1)
    root = S.ensure_synthetic(tmp_path / "syn", small)
    (root / "notes.txt").write_text("user data")
    (root / "mine" / "train" / "good").mkdir(parents=True)
    bigger = S.SyntheticSpec(size=32, n_train=3, n_test_good=1, n_per_defect=1)
    S.ensure_synthetic(root, bigger)
    assert len(load_samples("synthetic", root, "cap", "train")) == 3
    assert (root / "notes.txt").read_text() == "user data" and (root / "mine").is_dir()
    assert not list(tmp_path.glob(".syn-*"))  # no temporary folder left
    calls = []
    real = Path.replace

    def cut_at_manifest(self, target):  # the process dies just before the manifest moves
        if Path(target).name == "n2n_synthetic.json" and not calls:
            calls.append(target)
            raise KeyboardInterrupt
        return real(self, target)

    import unittest.mock

    with (
        unittest.mock.patch.object(Path, "replace", cut_at_manifest),
        pytest.raises(KeyboardInterrupt),
    ):
        S.ensure_synthetic(root, small)
    S.ensure_synthetic(root, small)  # the old manifest still differs: regenerated again
    assert len(load_samples("synthetic", root, "cap", "train")) == 2
    assert (root / "notes.txt").read_text() == "user data"


# --------------------------------------------------------------------- foreground masks
@pytest.mark.parametrize("category", ["cap", "chip"])
def test_foreground_estimate_covers_the_object(category):
    ci = S.CATEGORIES.index(category)
    for i in range(8):
        img, _, fg = S.render(category, np.random.default_rng([5, ci, i]), 128)
        est = estimate_foreground(img)
        inter = (est & fg).sum()
        assert inter / fg.sum() > 0.97 and inter / (est | fg).sum() > 0.8


@pytest.mark.parametrize("n", [2, 3, 4])
def test_foreground_keeps_every_instance(n):
    """VisA's candle, capsules and macaroni show several objects: each is foreground (the
    largest component alone, the old rule, misses the others)."""
    for i in range(10):
        img, instances = S.render_instances(np.random.default_rng([n, i]), n, 128)
        est, union = estimate_foreground(img), np.any(instances, axis=0)
        for inst in instances:
            assert (est & inst).sum() / inst.sum() > 0.97
        assert (est & union).sum() / (est | union).sum() > 0.7
        largest = estimate_foreground(img, min_fraction=1.0)
        assert min((largest & m).sum() / m.sum() for m in instances) < 0.5
    with pytest.raises(ValueError, match=r"1\.\.4 instances"):
        S.render_instances(np.random.default_rng(0), 5)


def test_foreground_cache_and_precomputed(tmp_path):
    spec = S.SyntheticSpec(size=64, n_train=3, n_test_good=1, n_per_defect=1)
    root = S.ensure_synthetic(tmp_path / "syn", spec)
    train = load_samples("synthetic", root, "cap", "train")
    first = foreground_masks(train, cache_dir=tmp_path / "fg")
    cached = sorted((tmp_path / "fg" / "cap").iterdir())
    assert len(cached) == 3
    assert all(
        np.array_equal(a, b)
        for a, b in zip(first, foreground_masks(train, tmp_path / "fg"), strict=True)
    )
    pre = tmp_path / "pre"
    pre.mkdir()
    for s in train:
        Image.fromarray(np.full((64, 64), 255, np.uint8)).save(pre / f"{s.image.stem}.png")
    assert all(m.all() for m in foreground_masks(train, precomputed=pre))
    (pre / f"{train[0].image.stem}.png").unlink()
    with pytest.raises(DatasetError, match=r"precomputed foreground mask .* is missing"):
        foreground_masks(train, precomputed=pre)
    assert foreground_masks(train, texture=True) == [None] * 3
    ds = AnomalyDataset(train, image_size=32, foreground=first)
    assert ds[0]["foreground"].shape == (1, 32, 32)
    shutil.rmtree(tmp_path / "fg")


def test_a_full_disk_while_generating_names_the_folder_and_leaves_nothing(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(S, "_save_png", full)
    with pytest.raises(DatasetError, match=r"could not write the dataset into .*is the disk full"):
        S.ensure_synthetic(tmp_path / "syn", S.SyntheticSpec(size=32, n_train=1))
    assert list(tmp_path.iterdir()) == []  # no half dataset, no temporary folder
