"""The photographic benchmark: MVTec-layout crops of real photographs that ship inside installed
packages (scikit-learn's ``china.jpg`` and ``flower.jpg``, matplotlib's ``grace_hopper.jpg``),
built offline from a seed. scikit-image's texture photographs are deliberately not used: they
stay free for a held-out check.

Its categories are split, before anything was measured on the second part, into a tuning part
(``foliage``, ``dahlia``: a profile may be chosen on them) and a confirmation part (``portrait``
and two categories from photographs nobody had used here, ``CONFIRMATION``, built only on
request into their own folder): a change is kept only if it helps both.

- ``foliage`` (texture, fine and stochastic): 64-px crops of the two groves of trees in
  ``china.jpg`` (→ 96 px, so the smoke profile's 64 px sees the leaves at their native scale).
  Training crops come from the left part of each grove, test crops from the right part: no
  test pixel was seen in training, as in MVTec's textures, where train and test are different
  pieces of the same material.
- ``dahlia`` (object): the flower of ``flower.jpg`` turned to any angle about its centre, shifted
  by a few pixels, 280 px → 96.
- ``portrait`` (object): Grace Hopper's portrait, turned ±4°, shifted and scaled by a few per cent,
  360 px → 96. A subject with fine detail (hair, lace, glasses) everywhere.
- ``galaxies`` (texture, fine and stochastic; confirmation): 96-px crops of scikit-image's
  ``hubble_deep_field.jpg``, training crops from its left part, test crops from its right part.
- ``espresso`` (object; confirmation): the cup and saucer of scikit-image's ``coffee.png``
  turned ±6°, shifted and scaled by a few per cent, 360 px → 96.

Every image gets its own brightness, contrast and a little sensor noise. Defects are drawn by
code unrelated to the training-time synthesis of ``n2n_core.synthesis`` (Perlin regions blended
with a texture): ``scratch`` (a thin light stroke), ``stain`` (a translucent coloured blob),
``smudge`` (the detail blurred away inside a blob), ``foreign`` (a polygon of another
photograph) and ``shift`` (a region's content displaced by several pixels, a seam in the
pattern). The mask is the region drawn; a defect that changes too little there is redrawn.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from n2n_core.data.samples import DatasetError
from n2n_core.data.synthetic import (
    SyntheticSpec,
    _blob,
    _draw,
    _ellipse,
    _save_png,
    _stroke,
    ensure_generated,
)

__all__ = [
    "CATEGORIES", "CONFIRMATION", "DEFECTS", "TUNING", "PhotoSpec", "ensure_photos",
    "generate_photos", "render_photo",
]  # fmt: skip

CATEGORIES = {"foliage": "texture", "dahlia": "object", "portrait": "object"}  # --data photos
# photographs of scikit-image (installed on request) that no n2n measurement had used
CONFIRMATION = {"galaxies": "texture", "espresso": "object"}
KINDS = {**CATEGORIES, **CONFIRMATION}
TUNING = ("foliage", "dahlia")  # the rest of KINDS confirms
DEFECTS = ("scratch", "stain", "smudge", "foreign", "shift")
VERSION = 1
MANIFEST = "n2n_photos.json"


@dataclass(frozen=True)
class PhotoSpec(SyntheticSpec):
    """What to generate, as for the geometric set, with the photographic set's sizes."""

    size: int = 96
    n_train: int = 60
    n_test_good: int = 12
    n_per_defect: int = 4


# ------------------------------------------------------------------------- sources
def _package_dir(package: str) -> Path | None:
    """Where an installed package lives, without importing it."""
    spec = importlib.util.find_spec(package)
    return (
        Path(spec.submodule_search_locations[0])
        if spec and spec.submodule_search_locations
        else None
    )


_PACKAGES = {  # photograph → (package, folder inside it, how to get it)
    "china.jpg": ("sklearn", "datasets/images", "reinstall scikit-learn (`make install`)"),
    "flower.jpg": ("sklearn", "datasets/images", "reinstall scikit-learn (`make install`)"),
    "grace_hopper.jpg": ("matplotlib", "mpl-data/sample_data", "reinstall matplotlib"),
    "hubble_deep_field.jpg": ("skimage", "data", "`pip install scikit-image`"),
    "coffee.png": ("skimage", "data", "`pip install scikit-image`"),
}


def _source(name: str) -> Image.Image:
    """One shipped photograph, RGB."""
    package, inner, fix = _PACKAGES[name]
    where = _package_dir(package)
    path = (where / inner / name) if where else Path(f"<{package} not installed>") / name
    if not path.is_file():
        raise DatasetError(
            f"the photograph {path} is missing: the photographic benchmark is built from "
            f"sample images that ship with Python packages; {fix}"
        )
    with Image.open(path) as im:
        return im.convert("RGB")


_PHOTOS: dict[str, Image.Image] = {}


def _photo(name: str) -> Image.Image:
    if name not in _PHOTOS:
        _PHOTOS[name] = _source(name)
    return _PHOTOS[name]


