"""The photographic benchmark (n2n_core.data.photos) and how a category says texture or object."""

import hashlib
import json

import numpy as np
import pytest

from n2n_core.data import DatasetError, is_texture, list_categories, load_samples
from n2n_core.data import photos as P
from n2n_core.data import synthetic as S
from n2n_core.data.dataset import load_pair
from n2n_core.data.foreground import looks_like_texture
from n2n_core.data.readers import category_kind

SMALL = P.PhotoSpec(n_train=3, n_test_good=2, n_per_defect=1)
EIGHT = S.SyntheticSpec(n_train=8, n_test_good=1, n_per_defect=1)


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return P.ensure_photos(tmp_path_factory.mktemp("photos") / "photos", SMALL)


def test_layout_read_by_both_readers_and_reproducible(small, tmp_path):
    assert list_categories("photos", small) == sorted(P.CATEGORIES)
    assert list_categories("folder", small) == sorted(P.CATEGORIES)
    for cat in P.CATEGORIES:
        train = load_samples("photos", small, cat, "train")
        test = load_samples("folder", small, cat, "test")
        assert len(train) == SMALL.n_train and all(s.label == 0 for s in train)
        assert sorted({s.defect for s in test if s.label}) == sorted(P.DEFECTS)
        for s in test:
            img, mask = load_pair(s)
            assert img.shape == (SMALL.size, SMALL.size, 3)
            assert (mask is not None and mask.sum() >= 12) == bool(s.label)
    assert _digest(P.generate_photos(tmp_path / "again", SMALL)) == _digest(small)


@pytest.mark.parametrize("category", sorted(P.CATEGORIES))
@pytest.mark.parametrize("defect", P.DEFECTS)
def test_defect_changes_exactly_its_mask(category, defect):
    rng = np.random.default_rng([7, P.DEFECTS.index(defect)])
    img = P._normal(category, "test", rng, 96)
    trial = img.copy()
    m = P._apply(category, defect, rng, trial)
    diff = np.abs(trial - img).max(axis=2)
    assert not (diff[~m] > 0).any(), "pixels changed outside the mask"
    assert m.sum() >= 12 and diff[m].mean() > 0.03


def test_foliage_test_crops_never_overlap_training_crops():
    def overlap(a, b):
        return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])

    for a in P._FOLIAGE["train"]:
        for b in P._FOLIAGE["test"]:
            assert not overlap(a, b)
    for box in (*P._FOLIAGE["train"], *P._FOLIAGE["test"]):  # every box fits a crop
        assert box[2] - box[0] >= P._FOLIAGE_CROP and box[3] - box[1] >= P._FOLIAGE_CROP


def test_texture_or_object_declared_or_decided_from_images(small, tmp_path):
    assert is_texture("photos", "foliage", small) and not is_texture("photos", "dahlia", small)
    # the embedded set's known kinds, decided from its images alone
    syn = S.ensure_synthetic(tmp_path / "syn", EIGHT)
    for cat in S.CATEGORIES:
        want = cat in ("weave", "grain")
        assert looks_like_texture(load_samples("synthetic", syn, cat, "train")) is want
        assert (category_kind("folder", syn, cat) == "texture") is want
    assert not is_texture("folder", "cap", syn) and is_texture("folder", "weave", syn)
    assert not is_texture("folder", "weave")  # no root: nothing to decide from
    (syn / "weave" / "category.json").write_text(json.dumps({"kind": "object"}))
    assert category_kind("folder", syn, "weave") == "object"  # declared wins
    (syn / "weave" / "category.json").write_text('{"kind": "fabric"}')
    with pytest.raises(DatasetError, match=r"category\.json must read"):
        category_kind("folder", syn, "weave")


