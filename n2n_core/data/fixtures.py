"""Tiny dummy datasets in each real layout: notebook 02 runs the readers on them offline, and
the tests use them for every layout.

Every writer returns the dataset root and puts a bright square in each anomalous image,
exactly where its mask is non-zero, so a reader that pairs masks wrongly is caught.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["write_dagm", "write_mvtec", "write_visa_converted", "write_visa_raw"]


def _pair(
    rng: np.random.Generator, size: int, anomalous: bool, mode: str = "RGB"
) -> tuple[np.ndarray, np.ndarray]:
    img = rng.integers(40, 120, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=np.uint8)
    if anomalous:
        y, x = rng.integers(0, size - size // 4, 2)
        mask[y : y + size // 4, x : x + size // 4] = 1
        img[mask > 0] = 250
    if mode == "L":
        img = img[..., 0]
    return img, mask


def _save(path: Path, a: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def write_mvtec(
    root: Path | str,
    categories: tuple[str, ...] = ("bottle", "carpet"),
    defects: tuple[str, ...] = ("broken", "scratch"),
    n_train: int = 4,
    n_test: int = 2,
    size: int = 32,
    mask_scale: int = 255,
    mask_name: str = "{stem}_mask.png",
    gt_folder: str = "ground_truth",
    seed: int = 0,
) -> Path:
    """MVTec AD layout; ``mask_scale=1`` stores masks as 0/1, ``mask_name="{stem}.png"`` and
    ``defects=("bad",)`` give the converted-VisA flavour."""
    root, rng = Path(root), np.random.default_rng(seed)
    for cat in categories:
        for i in range(n_train):
            _save(root / cat / "train" / "good" / f"{i:03d}.png", _pair(rng, size, False)[0])
        for defect in ("good", *defects):
            for i in range(n_test):
                img, mask = _pair(rng, size, defect != "good")
                _save(root / cat / "test" / defect / f"{i:03d}.png", img)
                if defect != "good":
                    name = mask_name.format(stem=f"{i:03d}")
                    _save(root / cat / gt_folder / defect / name, mask * mask_scale)
    return root


def write_visa_converted(
    root: Path | str, categories: tuple[str, ...] = ("candle",), **kw: object
) -> Path:
    """The common converted 1-class VisA layout: test/{good,bad}, ground_truth/bad/<stem>.png."""
    return write_mvtec(root, categories, defects=("bad",), mask_name="{stem}.png", **kw)  # type: ignore[arg-type]


def write_visa_raw(
    root: Path | str,
    categories: tuple[str, ...] = ("candle", "pcb1"),
    n_normal: int = 6,
    n_anomaly: int = 3,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """The raw release: <cat>/Data/Images/{Normal,Anomaly}/*.JPG, Masks/Anomaly/*.png with
    small labels (not 0/255), and split_csv/1cls.csv; the first 4 normals are train."""
    root, rng = Path(root), np.random.default_rng(seed)
    rows = []
    for cat in categories:
        for i in range(n_normal):
            rel = f"{cat}/Data/Images/Normal/{i:04d}.JPG"
            _save(root / rel, _pair(rng, size, False)[0])
            rows.append([cat, "train" if i < 4 else "test", "normal", rel, ""])
        for i in range(n_anomaly):
            img, mask = _pair(rng, size, True)
            rel = f"{cat}/Data/Images/Anomaly/{i:03d}.JPG"
            _save(root / rel, img)
            mrel = f"{cat}/Data/Masks/Anomaly/{i:03d}.png"
            _save(root / mrel, mask * (i + 1))  # raw VisA masks hold small labels
            rows.append([cat, "test", "anomaly", rel, mrel])
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with (root / "split_csv" / "1cls.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["object", "split", "label", "image", "mask"])
        w.writerows(rows)
    return root


def write_dagm(
    root: Path | str,
    classes: tuple[int, ...] = (1, 2),
    n_normal: int = 4,
    n_defective: int = 2,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """DAGM 2007: ClassN/{Train,Test}/NNNN.PNG (grayscale), Label/Labels.txt, NNNN_label.PNG."""
    root, rng = Path(root), np.random.default_rng(seed)
    for c in classes:
        for part in ("Train", "Test"):
            lines = ["1"]  # the header line of the original files
            for i in range(n_normal + n_defective):
                defective = i >= n_normal
                img, mask = _pair(rng, size, defective, mode="L")
                name = f"{i + 1:04d}.PNG"
                _save(root / f"Class{c}" / part / name, img)
                label = f"{i + 1:04d}_label.PNG" if defective else "0"
                if defective:
                    _save(root / f"Class{c}" / part / "Label" / label, mask * 255)
                lines.append(f"{i + 1}\t{int(defective)}\t{name}\t0\t{label}")
            label_file = root / f"Class{c}" / part / "Label" / "Labels.txt"
            label_file.parent.mkdir(parents=True, exist_ok=True)
            label_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