# foliage: (x0, y0, x1, y1) boxes of china.jpg that hold only trees; each of the two groves is
# split into a left part (train) and a right part (test) with a gap between them
_FOLIAGE = {
    "train": ((375, 318, 462, 427), (0, 356, 92, 427)),
    "test": ((472, 318, 560, 427), (102, 356, 195, 427)),
}
_FOLIAGE_CROP = 64  # native pixels per crop: the smoke profile's 64 px sees the leaves unresampled


def _foliage(rng: np.random.Generator, split: str, s: int) -> np.ndarray:
    boxes = _FOLIAGE[split]
    x0, y0, x1, y1 = boxes[rng.integers(len(boxes))]
    c = _FOLIAGE_CROP
    x, y = rng.integers(x0, x1 - c + 1), rng.integers(y0, y1 - c + 1)
    im = _photo("china.jpg").crop((x, y, x + c, y + c)).resize((s, s), Image.Resampling.LANCZOS)
    img = np.asarray(im, dtype=np.float64) / 255
    return img[:, ::-1] if rng.random() < 0.5 else img


def _posed(
    rng: np.random.Generator, name: str, centre: tuple[float, float], crop: int, s: int,
    angle: float, shift: float, scale: float = 0.0,
) -> np.ndarray:  # fmt: skip
    """``crop`` px around ``centre`` of photograph ``name``, turned by ``angle`` degrees,
    shifted by up to ``shift`` px and scaled by up to ± ``scale``, resized to ``s``."""
    cx, cy = np.asarray(centre) + rng.uniform(-shift, shift, 2)
    im = _photo(name).rotate(angle, resample=Image.Resampling.BICUBIC, center=(cx, cy))
    half = crop * (1 + rng.uniform(-scale, scale)) / 2
    im = im.resize(
        (s, s), Image.Resampling.LANCZOS, box=(cx - half, cy - half, cx + half, cy + half)
    )
    return np.asarray(im, dtype=np.float64) / 255


def _galaxies(rng: np.random.Generator, split: str, s: int) -> np.ndarray:
    """A 96-px piece of the deep field: the left part (x < 470) trains, the right (x ≥ 530)
    tests; flipped and turned by quarter turns (the sky has no up)."""
    c = 96
    x0, x1 = (0, 470) if split == "train" else (530, 1000)
    x, y = rng.integers(x0, x1 - c + 1), rng.integers(0, 872 - c + 1)
    im = _photo("hubble_deep_field.jpg").crop((x, y, x + c, y + c))
    img = np.asarray(im.resize((s, s), Image.Resampling.LANCZOS), dtype=np.float64) / 255
    return np.rot90(img[:, ::-1] if rng.random() < 0.5 else img, rng.integers(4)).copy()


def _normal(category: str, split: str, rng: np.random.Generator, s: int) -> np.ndarray:
    if category == "foliage":
        img = _foliage(rng, split, s)
    elif category == "dahlia":
        img = _posed(rng, "flower.jpg", (307, 222), 280, s, rng.uniform(0, 360), 6)
    elif category == "portrait":
        img = _posed(rng, "grace_hopper.jpg", (256, 220), 360, s, rng.uniform(-4, 4), 6, 0.03)
    elif category == "galaxies":
        img = _galaxies(rng, split, s)
    else:
        img = _posed(rng, "coffee.png", (285, 200), 360, s, rng.uniform(-6, 6), 6, 0.03)
    return img * rng.uniform(0.92, 1.08) + rng.uniform(-0.03, 0.03)  # exposure, black level


# --------------------------------------------------------------------------- defects
def _polygon(rng: np.random.Generator, s: int, inside: np.ndarray, radius: float) -> np.ndarray:
    ys, xs = np.nonzero(inside)
    k = rng.integers(ys.size)
    ang = np.sort(rng.uniform(0, 2 * math.pi, 7))
    rad = radius * rng.uniform(0.6, 1.0, 7)
    pts = [
        (xs[k] + r * math.cos(a), ys[k] + r * math.sin(a)) for a, r in zip(ang, rad, strict=True)
    ]
    return _draw(s, lambda d: d.polygon(pts, fill=255))


def _foreign(category: str, rng: np.random.Generator, s: int) -> np.ndarray:
    """Content from another photograph: petals on the trees and the portrait, leaves on the
    flower."""
    if category == "dahlia":
        return _foliage(rng, "train", s)
    return _posed(rng, "flower.jpg", (307, 222), 160, s, rng.uniform(0, 360), 20)


