"""The exercises: for each, fixed random cases and what a correct answer gives on them,
computed by ``n2n_core`` itself or by a closed form / a second library (never by the worked
solution). Cases are seeded, so a verdict is the same on every run."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["EXERCISES", "Exercise", "compare"]

Case = tuple[tuple, object, str]  # (arguments, expected result, "for t = 37"-style label)


@dataclass(frozen=True)
class Exercise:
    key: str  # "<lesson>.<name>"
    title: str
    cases: Callable[[], Iterator[Case]]
    solution: str  # the function's name in n2n_core/course/solutions.py
    passed: str  # what "correct" means, said to the student
    atol: float = 1e-5


def _fmt(x: object) -> str:
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape}"
    return f"{type(x).__name__} {x!r}"


def compare(expected: object, got: object, atol: float) -> str | None:
    """None when ``got`` equals ``expected`` (to ``atol``), else what differs, in words."""
    if isinstance(expected, tuple):
        if not isinstance(got, tuple | list) or len(got) != len(expected):
            return f"expected {len(expected)} results (a tuple), got {_fmt(got)}"
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            problem = compare(e, g, atol)
            if problem:
                return f"result {i + 1}: {problem}"
        return None
    if isinstance(expected, Tensor | np.ndarray):
        e = torch.as_tensor(np.asarray(expected) if isinstance(expected, np.ndarray) else expected)
        try:
            g = torch.as_tensor(got.detach() if isinstance(got, Tensor) else np.asarray(got))
        except (TypeError, ValueError):
            return f"expected {_fmt(expected)}, got {_fmt(got)}"
        if g.shape != e.shape:
            return f"expected shape {tuple(e.shape)}, got shape {tuple(g.shape)}"
        diff = (g.double() - e.double()).abs()
        if not bool(torch.isfinite(g.double()).all()):
            return "your result has NaN or infinite values"
        if float(diff.max()) > atol:
            at = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), tuple(e.shape)))
            return (
                f"at index {at} expected {float(e[at]):.6g}, got {float(g[at]):.6g} "
                f"(largest difference {float(diff.max()):.3g})"
            )
        return None
    try:
        g = float(got)
    except (TypeError, ValueError):
        return f"expected a number, got {_fmt(got)}"
    if not math.isfinite(g) or abs(g - float(expected)) > atol * max(1.0, abs(float(expected))):
        return f"expected {float(expected):.6g}, got {g:.6g}"
    return None


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ 01 forward diffusion
def _schedule(kind: str, T: int):
    """DiffusionAD's linear schedule (T = 1000) or DeCo-Diff's cosine one (T = 10)."""
    from n2n_core.schedules import make_schedule

    return make_schedule(kind, T)


def _q_sample() -> Iterator[Case]:
    from n2n_core.schedules import q_sample

    s, g = _schedule("linear", 1000), _gen(1)
    for t in (1, 37, 250, 999, 1000):
        x0, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
        yield (x0, t, s.alpha_bar, eps), q_sample(x0, t, s, eps), f"t = {t}"


def _predict_x0() -> Iterator[Case]:
    from n2n_core.schedules import predict_x0

    s, g = _schedule("linear", 1000), _gen(2)
    for t in (1, 50, 200, 700):
        xt, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
        yield (xt, t, s.alpha_bar, eps), predict_x0(xt, t, s, eps), f"t = {t}"


def _amplification() -> Iterator[Case]:
    """k_t measured: the rms error of x̂0 (library) per unit rms error of the noise."""
    from n2n_core.schedules import predict_x0, q_sample

    s, g = _schedule("linear", 1000), _gen(3)
    x0, eps = torch.randn(1, 4096, generator=g).double(), torch.randn(1, 4096, generator=g)
    delta = 0.1 * torch.randn(1, 4096, generator=g).double()
    for t in (10, 100, 400, 900):
        xt = q_sample(x0, t, s, eps.double())
        err = predict_x0(xt, t, s, eps.double() + delta) - x0
        k = float(err.pow(2).mean().sqrt() / delta.pow(2).mean().sqrt())
        yield (float(s.alpha_bar[t]),), k, f"alpha_bar_t = {float(s.alpha_bar[t]):.4f} (t = {t})"


# ------------------------------------------------------------------ 02 datasets
def _to_model_range() -> Iterator[Case]:
    """The image tensor AnomalyDataset returns for a PNG of these pixels."""
    import tempfile
    from pathlib import Path

    from PIL import Image

    from n2n_core.data import AnomalyDataset
    from n2n_core.data.samples import Sample

    rng = np.random.default_rng(4)
    with tempfile.TemporaryDirectory() as tmp:
        for size in (8, 16):
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            path = Path(tmp) / f"{size}.png"
            Image.fromarray(img).save(path)
            sample = Sample(image=path, mask=None, label=0, defect="good", category="x",
                            split="test")  # fmt: skip
            expected = AnomalyDataset([sample], image_size=size)[0]["image"]
            yield (img,), expected, f"a {size} × {size} image"


def _background_colour() -> Iterator[Case]:
    rng = np.random.default_rng(5)
    for h, w, border in ((40, 40, 0.1), (64, 48, 0.06)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        b = max(1, round(border * min(h, w)))
        ring = np.ones((h, w), dtype=bool)
        ring[b:-b, b:-b] = False
        yield (img, border), np.median(img[ring].astype(np.float64), axis=0), f"{h} × {w}"


# ------------------------------------------------------------------ 03 anomaly synthesis
def _blend() -> Iterator[Case]:
    from n2n_core.synthesis import blend

    g = _gen(6)
    for beta in (0.2, 0.5, 0.79):
        n, a = torch.rand(3, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g)
        m = (torch.rand(1, 16, 16, generator=g) > 0.6).float()
        yield (n, a, m, beta), blend(n, a, m, beta), f"beta = {beta}"


def _anomaly_region() -> Iterator[Case]:
    g = _gen(7)
    for thr in (0.3, 0.5):
        noise = torch.rand(32, 32, generator=g) * 2 - 1
        fg = torch.rand(32, 32, generator=g) > 0.3
        yield (noise, thr, fg), ((noise > thr) & fg).float(), f"threshold = {thr}"


# ------------------------------------------------------------------ 04 metrics
def _auroc() -> Iterator[Case]:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(8)
    for n, p, decimals in ((10, 6, 3), (30, 12, 1), (5, 5, 0)):  # rounding makes ties
        normal = np.round(rng.normal(0, 1, n), decimals)
        anomalous = np.round(rng.normal(1, 1, p), decimals)
        y = np.r_[np.zeros(n), np.ones(p)]
        expected = roc_auc_score(y, np.r_[normal, anomalous])
        yield (normal, anomalous), expected, f"{n} normal and {p} anomalous scores"


def _pro_at() -> Iterator[Case]:
    from scipy import ndimage

    rng = np.random.default_rng(9)
    for thr in (0.4, 0.7):
        amap = rng.random((24, 24))
        mask = np.zeros((24, 24), dtype=bool)
        mask[2:6, 3:9] = mask[12:20, 14:16] = mask[20:23, 2:4] = True
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        overlaps = [float((amap[labels == r] >= thr).mean()) for r in range(1, n + 1)]
        yield (amap, mask, thr), float(np.mean(overlaps)), f"threshold = {thr}"


# ------------------------------------------------------------------ 05 DiffusionAD training
def _focal() -> Iterator[Case]:
    from n2n_core.methods.diffusionad import focal_loss

    g = _gen(10)
    for alpha, gamma in ((0.5, 4.0), (0.25, 2.0)):
        p = torch.rand(2, 1, 8, 8, generator=g) * 0.98 + 0.01
        y = (torch.rand(2, 1, 8, 8, generator=g) > 0.7).float()
        yield (p, y, alpha, gamma), focal_loss(p, y, alpha, gamma), f"α = {alpha}, γ = {gamma}"


def _mask_loss() -> Iterator[Case]:
    import torch.nn.functional as F

    from n2n_core.methods.diffusionad import DiffusionADConfig, focal_loss

    cfg, g = DiffusionADConfig(), _gen(11)
    for _ in range(2):
        p = torch.rand(2, 1, 8, 8, generator=g) * 0.98 + 0.01
        y = (torch.rand(2, 1, 8, 8, generator=g) > 0.7).float()
        expected = F.smooth_l1_loss(p, y) + cfg.gamma * focal_loss(p, y)
        yield (p, y), expected, "a 2 × 8 × 8 prediction"


# ------------------------------------------------------------------ 06 DiffusionAD inference
def _top_k() -> Iterator[Case]:
    from n2n_core.methods.diffusionad import top_k_score

    g = _gen(12)
    for k in (1, 4, 50):
        maps = torch.rand(3, 1, 16, 16, generator=g)
        yield (maps, k), top_k_score(maps, k), f"k = {k}"


def _alg2_score() -> Iterator[Case]:
    from n2n_core.methods.diffusionad import top_k_score

    g = _gen(13)
    for n_lambdas in (1, 2, 3):
        maps = [torch.rand(2, 1, 16, 16, generator=g) for _ in range(n_lambdas)]
        expected = top_k_score(torch.stack(maps).mean(0), 4)
        yield (maps, 4), expected, f"{n_lambdas} values of λ"


# ------------------------------------------------------------------ 07 deviation formulation
def _z0_tilde(z: Tensor, delta: Tensor, s, t: int) -> Tensor:
    """Eq. 13 by the library: one z_0-strategy step of deviation.correct with a constant δ."""
    from n2n_core.deviation import correct

    return correct(lambda z_, t_: delta, z, s, [t], strategy="z_0")[0]


def _masked_forward() -> Iterator[Case]:
    from n2n_core.deviation import masked_forward

    s, g = _schedule("cosine", 10), _gen(14)
    for t in (1, 5, 10):
        z0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        mask = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
        yield (
            (z0, float(s.alpha_bar[t]), mask, eps),
            masked_forward(z0, t, s, mask, eps),
            (f"t = {t}"),
        )


def _dod_target() -> Iterator[Case]:
    from n2n_core.deviation import dod_target

    s, g = _schedule("cosine", 10), _gen(15)
    for t in (1, 4, 9):
        zt, z0 = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        yield (zt, z0, float(s.alpha_bar[t])), dod_target(zt, z0, t, s), f"t = {t}"


def _correction_step() -> Iterator[Case]:
    """(z̃0, z_next): z̃0 from deviation.correct (Eq. 13); z_next by Eq. 14's definition."""

    s, g = _schedule("cosine", 10), _gen(16)
    for t, t_next in ((10, 8), (4, 2), (2, 0)):
        z, delta = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        z0_tilde = _z0_tilde(z, delta, s, t)
        z_next = z0_tilde + math.sqrt(1 - float(s.alpha_bar[t_next])) * delta
        ab, ab_next = float(s.alpha_bar[t]), float(s.alpha_bar[t_next])
        yield (z, delta, ab, ab_next), (z0_tilde, z_next), f"t = {t} → {t_next}"


