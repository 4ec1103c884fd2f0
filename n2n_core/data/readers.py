"""Dataset readers: every supported layout → one list of :class:`Sample`.

- ``mvtec`` / ``folder`` / ``synthetic`` / ``photos``: ``<cat>/train/good``, ``<cat>/test/<defect>``,
  ``<cat>/ground_truth/<defect>/<stem>_mask.png`` (``<stem>.png`` also accepted). Masks are
  paired with images by file stem, never by sorted position.
- ``visa``: the raw release (``<cat>/Data/Images/{Normal,Anomaly}`` with
  ``split_csv/1cls.csv``) or the converted 1-class layout (``<cat>/train/good``,
  ``test/{good,bad}``, ``ground_truth/bad/<stem>.png``), detected per category.
- ``dagm``: DAGM 2007 (``ClassN/{Train,Test}/NNNN.PNG``, ``…/Label/Labels.txt``,
  ``…/Label/NNNN_label.PNG``), unsupervised protocol: the train split holds only the normal
  training images; the test split holds every test image.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from n2n_core.data.samples import DatasetError, Sample, list_images

__all__ = ["SOURCES", "category_kind", "is_texture", "list_categories", "load_samples"]

SOURCES = ("synthetic", "photos", "mvtec", "visa", "dagm", "folder")
GENERATED = {"synthetic": "n2n_synthetic.json", "photos": "n2n_photos.json"}  # built on first use
_TEXTURES = {
    "mvtec": {"carpet", "grid", "leather", "tile", "wood"},
    "synthetic": {"weave", "grain"},
}
_HINTS = {
    "mvtec": "get it with `python -m n2n_core download mvtec --root DIR` (DIR/mvtec)",
    "visa": "get it with `python -m n2n_core download visa --root DIR` (DIR/visa)",
    "dagm": "get it with `python -m n2n_core download dagm --root DIR` (DIR/dagm)",
    "folder": "point --root at an MVTec-style tree (train/good, test/<defect>, ground_truth/)",
    "synthetic": "it is generated there on first use",
    "photos": "it is built there on first use (`python -m n2n_core data photos`)",
}
KINDS = ("texture", "object")


def is_texture(source: str, category: str, root: Path | str | None = None) -> bool:
    """Texture categories use the whole image as foreground (DAGM: all ten classes). A
    ``folder`` or ``photos`` category says which it is in ``category.json``, or its images
    decide (:func:`category_kind`; needs ``root``; without it: an object)."""
    if source == "dagm" or category in _TEXTURES.get(source, set()):
        return True
    if source in ("folder", "photos") and root is not None:
        return category_kind(source, root, category) == "texture"
    return False


def category_kind(source: str, root: Path | str, category: str) -> str:
    """``"texture"`` or ``"object"`` for a category of an MVTec-style tree: as its
    ``<category>/category.json`` says (``{"kind": "texture"}``), else decided from its training
    images — a texture when nothing stands out from the border on most of them
    (:func:`n2n_core.data.foreground.looks_like_texture`)."""
    root = Path(root)
    cat_dir = (_folder_root(root)[0] if source == "folder" else root) / category
    declared = cat_dir / "category.json"
    if declared.is_file():
        try:
            kind = json.loads(declared.read_text()).get("kind")
        except (ValueError, AttributeError):
            kind = None
        if kind not in KINDS:
            raise DatasetError(f'{declared} must read {{"kind": "texture"}} or {{"kind": "object"}}')
        return kind
    from n2n_core.data.foreground import looks_like_texture

    return "texture" if looks_like_texture(load_samples(source, root, category, "train")) else "object"


# ------------------------------------------------------------------------- MVTec style
def _mvtec_categories(root: Path) -> list[str]:
    return sorted(
        d.name
        for d in root.iterdir()
        if not d.name.startswith(".") and ((d / "train").is_dir() or (d / "test").is_dir())
    )


def _masks_by_stem(gt_dir: Path) -> dict[str, Path]:
    if not gt_dir.is_dir():
        return {}
    return {p.stem.removesuffix("_mask"): p for p in list_images(gt_dir)}


def _read_mvtec_style(cat_dir: Path, category: str, split: str) -> list[Sample]:
    if split == "train":
        folder = cat_dir / "train" / "good"
        if not folder.is_dir():
            raise DatasetError(f"train split missing: expected the folder {folder}")
        images = list_images(folder)
        if not images:
            raise DatasetError(f"empty train split: no images in {folder}")
        return [Sample(p, None, 0, "good", category, "train") for p in images]
    test_dir = cat_dir / "test"
    if not test_dir.is_dir():
        raise DatasetError(f"test split missing: expected the folder {test_dir}")
    samples = []
    # hidden folders (.ipynb_checkpoints, macOS metadata) are not defect types
    for defect_dir in sorted(
        d for d in test_dir.iterdir() if d.is_dir() and not d.name.startswith(".")
    ):
        defect = defect_dir.name
        if defect == "good":
            samples += [Sample(p, None, 0, "good", category, "test") for p in list_images(defect_dir)]
            continue
        gt_dir = cat_dir / "ground_truth" / defect
        masks = _masks_by_stem(gt_dir)
        for p in list_images(defect_dir):
            if p.stem not in masks:
                raise DatasetError(
                    f"anomalous test image {p} has no mask: expected {gt_dir / (p.stem + '_mask.png')}"
                )
            samples.append(Sample(p, masks[p.stem], 1, defect, category, "test"))
    if not samples:
        raise DatasetError(f"empty test split: no images under {test_dir}")
    return samples


# -------------------------------------------------------------------------------- VisA
def _visa_categories(root: Path) -> list[str]:
    return sorted(
        d.name
        for d in root.iterdir()
        if (d / "Data" / "Images").is_dir() or (d / "train").is_dir() or (d / "test").is_dir()
    )


def _read_visa_raw(root: Path, category: str, split: str) -> list[Sample]:
    csv_path = root / "split_csv" / "1cls.csv"
    if not csv_path.is_file():
        raise DatasetError(
            f"{csv_path} not found: the raw VisA layout needs the split file that ships in "
            "VisA_20220922.tar (split_csv/1cls.csv, columns object,split,label,image,mask)"
        )
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"object", "split", "label", "image", "mask"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{csv_path} lacks the column(s) {sorted(missing)}")
        rows = [(n, r) for n, r in enumerate(reader, start=2) if r["object"] == category]
    samples = []
    for n, row in rows:
        if row["split"] != split:
            continue
        if row["label"] not in ("normal", "anomaly"):
            raise DatasetError(f"{csv_path}:{n}: label must be normal or anomaly, got {row['label']!r}")
        label = int(row["label"] == "anomaly")
        image = root / row["image"]
        if not image.is_file():
            raise DatasetError(f"{csv_path}:{n} names {image}, which does not exist")
        mask = root / row["mask"] if label else None
        if label and (not row["mask"] or not mask.is_file()):
            raise DatasetError(f"anomalous image {image} has no mask ({csv_path}:{n})")
        samples.append(Sample(image, mask, label, "bad" if label else "good", category, split))
    if split == "train" and not samples:
        raise DatasetError(f"empty train split: {csv_path} has no train rows for {category!r}")
    return samples


def _read_visa(root: Path, category: str, split: str) -> list[Sample]:
    if (root / category / "Data").is_dir():
        return _read_visa_raw(root, category, split)
    return _read_mvtec_style(root / category, category, split)


# -------------------------------------------------------------------------------- DAGM
def _dagm_categories(root: Path) -> list[str]:
    found = [d.name for d in root.iterdir() if re.fullmatch(r"Class\d+", d.name) and d.is_dir()]
    return sorted(found, key=lambda name: int(name[5:]))


def _dagm_labels(path: Path) -> list[tuple[str, bool, str | None]]:
    """Labels.txt: one header line, then ``id  defective  image  0  label-file``."""
    if not path.is_file():
        raise DatasetError(f"DAGM label file {path} not found")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 5 or fields[1] not in ("0", "1"):
            raise DatasetError(
                f"{path}:{n}: expected 5 fields (id, defective 0/1, image, 0, label file), "
                f"got {line!r}"
            )
        defective = fields[1] == "1"
        rows.append((fields[2], defective, fields[4] if defective else None))
    return rows


def _read_dagm(root: Path, category: str, split: str) -> list[Sample]:
    part = root / category / ("Train" if split == "train" else "Test")
    samples = []
    for image_name, defective, label_name in _dagm_labels(part / "Label" / "Labels.txt"):
        if split == "train" and defective:
            continue  # unsupervised protocol: train on normal images only
        image = part / image_name
        if not image.is_file():
            raise DatasetError(f"{part / 'Label' / 'Labels.txt'} names {image}, which does not exist")
        mask = part / "Label" / label_name if label_name else None
        if mask is not None and not mask.is_file():
            raise DatasetError(f"anomalous image {image} has no mask: expected {mask}")
        samples.append(Sample(image, mask, int(defective), "defect" if defective else "good",
                              category, split))  # fmt: skip
    if not samples:
        raise DatasetError(f"empty {split} split: no usable images listed under {part}")
    return samples


# ---------------------------------------------------------------------------- registry
def _folder_root(root: Path) -> tuple[Path, list[str]]:
    """``folder`` accepts a tree of categories or one category folder itself."""
    if (root / "train").is_dir() or (root / "test").is_dir():
        return root.parent, [root.name]
    return root, _mvtec_categories(root)


def list_categories(source: str, root: Path | str) -> list[str]:
    root = _check_root(source, Path(root))
    if source in ("mvtec", *GENERATED):
        return _mvtec_categories(root)
    if source == "folder":
        return _folder_root(root)[1]
    if source == "visa":
        return _visa_categories(root)
    return _dagm_categories(root)


def _check_root(source: str, root: Path) -> Path:
    if source not in SOURCES:
        raise DatasetError(f"data source must be one of {list(SOURCES)}, got {source!r}")
    if source in GENERATED and not (root / GENERATED[source]).is_file():
        ensure_generated_source(source, root)  # first use: generate; an existing one is read as is
    if root.exists() and not root.is_dir():
        raise DatasetError(f"dataset root {root} is a file, not a folder ({source}: {_HINTS[source]})")
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist ({source}: {_HINTS[source]})")
    return root


def ensure_generated_source(source: str, root: Path | str) -> Path:
    """Generate one of the built-in datasets (``synthetic``, ``photos``) at ``root`` unless the
    same one is there."""
    if source == "synthetic":
        from n2n_core.data.synthetic import ensure_synthetic

        return ensure_synthetic(root)
    if source == "photos":
        from n2n_core.data.photos import ensure_photos

        return ensure_photos(root)
    raise ValueError(f"{source!r} is not a generated dataset; those are {sorted(GENERATED)}")


def load_samples(source: str, root: Path | str, category: str, split: str) -> list[Sample]:
    """All samples of one category and split (``"train"`` or ``"test"``) of a dataset."""
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    found = list_categories(source, root)
    if category not in found:
        raise DatasetError(
            f"unknown category {category!r} under {root}; found: {', '.join(found) or 'none'}"
        )
    root = Path(root)
    if source == "folder":
        root = _folder_root(root)[0]
    if source == "visa":
        return _read_visa(root, category, split)
    if source == "dagm":
        return _read_dagm(root, category, split)
    return _read_mvtec_style(root / category, category, split)