def test_ensure_photos_protects_foreign_folder(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    with pytest.raises(DatasetError, match=r"n2n_photos\.json missing"):
        P.ensure_photos(other, SMALL)
    assert (other / "keep.txt").read_text() == "user data"
    with pytest.raises(ValueError, match="category must be one of"):
        P.render_photo("grass", "train", np.random.default_rng(0))


def test_folder_textures_get_the_whole_image_for_synthesis(small, tmp_path):
    """DiffusionAD's feed: a texture's synthetic anomalies go anywhere (F = None), an object's
    on its estimated foreground — for a ``folder`` tree decided from the images."""
    from n2n_core.data.training import training_images

    syn = S.ensure_synthetic(tmp_path / "syn", EIGHT)
    for source, root, cat, texture in [
        ("folder", syn, "weave", True), ("folder", syn, "cap", False),
        ("photos", small, "foliage", True), ("folder", small, "foliage", True),
    ]:  # fmt: skip
        images, fg = training_images(source, root, cat, 32, foreground=True)
        assert images.shape[1:] == (3, 32, 32)
        assert (fg is None) is texture, (source, cat)


def test_synthesis_settings_reach_the_feed(small, tmp_path):
    from n2n_core.config import DataSpec
    from n2n_core.methods import resolve
    from n2n_core.methods.diffusionad import DiffusionADFeed
    from n2n_core.synthesis import SynthesisConfig

    cfg, tcfg = resolve("diffusionad", "smoke", "photos", ["foliage"],
                        {"model.synthesis.perlin_scale": (0, 3)})  # fmt: skip
    feed = DiffusionADFeed(cfg, tcfg, DataSpec("photos", str(small), "foliage"), tmp_path)
    assert feed.synthesizer.config == SynthesisConfig(perlin_scale=(0, 3))
    with pytest.raises(ValueError, match="perlin_scale must be"):
        DiffusionADFeed(
            resolve("diffusionad", "smoke", overrides={"model.synthesis.perlin_scale": (3, 3)})[0],
            tcfg, DataSpec("photos", str(small), "foliage"), tmp_path,
        )  # fmt: skip


def test_data_command_prints_each_categorys_kind(small, capsys):
    from n2n_core import cli

    assert cli.main(["data", "folder", "--root", str(small), "--no-open"]) == 0
    lines = {ln.split()[0]: ln.split()[1] for ln in capsys.readouterr().out.splitlines()}
    assert lines == {"dahlia": "object", "foliage": "texture", "portrait": "object"}


# ------------------------------------------------------------- the confirmation categories
def test_tuning_and_confirmation_parts_are_fixed_and_disjoint():
    """The split a profile is chosen on (tuning) and checked on (the rest) is data, decided
    before anything was measured on the confirmation part."""
    assert set(P.TUNING) < set(P.CATEGORIES)
    assert not set(P.CONFIRMATION) & set(P.CATEGORIES)
    confirm = [c for c in P.KINDS if c not in P.TUNING]
    assert confirm == ["portrait", "galaxies", "espresso"]
    assert {P.KINDS[c] for c in confirm} == {"texture", "object"}


def test_the_default_photos_set_is_unchanged_by_the_confirmation_categories(tmp_path):
    """``--data photos`` keeps its three categories and its manifest, so a built set stays
    valid; the confirmation categories go to a folder of their own, listed in its manifest."""
    built = P.ensure_photos(tmp_path / "p", SMALL)
    manifest = json.loads((built / P.MANIFEST).read_text())
    assert "categories" not in manifest and list_categories("photos", built) == sorted(P.CATEGORIES)
    with pytest.raises(ValueError, match=r"no photographic category \['gravel'\]"):
        P.generate_photos(tmp_path / "x", SMALL, ("gravel",))


def test_missing_confirmation_photographs_say_how_to_get_them(tmp_path, monkeypatch):
    real = P._package_dir
    monkeypatch.setattr(P, "_package_dir", lambda p: None if p == "skimage" else real(p))
    monkeypatch.setattr(P, "_PHOTOS", {})
    with pytest.raises(DatasetError, match="pip install scikit-image"):
        P.generate_photos(tmp_path / "c", SMALL, tuple(P.CONFIRMATION))


def test_confirmation_categories_build_and_read_as_folder_data(tmp_path):
    pytest.importorskip("skimage", reason="the confirmation photographs ship with scikit-image")
    root = P.ensure_photos(tmp_path / "c", SMALL, tuple(P.CONFIRMATION))
    assert json.loads((root / P.MANIFEST).read_text())["categories"] == list(P.CONFIRMATION)
    assert list_categories("folder", root) == sorted(P.CONFIRMATION)
    for cat, kind in P.CONFIRMATION.items():
        assert category_kind("folder", root, cat) == kind
        test = load_samples("folder", root, cat, "test")
        assert sorted({s.defect for s in test if s.label}) == sorted(P.DEFECTS)
        for defect in P.DEFECTS:  # each defect changes exactly its mask
            rng = np.random.default_rng([7, P.DEFECTS.index(defect)])
            img = P._normal(cat, "test", rng, 96)
            trial = img.copy()
            m = P._apply(cat, defect, rng, trial)
            diff = np.abs(trial - img).max(axis=2)
            assert not (diff[~m] > 0).any() and m.sum() >= 12
    assert _digest(P.generate_photos(tmp_path / "again", SMALL, tuple(P.CONFIRMATION))) == (
        _digest(root)
    )
