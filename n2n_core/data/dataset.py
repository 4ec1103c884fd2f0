"""One torch ``Dataset`` over any list of samples: decode, RGB, resize, scale, binary mask.

Decisions (each tested):
- grayscale and 16-bit images are expanded to 3 channels; an alpha channel is dropped (the
  benchmarks' images are opaque; alpha carries no appearance);
- masks are binarised with ``> 0`` (MVTec stores 0/255, raw VisA small labels, some 0/1),
  JPEG masks with ``> 127`` (their compression spreads grey values around every edge);
- 16-bit images are divided by 257 (their bit depth), whatever their content; floating-point
  images are read as [0, 1] (× 255) when every value lies there, else as [0, 255] (outside
  both: an error); every image and mask is turned upright as its EXIF orientation says;
- a mask with transparency (an alpha channel that is not all opaque) is its opaque pixels:
  masks drawn in a paint program's alpha channel are not read as empty;
- a mask whose size differs from its image is an **error**, not a silent resize: in these
  datasets a size mismatch means a wrong pairing;
- images are resized bilinearly (antialiased), masks with nearest neighbour; or, with
  ``load_size``, as the official DeCo-Diff code does: both resized bicubically to ``load_size``
  (masks then ``> 0``), then the centre ``image_size`` square cropped (288 → 256). A mask is
  resized from its own 8-bit values (``mask_values``: raw VisA labels are small integers,
  which the bicubic resize keeps thinner than their 0/255 version), then ``> 0``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from n2n_core.data.samples import DatasetError, Sample

__all__ = ["AnomalyDataset", "load_image", "load_mask", "load_pair", "mask_values"]


LOSSY = frozenset({".jpg", ".jpeg"})  # mask formats whose compression blurs the 0/255 edges
_warned: set[str] = set()


def _open(path: Path, what: str) -> Image.Image:
    """The decoded image, turned upright as its EXIF orientation says (as viewers show it)."""
    try:
        im = Image.open(path)
        im.load()
        return ImageOps.exif_transpose(im)
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"cannot read {what} {path}: corrupt or not an image ({exc})") from None


def load_image(path: Path | str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any common image file."""
    im = _open(Path(path), "image")
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode != "F":  # 16-bit integer images: scaled by their bit depth, never by content
            a = a / 257.0
        else:
            a = _float_to_255(a, Path(path))
        return np.repeat(np.clip(np.rint(a), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"))


def _float_to_255(a: np.ndarray, path: Path) -> np.ndarray:
    """A floating-point image on the 0..255 scale: [0, 1] is scaled, [0, 255] kept."""
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if not (np.isfinite(a).all() and lo >= 0 and hi <= 255):
        raise DatasetError(
            f"cannot read image {path}: floating-point values in [{lo:g}, {hi:g}] are neither "
            "in [0, 1] nor in [0, 255]; save it as 8- or 16-bit"
        )
    return a * 255.0 if hi <= 1.0 else a


def load_mask(path: Path | str) -> np.ndarray:
    """(H, W) bool: every non-zero pixel is a defect pixel (palette masks: non-zero index). A
    JPEG mask's compression spreads grey values around every edge, so there it is > 127 (half
    of 255), with a warning once per folder."""
    return mask_values(path) > 0


def mask_values(path: Path | str) -> np.ndarray:
    """(H, W) uint8, the values a mask is resized from; defect pixels are the non-zero ones.
    An 8-bit grey mask keeps its own values (raw VisA masks hold small labels, which the
    official loaders resize as they are, then > 0, giving thinner masks than their 0/255
    version); palette and RGB masks are read as grey (``convert("L")``, as those loaders do;
    a non-zero palette index stays a defect); every other kind becomes 0/255: alpha-channel masks
    (the opaque pixels), JPEG (> 127), 1-bit, 16-bit and float masks (> 0)."""
    path = Path(path)
    im = _open(path, "mask")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        alpha = np.asarray(im.getchannel("A"))
        if (alpha < 255).any():  # drawn in the alpha channel: the opaque pixels are the defect
            return _binary(alpha > 127 if path.suffix.lower() in LOSSY else alpha > 0)
    if im.mode == "P":  # as the official loaders read it (grey), a non-zero index stays > 0
        index, grey = np.asarray(im), np.asarray(im.convert("L"))
        return np.where(index > 0, np.maximum(grey, 1), 0).astype(np.uint8)
    single = im.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F")
    a = np.asarray(im if single else im.convert("L"))
    if path.suffix.lower() in LOSSY:
        if str(path.parent) not in _warned:
            _warned.add(str(path.parent))
            warnings.warn(
                f"masks in {path.parent} are JPEG (lossy): thresholded at 128 instead of > 0; "
                "save masks as PNG to keep them exact",
                stacklevel=2,
            )
        return _binary(a > 127)
    return a if a.dtype == np.uint8 else _binary(a > 0)


def _binary(a: np.ndarray) -> np.ndarray:
    return a.astype(np.uint8) * np.uint8(255)


def load_pair(s: Sample, values: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A sample's image (H, W, 3) uint8 and mask (H, W) bool (all False for a normal image;
    ``values``: its uint8 ``mask_values``); a mask of another size than its image is an error
    naming both files."""
    img = load_image(s.image)
    if s.mask is None:
        mask = np.zeros(img.shape[:2], dtype=np.uint8)
    else:
        mask = mask_values(s.mask)
    if mask.shape != img.shape[:2]:
        raise DatasetError(
            f"mask {s.mask} is {mask.shape[1]}x{mask.shape[0]} but its image {s.image} is "
            f"{img.shape[1]}x{img.shape[0]}: a size mismatch means a wrong pairing"
        )
    return img, (mask if values else mask > 0)


def _resize(a: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    if a.shape[0] == a.shape[1] == size:
        return a
    im = Image.fromarray(_binary(a) if a.dtype == bool else a)
    im = im.resize((size, size), Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR)
    return np.asarray(im)


def _resize_crop(a: np.ndarray, load_size: int, size: int) -> np.ndarray:
    """Bicubic resize to load_size (a bool mask: its 0/255 image), centre crop size."""
    im = Image.fromarray(_binary(a) if a.dtype == bool else a)
    out = np.asarray(im.resize((load_size, load_size), Image.Resampling.BICUBIC))
    top = round((load_size - size) / 2)
    return out[top : top + size, top : top + size]


MASK_RULES = ("nearest", "bilinear_full")


def bilinear_full(mask: np.ndarray, size: int) -> torch.Tensor:
    """The official DiffusionAD ground truth: the 0/255 mask resized bilinearly (half-pixel
    centres, no antialiasing, as ``cv2.resize``'s default), divided by 255 and cast to int —
    a pixel is a defect only where every source pixel it interpolates is one, so masks thin
    (and defects narrower than a source step vanish). (size, size) bool."""
    m = torch.from_numpy(mask.astype(np.float64))[None, None]
    out = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
    return out[0, 0] >= 1 - 1e-9


class AnomalyDataset(torch.utils.data.Dataset):
    """Samples → dicts with ``image`` (3, S, S) float32 in ``value_range``, ``mask`` (1, S, S)
    float32 in {0, 1} (zeros for normal images), ``label``, ``index`` and ``path``.

    ``foreground``: optional per-sample (H, W) bool masks (see ``n2n_core.data.foreground``),
    returned resized as ``foreground`` (1, S, S); None entries mean "whole image".
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        image_size: int = 256,
        value_range: tuple[float, float] = (-1.0, 1.0),
        foreground: Sequence[np.ndarray | None] | None = None,
        load_size: int | None = None,
        mask_rule: str = "nearest",
    ) -> None:
        if not samples:
            raise DatasetError("no samples: the split is empty")
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {image_size}")
        lo, hi = value_range
        if not lo < hi:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        if foreground is not None and len(foreground) != len(samples):
            raise ValueError(f"foreground has {len(foreground)} masks for {len(samples)} samples")
        if mask_rule not in MASK_RULES:
            raise ValueError(f"mask_rule must be one of {MASK_RULES}, got {mask_rule!r}")
        if load_size is not None and load_size < image_size:
            raise ValueError(f"load_size {load_size} must be at least image_size {image_size}")
        self.samples, self.image_size, self.value_range = list(samples), image_size, value_range
        self.foreground, self.load_size, self.mask_rule = foreground, load_size, mask_rule

    def _fit(self, a: np.ndarray, nearest: bool) -> np.ndarray:
        if self.load_size is not None:
            return _resize_crop(a, self.load_size, self.image_size)
        return _resize(a, self.image_size, nearest)

    def _fit_mask(self, values: np.ndarray, rule: str = "nearest") -> torch.Tensor:
        """(1, S, S) float {0, 1}: the mask's values (or a bool mask) resized, then > 0; with
        ``rule="bilinear_full"`` only the pixels that bilinear interpolation keeps full."""
        if rule == "bilinear_full" and self.load_size is None:
            return bilinear_full(values > 0, self.image_size)[None].float()
        return torch.from_numpy(self._fit(values, nearest=True) > 0)[None].float()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, object]:
        s = self.samples[index]
        img, mask = load_pair(s, values=True)
        lo, hi = self.value_range
        x = torch.from_numpy(self._fit(img, nearest=False).copy())
        item: dict[str, object] = {
            "image": x.permute(2, 0, 1).float().mul_((hi - lo) / 255.0).add_(lo),
            "mask": self._fit_mask(mask, self.mask_rule),
            "label": s.label,
            "index": index,
            "path": str(s.image),
        }
        if self.foreground is not None:
            fg = self.foreground[index]
            fg = np.ones(img.shape[:2], dtype=bool) if fg is None else fg
            item["foreground"] = self._fit_mask(fg)
        return item
