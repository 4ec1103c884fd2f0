"""The embedded dataset: an MVTec-layout anomaly benchmark generated from a seed, offline.

Two textures (``weave``, ``grain``) and two objects on a plain background (``cap``, ``chip``),
each image with its own pose, colour and lighting. Test images carry real-looking defects
with pixel-exact masks (the mask is exactly the set of changed pixels). Defects are drawn
here with geometric primitives (strokes, ellipses, polygons, wedges, displaced parts), by
code unrelated to the training-time anomaly synthesis of ``n2n_core.synthesis`` (Perlin
masks), so test scores are not inflated by a detector recognising its own training noise.

Same seed → identical bytes: each image has its own generator seeded by (seed, category,
split, index), and PNGs carry no timestamps.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from n2n_core.data.samples import DatasetError

__all__ = [
    "CATEGORIES", "DEFECTS", "SyntheticSpec", "ensure_generated", "ensure_synthetic", "generate",
    "render",
    "render_instances",
]  # fmt: skip

CATEGORIES = ("weave", "grain", "cap", "chip")
DEFECTS = {
    "weave": ("scratch", "hole", "stain", "foreign"),
    "grain": ("scratch", "hole", "stain", "crack"),
    "cap": ("scratch", "missing", "stain", "misprint"),
    "chip": ("scratch", "missing_pin", "bent_pin", "stain"),
}
VERSION = 1


@dataclass(frozen=True)
class SyntheticSpec:
    seed: int = 0
    size: int = 128
    n_train: int = 40
    n_test_good: int = 10
    n_per_defect: int = 5


# ------------------------------------------------------------------------ primitives
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[:size, :size].astype(np.float64)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled random grid in [-1, 1] (value noise for natural variation)."""
    g = rng.uniform(-1, 1, (cells + 1, cells + 1))
    t = np.linspace(0, cells, size, endpoint=False)
    i, f = t.astype(int), t % 1
    rows = g[i] * (1 - f)[:, None] + g[i + 1] * f[:, None]
    return rows[:, i] * (1 - f) + rows[:, i + 1] * f


def _draw(size: int, fn: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
    im = Image.new("L", (size, size), 0)
    fn(ImageDraw.Draw(im))
    return np.asarray(im) > 0


def _stroke(rng: np.random.Generator, size: int, inside: np.ndarray, width: float) -> np.ndarray:
    """A curved stroke (3-point polyline) starting inside ``inside``."""
    ys, xs = np.nonzero(inside)
    k = rng.integers(ys.size)
    p0 = np.array([xs[k], ys[k]], dtype=float)
    ang = rng.uniform(0, 2 * math.pi)
    length = rng.uniform(0.2, 0.4) * size
    bend = rng.uniform(-0.4, 0.4)
    pts = [p0, p0 + length / 2 * np.array([math.cos(ang), math.sin(ang)])]
    pts.append(pts[1] + length / 2 * np.array([math.cos(ang + bend), math.sin(ang + bend)]))
    w = max(2, round(width))
    return _draw(size, lambda d: d.line([tuple(p) for p in pts], fill=255, width=w, joint="curve"))


def _ellipse(size: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return _draw(size, lambda d: d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255))


def _blob(rng: np.random.Generator, size: int, inside: np.ndarray, radius: float) -> np.ndarray:
    """A union of 3-5 overlapping discs around a point inside ``inside``."""
    ys, xs = np.nonzero(inside)
    k = rng.integers(ys.size)
    out = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(3, 6)):
        dx, dy = rng.normal(0, radius * 0.6, 2)
        r = radius * rng.uniform(0.5, 1.0)
        out |= _ellipse(size, xs[k] + dx, ys[k] + dy, r, r * rng.uniform(0.7, 1.3))
    return out