def _apply(category: str, defect: str, rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Change ``img`` in place inside a defect region; return that region (the mask)."""
    s = img.shape[0]
    c = (s - 1) / 2
    inside = (
        np.ones((s, s), bool)
        if KINDS[category] == "texture"
        else _ellipse(s, c, c, 0.36 * s, 0.36 * s)
    )
    inside[: s // 10] = inside[-s // 10 :] = False  # keep defects off the border
    inside[:, : s // 10] = inside[:, -s // 10 :] = False
    if defect == "scratch":
        m = _stroke(rng, s, inside, rng.uniform(0.015, 0.03) * s)
        img[m] = img[m] * 0.35 + rng.uniform(0.6, 0.85) * 0.65
    elif defect == "stain":
        m = _blob(rng, s, inside, rng.uniform(0.05, 0.08) * s)
        colour = rng.choice([(0.35, 0.2, 0.1), (0.45, 0.1, 0.35), (0.15, 0.15, 0.4)])
        a = rng.uniform(0.45, 0.65)
        img[m] = img[m] * (1 - a) + np.asarray(colour) * a
    elif defect == "smudge":
        m = _blob(rng, s, inside, rng.uniform(0.07, 0.1) * s)
        img[m] = ndimage.gaussian_filter(img, (3, 3, 0))[m]
    elif defect == "foreign":
        m = _polygon(rng, s, inside, rng.uniform(0.08, 0.13) * s)
        img[m] = _foreign(category, rng, s)[m]
    elif defect == "shift":
        m = _polygon(rng, s, inside, rng.uniform(0.1, 0.15) * s)
        d = rng.integers(4, 9, 2) * rng.choice([-1, 1], 2)
        img[m] = np.roll(img, tuple(d), axis=(0, 1))[m]
    else:
        raise ValueError(f"no drawing code for defect {defect!r}")
    return m


def render_photo(
    category: str, split: str, rng: np.random.Generator, size: int = 96, defect: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One image: (H, W, 3) uint8 and its defect mask (H, W) bool (all False if normal)."""
    if category not in KINDS:
        raise ValueError(f"category must be one of {sorted(KINDS)}, got {category!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"defect must be one of {DEFECTS}, got {defect!r}")
    img = _normal(category, split, rng, size)
    mask = np.zeros((size, size), dtype=bool)
    if defect is not None:
        for _ in range(20):  # a defect too small or too faint to see is drawn again
            trial = img.copy()
            mask = _apply(category, defect, rng, trial)
            if mask.sum() >= 12 and np.abs(trial - img)[mask].mean() >= 0.04:
                img = trial
                break
        else:
            raise RuntimeError(f"could not place a visible {defect} defect on {category}")
    img = img + rng.normal(0, 0.01, img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), mask


def generate_photos(
    root: Path | str, spec: PhotoSpec = PhotoSpec(), categories: tuple[str, ...] | None = None
) -> Path:
    """Write the benchmark under ``root`` (MVTec layout, a ``category.json`` per category
    saying texture or object) with a manifest; returns ``root``. ``categories``: default
    ``CATEGORIES`` (``--data photos``); ``tuple(CONFIRMATION)`` builds the confirmation set
    (``--data folder`` reads it)."""
    root, names = Path(root), _names(categories)
    for cat in names:
        ci = list(KINDS).index(cat)
        jobs = [("train", "good", i) for i in range(spec.n_train)]
        jobs += [("test", "good", i) for i in range(spec.n_test_good)]
        jobs += [("test", d, i) for d in DEFECTS for i in range(spec.n_per_defect)]
        for split, defect, i in jobs:
            di = -1 if defect == "good" else DEFECTS.index(defect)
            rng = np.random.default_rng([spec.seed, 100 + ci, split == "test", di + 1, i])
            img, mask = render_photo(
                cat, split, rng, spec.size, None if defect == "good" else defect
            )
            _save_png(root / cat / split / defect / f"{i:03d}.png", img)
            if defect != "good":
                _save_png(root / cat / "ground_truth" / defect / f"{i:03d}_mask.png",
                          mask.astype(np.uint8) * 255)  # fmt: skip
        (root / cat / "category.json").write_text(json.dumps({"kind": KINDS[cat]}) + "\n")
    (root / MANIFEST).write_text(json.dumps(_manifest(spec, names), indent=2) + "\n")
    return root


def _names(categories: tuple[str, ...] | None) -> tuple[str, ...]:
    """The categories to build: ``CATEGORIES`` by default; unknown names are an error."""
    names = tuple(CATEGORIES) if categories is None else tuple(categories)
    unknown = sorted(set(names) - set(KINDS))
    if unknown:
        raise ValueError(f"no photographic category {unknown}; categories: {sorted(KINDS)}")
    return names


def _manifest(spec: PhotoSpec, names: tuple[str, ...] = tuple(CATEGORIES)) -> dict:
    out = {"generator": "n2n_core.data.photos", "version": VERSION, **asdict(spec)}
    return out if names == tuple(CATEGORIES) else {**out, "categories": list(names)}


def ensure_photos(
    root: Path | str, spec: PhotoSpec = PhotoSpec(), categories: tuple[str, ...] | None = None
) -> Path:
    """Build the photographic benchmark (``categories`` as in ``generate_photos``) at ``root``
    unless the same one is already there (atomically, as
    :func:`n2n_core.data.synthetic.ensure_synthetic`)."""
    names = _names(categories)
    return ensure_generated(
        root, MANIFEST, _manifest(spec, names), lambda tmp: generate_photos(tmp, spec, names)
    )