# ------------------------------------------------------------------ 08 latent space
def _psnr() -> Iterator[Case]:
    from n2n_core.models.vae import psnr

    g = _gen(17)
    for noise in (0.01, 0.1, 0.5):
        x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
        y = (x + noise * torch.randn(2, 3, 16, 16, generator=g)).clamp(-1, 1)
        yield (x, y), psnr(x, y), f"noise {noise}"


def _unit_scale() -> Iterator[Case]:
    g = _gen(18)
    for std in (0.2, 5.0):
        z = std * torch.randn(64, 4, 8, 8, generator=g) + 0.3
        yield (z,), 1 / float(z.std()), f"latents of std ≈ {std}"


# ------------------------------------------------------------------ 09 DeCo-Diff
def _eq15() -> Iterator[Case]:
    """Eq. 15's geometric map without the blur: discrepancy_maps with σ = 0."""
    from n2n_core.deviation import discrepancy_maps

    g = _gen(19)
    for scale in (0.1, 1.0):
        z0, x0 = torch.randn(2, 4, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
        z0t = z0 + scale * torch.randn(2, 4, 16, 16, generator=g)
        x0t = (x0 + scale * torch.randn(2, 3, 16, 16, generator=g)).clamp(-1, 1)
        maps = discrepancy_maps(z0, z0t, x0, x0t, sigma_l=0, sigma_p=0)
        yield (z0, z0t, x0, x0t), maps["geometric"], f"deviations of scale {scale}"


def _z0_strategy() -> Iterator[Case]:

    s, g = _schedule("cosine", 10), _gen(20)
    for t in (10, 6, 3):
        z, delta = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        z0_tilde = _z0_tilde(z, delta, s, t)
        yield (z, delta, float(s.alpha_bar[t])), z0_tilde, f"t = {t}"


# ------------------------------------------------------------------ 12 your own method
def _baseline_map() -> Iterator[Case]:
    """The mean-image baseline's map: mean absolute difference over RGB, (B, 1, H, W)."""
    g = _gen(21)
    for b in (1, 3):
        mu, images = torch.rand(1, 3, 8, 8, generator=g), torch.rand(b, 3, 8, 8, generator=g)
        yield (mu, images), (images - mu).abs().mean(1, keepdim=True), f"a batch of {b}"


def _baseline_score() -> Iterator[Case]:
    g = _gen(22)
    for b in (1, 4):
        maps = torch.rand(b, 1, 8, 8, generator=g)
        yield (maps,), maps.flatten(1).amax(1), f"a batch of {b}"


def _registry() -> dict[str, Exercise]:
    """The exercises in lesson order, from exercises.json (what each asks and what "correct"
    means, as data); ``cases`` names a generator of this module."""
    rows = json.loads(Path(__file__).with_name("exercises.json").read_text(encoding="utf-8"))
    out = {}
    for r in rows:
        cases = globals()[r["cases"]]
        args = (r["key"], r["title"], cases, r["solution"], r["passed"], r.get("atol", 1e-5))
        out[r["key"]] = Exercise(*args)
    return out


EXERCISES: dict[str, Exercise] = _registry()