def _lighting(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = _grid(size) / size - 0.5
    gx, gy = rng.uniform(-0.25, 0.25, 2)
    return 1 + gx * x + gy * y


def _colour(rng: np.random.Generator, base: tuple[float, float, float], jitter: float) -> np.ndarray:
    return np.clip(np.asarray(base) * (1 + rng.normal(0, jitter, 3)), 0, 1)


# ------------------------------------------------------------------------ categories
def _weave(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = _grid(s)
    th = math.radians(rng.uniform(-4, 4))
    u, v = x * math.cos(th) + y * math.sin(th), -x * math.sin(th) + y * math.cos(th)
    p = rng.uniform(7, 9)
    over = (np.floor(u / p) + np.floor(v / p)) % 2 == 0
    thread = np.where(over, np.cos(math.pi * ((v % p) / p - 0.5)), np.cos(math.pi * ((u % p) / p - 0.5)))
    shade = (0.55 + 0.3 * thread + 0.05 * _smooth_noise(rng, s, 6)) * _lighting(rng, s)
    return shade[..., None] * _colour(rng, (0.55, 0.62, 0.78), 0.05), np.ones((s, s), bool)


def _grain(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = _grid(s)
    warp = 0.08 * s * np.sin(2 * math.pi * x / (s * rng.uniform(0.6, 1.0)) + rng.uniform(0, 6.3))
    v = y + warp + 0.04 * s * _smooth_noise(rng, s, 4)
    rings = np.sin(2 * math.pi * v / rng.uniform(9, 12))
    streak = _smooth_noise(rng, s, 24) * 0.05
    shade = (0.6 + 0.12 * rings + streak) * _lighting(rng, s)
    return shade[..., None] * _colour(rng, (0.78, 0.56, 0.34), 0.04), np.ones((s, s), bool)


def _background(
    rng: np.random.Generator, s: int, base: tuple[float, float, float] = (0.16, 0.17, 0.19)
) -> np.ndarray:
    base = _colour(rng, base, 0.05)
    return (1 + 0.04 * _smooth_noise(rng, s, 5))[..., None] * base


def _cap(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray, dict]:
    y, x = _grid(s)
    cy, cx = s / 2 + rng.uniform(-0.03, 0.03, 2) * s
    r, theta = np.hypot(y - cy, x - cx) / s, np.arctan2(y - cy, x - cx)
    rot = rng.uniform(0, 2 * math.pi)
    radius = 0.33 + 0.012 * np.cos(8 * (theta - rot))
    body = r < radius
    ring = np.abs(r - 0.2) < 0.025
    colour, ring_colour = _colour(rng, (0.85, 0.3, 0.18), 0.06), _colour(rng, (0.9, 0.85, 0.75), 0.03)
    shade = ((1.15 - 1.1 * r) * _lighting(rng, s))[..., None]
    plain = np.where(body[..., None], shade * colour, _background(rng, s))  # cap without print
    img = np.where((ring & body)[..., None], shade * ring_colour, plain)
    return img, body, {"ring": ring & body, "centre": (cx, cy), "plain": plain}


def _chip_parts(s: int, cx: float, cy: float, th: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """The package body and its 2 × 4 pins, rotated by ``th`` about (cx, cy)."""
    c, si = math.cos(th), math.sin(th)

    def poly(pts: list[tuple[float, float]]) -> np.ndarray:
        rot = [(cx + (px * c - py * si) * s, cy + (px * si + py * c) * s) for px, py in pts]
        return _draw(s, lambda d: d.polygon(rot, fill=255))

    body = poly([(-0.22, -0.16), (0.22, -0.16), (0.22, 0.16), (-0.22, 0.16)])
    pins = []
    for side in (-1, 1):
        for k in range(4):
            px = -0.165 + k * 0.11
            y0, y1 = side * 0.16, side * 0.27
            pins.append(poly([(px - 0.03, y0), (px + 0.03, y0), (px + 0.03, y1), (px - 0.03, y1)]))
    return body, pins


def _chip(rng: np.random.Generator, s: int) -> tuple[np.ndarray, np.ndarray, dict]:
    cx, cy = s / 2 + rng.uniform(-0.03, 0.03, 2) * s
    th = math.radians(rng.uniform(-6, 6))
    body, pins = _chip_parts(s, cx, cy, th)
    light = _lighting(rng, s)[..., None]
    bench = _background(rng, s, (0.12, 0.3, 0.18)) * light  # a green board; a missing pin reveals it
    img = bench.copy()
    pin_colour = _colour(rng, (0.75, 0.75, 0.72), 0.03)
    for pin in pins:
        img[pin] = pin_colour * light[pin]
    img[body] = _colour(rng, (0.12, 0.12, 0.13), 0.08) * light[body]
    dot = _ellipse(s, cx - 0.14 * s * math.cos(th), cy - 0.14 * s * math.sin(th) - 0.08 * s, 2.5, 2.5)
    img[dot & body] = 0.55
    fg = body | np.any(pins, axis=0)
    return img, fg, {"pins": pins, "body": body, "pose": (cx, cy, th), "bench": bench}


# --------------------------------------------------------------------------- defects
def _apply_defect(
    rng: np.random.Generator, defect: str, img: np.ndarray, fg: np.ndarray, extra: dict, s: int
) -> np.ndarray:
    """Change ``img`` in place inside a defect region; return that region (the mask)."""
    width = rng.uniform(0.016, 0.03) * s
    if defect == "scratch":
        m = _stroke(rng, s, fg & ~extra.get("ring", np.zeros_like(fg)), width) & fg
        img[m] = np.clip(img[m] * 1.6 + 0.25, 0, 1)
    elif defect == "crack":
        m = _stroke(rng, s, fg, width * 1.2) & fg
        img[m] *= 0.25
    elif defect == "hole":
        ys, xs = np.nonzero(fg)
        k = rng.integers(ys.size)
        m = _ellipse(s, xs[k], ys[k], *(rng.uniform(0.03, 0.07, 2) * s)) & fg
        img[m] = rng.uniform(0.02, 0.06)
    elif defect == "stain":
        m = _blob(rng, s, fg, rng.uniform(0.04, 0.07) * s) & fg
        img[m] = img[m] * 0.5 + _colour(rng, (0.6, 0.5, 0.25), 0.2) * 0.5  # dried residue
    elif defect == "foreign":
        ys, xs = np.nonzero(fg)
        k, n = rng.integers(ys.size), 6
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = rng.uniform(0.05, 0.1, n) * s
        pts = [(xs[k] + r * math.cos(a), ys[k] + r * math.sin(a)) for a, r in zip(ang, rad, strict=True)]
        m = _draw(s, lambda d: d.polygon(pts, fill=255)) & fg
        y, x = _grid(s)
        stripes = 0.5 + 0.4 * np.sign(np.sin((x + y) / 2.0))
        img[m] = stripes[m][:, None] * np.array([0.8, 0.75, 0.3])
    elif defect == "missing":  # a wedge of the cap is gone: background shows
        cx, cy = extra["centre"]
        y, x = _grid(s)
        a0, span = rng.uniform(0, 2 * math.pi), rng.uniform(0.35, 0.7)
        ang = (np.arctan2(y - cy, x - cx) - a0) % (2 * math.pi)
        far = np.hypot(y - cy, x - cx) > rng.uniform(0.18, 0.26) * s
        m = fg & (ang < span) & far
        img[m] = _background(rng, s)[m]
    elif defect == "misprint":  # part of the printed ring is missing
        cx, cy = extra["centre"]
        y, x = _grid(s)
        a0 = rng.uniform(0, 2 * math.pi)
        m = extra["ring"] & (((np.arctan2(y - cy, x - cx) - a0) % (2 * math.pi)) < rng.uniform(1.0, 2.5))
        img[m] = extra["plain"][m]
    elif defect == "missing_pin":
        pin = extra["pins"][rng.integers(len(extra["pins"]))]
        m = pin & ~extra["body"]
        img[m] = extra["bench"][m]
    elif defect == "bent_pin":
        k = rng.integers(len(extra["pins"]))
        cx, cy, th = extra["pose"]
        _, moved = _chip_parts(s, cx, cy, th + rng.choice([-1, 1]) * rng.uniform(0.12, 0.2))
        old, new = extra["pins"][k] & ~extra["body"], moved[k] & ~extra["body"]
        colour = img[old].mean(axis=0)
        img[old & ~new] = extra["bench"][old & ~new]  # the overlap stays as it was
        img[new & ~old] = colour
        m = old ^ new
    else:
        raise ValueError(f"no drawing code for defect {defect!r}")
    return m


def render(
    category: str, rng: np.random.Generator, size: int = 128, defect: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: (H, W, 3) uint8, defect mask (H, W) bool, object foreground (H, W) bool."""
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
    if defect is not None and defect not in DEFECTS[category]:
        raise ValueError(f"{category} defects are {DEFECTS[category]}, got {defect!r}")
    if category in ("weave", "grain"):
        img, fg = (_weave if category == "weave" else _grain)(rng, size)
        extra: dict = {}
    else:
        img, fg, extra = (_cap if category == "cap" else _chip)(rng, size)
    mask = np.zeros((size, size), dtype=bool)
    if defect is not None:
        for _ in range(20):  # a defect clipped to nothing is drawn again
            trial = img.copy()
            mask = _apply_defect(rng, defect, trial, fg, extra, size)
            if mask.sum() >= 6:
                img = trial
                break
        else:
            raise RuntimeError(f"could not place a {defect} defect on {category}")
    img = img + rng.normal(0, 0.012, img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), mask, fg


def render_instances(
    rng: np.random.Generator, n: int, size: int = 128
) -> tuple[np.ndarray, list[np.ndarray]]:
    """An image of ``n`` (1-4) capsule-like objects on a plain background, as VisA's candle,
    capsules and macaroni show several instances: (H, W, 3) uint8 and one (H, W) bool mask
    per instance. Each sits in its own quarter of the image, at its own size and angle."""
    if not 1 <= n <= 4:
        raise ValueError(f"n must be 1..4 instances, got {n}")
    y, x = _grid(size)
    img = _background(rng, size)
    instances = []
    for q in rng.permutation(4)[:n]:
        cy, cx = (np.array([q // 2, q % 2]) + 0.5 + rng.uniform(-0.05, 0.05, 2)) * size / 2
        th, rx = rng.uniform(0, math.pi), size * rng.uniform(0.1, 0.15)
        u = (x - cx) * math.cos(th) + (y - cy) * math.sin(th)
        v = -(x - cx) * math.sin(th) + (y - cy) * math.cos(th)
        body = (u / rx) ** 2 + (v / (rx * rng.uniform(0.4, 0.6))) ** 2 < 1
        shade = (1.1 - 0.6 * np.hypot(u, v) / rx)[..., None]
        img = np.where(body[..., None], shade * _colour(rng, (0.85, 0.75, 0.4), 0.1), img)
        instances.append(body)
    img = img + rng.normal(0, 0.012, img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), instances


# ------------------------------------------------------------------------ generation
def _save_png(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, format="PNG", compress_level=6)


def generate(root: Path | str, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write the dataset under ``root`` (MVTec layout) with a manifest; returns ``root``."""
    root = Path(root)
    for ci, cat in enumerate(CATEGORIES):
        jobs = [("train", "good", i) for i in range(spec.n_train)]
        jobs += [("test", "good", i) for i in range(spec.n_test_good)]
        jobs += [("test", d, i) for d in DEFECTS[cat] for i in range(spec.n_per_defect)]
        for split, defect, i in jobs:
            di = -1 if defect == "good" else DEFECTS[cat].index(defect)
            rng = np.random.default_rng([spec.seed, ci, split == "test", di + 1, i])
            img, mask, _ = render(cat, rng, spec.size, None if defect == "good" else defect)
            _save_png(root / cat / split / defect / f"{i:03d}.png", img)
            if defect != "good":
                _save_png(root / cat / "ground_truth" / defect / f"{i:03d}_mask.png",
                          mask.astype(np.uint8) * 255)  # fmt: skip
    manifest = {"generator": "n2n_core.data.synthetic", "version": VERSION, **asdict(spec)}
    (root / "n2n_synthetic.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return root


def ensure_generated(
    root: Path | str, manifest_name: str, want: dict, generate_into: Callable[[Path], object]
) -> Path:
    """Generate a dataset at ``root`` with ``generate_into(folder)`` unless the one described
    by ``want`` (its manifest ``manifest_name``) is already there.

    Written to a temporary sibling folder and moved into place, so an interrupted run never
    leaves half a dataset: a new root is renamed whole; an older generation is replaced entry by
    entry (its category folders; the manifest last, so that a run cut off in between regenerates
    again), and nothing else in the root — a user's own files — is touched. A non-empty folder
    without our manifest is left alone.
    """
    root = Path(root)
    manifest = root / manifest_name
    if manifest.is_file():
        if json.loads(manifest.read_text()) == want:
            return root
    elif root.exists() and any(root.iterdir()):
        raise DatasetError(
            f"{root} exists and is not an n2n generated dataset ({manifest_name} missing); "
            "choose another root"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        try:
            generate_into(tmp)
        except OSError as exc:  # e.g. a full disk: PIL's message names no folder
            raise DatasetError(
                f"could not write the dataset into {root.parent} ({exc}): is the disk full or "
                "read-only? Free space, or choose another --root"
            ) from None
        if not root.exists() or not any(root.iterdir()):
            if root.exists():
                root.rmdir()
            tmp.rename(root)
            return root
        entries = sorted(tmp.iterdir(), key=lambda p: p.name == manifest_name)  # manifest last
        for entry in entries:  # ours, of another version or spec: what we wrote, replaced
            if (root / entry.name).is_dir():
                shutil.rmtree(root / entry.name)
            entry.replace(root / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def ensure_synthetic(root: Path | str, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Generate the embedded dataset at ``root`` unless the same one is already there
    (atomically: :func:`ensure_generated`)."""
    want = {"generator": "n2n_core.data.synthetic", "version": VERSION, **asdict(spec)}
    return ensure_generated(root, "n2n_synthetic.json", want, lambda tmp: generate(tmp, spec))
