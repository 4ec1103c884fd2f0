"""DiffusionAD (Zhang et al.): a denoising sub-network that repairs a noised input in one
step, and a segmentation sub-network that compares the input with its repair.

Training is Alg. 1 (Eq. 5-8); inference is Alg. 2 (one denoising step per λ, averaged
segmentation maps, image score = mean of the top-K pixels). Variants for the Table 3
ablations: ``segmentation_only`` (SegmentationAD: the segmenter on the image alone) and
``denoising_only`` (DenoisingAD: no segmenter; map = |x0 − x̂0|, trained on normal images).

Where the paper is silent we follow the official code: x̂0 is clamped to the data range
[-1, 1]; the focal loss uses α = 0.5, γ = 4.

``norm_guided=True`` is the official code's later revision, not the paper: two timesteps
t_a < t_b per image; the repair from the noisier t_b guides the one from t_a (see
``norm_guided_x0``). Off by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from n2n_core.config import DataSpec, TrainConfig
from n2n_core.data.dataset import MASK_RULES, AnomalyDataset
from n2n_core.data.training import training_images
from n2n_core.methods.base import Feed, Method, ParamGroup, Prediction
from n2n_core.models import DenoiserConfig, SegmentationNet, SegmenterConfig, make_denoiser
from n2n_core.options import Option, positive
from n2n_core.profiles import get_profile
from n2n_core.schedules import _at, make_schedule, predict_x0, q_sample
from n2n_core.synthesis import AnomalySynthesizer, SynthesisConfig, TextureSource

__all__ = [
    "METHOD",
    "PROFILES",
    "TRAIN_PROFILES",
    "VARIANTS",
    "DiffusionAD",
    "DiffusionADConfig",
    "focal_loss",
    "top_k_score",
]

VARIANTS = ("full", "segmentation_only", "denoising_only")


@dataclass(frozen=True)
class DiffusionADConfig:
    image_size: int = 256
    T: int = 1000  # linear β schedule 1e-4 → 0.02 (§4.2)
    beta_start: float = 1e-4
    beta_end: float = 0.02
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    variant: str = "full"
    gamma: float = 5.0  # weight of the focal term in Eq. 7
    focal_alpha: float = 0.5
    focal_gamma: float = 4.0
    lambdas: tuple[int, ...] = (100, 200)  # Alg. 2 / Table 4
    top_k: int = 50  # image score: mean of the top-K map pixels (at 256 × 256)
    # Alg. 1 draws t ~ U{1..T}. With train_t_max, t ~ U{1..train_t_max}: the segmenter then
    # learns on repairs from the noise levels Alg. 2 uses (λ ≤ 200), as the official code's
    # t < 300 branch does. None: the paper.
    train_t_max: int | None = None
    # Eq. 8 trains both nets jointly: the mask loss also reaches the denoiser through x̂0 (as in
    # the official code). detach_x0_hat=True stops that gradient.
    detach_x0_hat: bool = False
    # The official code's norm-guided one-step denoising (not in the paper): training draws
    # t_a ~ U{1..guide_split}, t_b ~ U{guide_split+1..T}; inference uses guide_t = (t_a, t_b)
    # instead of λ; condition_w weighs the guidance. Code defaults: 300, (200, 400), 1.
    norm_guided: bool = False
    guide_split: int = 300
    guide_t: tuple[int, int] = (200, 400)
    condition_w: float = 1.0
    # The official code's training regime (docs/methods.md: which regime is which), each
    # a separate option; none is the paper's. unit_range: images enter the model in [0, 1]
    # instead of [-1, 1] (x̂0 is still clamped to [-1, 1], as in the code); at a given t that
    # corrupts less: λ = 100 / 200 act as λ' = 190 / 331 would in [-1, 1]
    # (schedules.equivalent_step). noise_loss: Eq. 6 over "all" images of the batch, or over
    # its "normal" ones only (the code's; 0 for an all-anomalous batch); "auto": "all", or
    # "normal" with norm_guided (as the code trains it).
    unit_range: bool = False
    noise_loss: str = "auto"
    # The official code's batches and optimisers: each image of a batch anomalous with
    # probability anomaly_prob (None: half the batch, §4.2's 3 + 3); the segmenter trained at
    # its own lr (None: the run's), on a cosine of period 2 × segmenter_cosine optimiser steps
    # (torch's CosineAnnealingLR(T_max) stepped every iteration: down to 0 and back up)
    anomaly_prob: float | None = None
    segmenter_lr: float | None = None
    segmenter_cosine: int | None = None
    # the test ground truth: masks resized by nearest neighbour, or as the official code
    # ("bilinear_full": bilinear, then only fully covered pixels; data.dataset.bilinear_full)
    ground_truth: str = "nearest"
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)  # §3.3's anomalies
    # DTD images for the anomalies' appearance; None: procedural textures. require_textures (the
    # paper's profiles: §3.3 draws them from DTD): texture_dir must hold images, and unset,
    # <dataset root's parent>/dtd/images is used (``DiffusionADMethod.prepare``)
    texture_dir: str | None = None
    require_textures: bool = False

    @property
    def needs_anomalies(self) -> bool:
        """Whether training batches carry synthetic anomalies (DenoisingAD: normal only)."""
        return self.variant != "denoising_only"

    @staticmethod
    def legacy(data: dict[str, Any]) -> dict[str, Any]:
        """A run.json model entry written when the denoiser's size (= image_size) was stored."""
        if isinstance(data.get("denoiser"), dict):
            data = {**data, "denoiser": {**data["denoiser"], "image_size": None}}
        return data

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k must be a positive number of pixels, got {self.top_k!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not self.lambdas or not all(1 <= lam <= self.T for lam in self.lambdas):
            raise ValueError(f"lambdas must be steps in 1..{self.T}, got {self.lambdas}")
        if self.noise_loss not in ("auto", "all", "normal"):
            raise ValueError(
                f"noise_loss must be 'auto', 'all' or 'normal', got {self.noise_loss!r}"
            )
        if self.ground_truth not in MASK_RULES:
            raise ValueError(f"ground_truth must be one of {MASK_RULES}, got {self.ground_truth!r}")
        if self.anomaly_prob is not None and not 0 <= self.anomaly_prob <= 1:
            raise ValueError(f"anomaly_prob must be in [0, 1] or None, got {self.anomaly_prob}")
        if self.segmenter_cosine is not None and self.segmenter_cosine < 1:
            raise ValueError(
                f"segmenter_cosine must be a positive period, got {self.segmenter_cosine}"
            )
        if self.train_t_max is not None and not 1 <= self.train_t_max <= self.T:
            raise ValueError(f"train_t_max must be in 1..{self.T} or None, got {self.train_t_max}")
        if self.denoiser.image_size is not None:
            raise ValueError(
                "model.denoiser.image_size follows from model.image_size; leave it unset "
                f"(got {self.denoiser.image_size})"
            )
        if self.norm_guided:
            if self.variant == "segmentation_only":
                raise ValueError("norm_guided (guide_t) needs the denoiser: not segmentation_only")
            if not 1 <= self.guide_split < self.T:
                raise ValueError(f"guide_split must be in 1..{self.T - 1}, got {self.guide_split}")
            t_a, t_b = self.guide_t
            if not 1 <= t_a < t_b <= self.T:
                raise ValueError(f"guide_t must be (t_a, t_b) with 1 <= t_a < t_b <= {self.T}")


# §4.2: base 128, attention at 32, 16 and 8 px with 4 heads; the segmenter is DRAEM's, as in
# the official code (its decoder narrows as it climbs); where the text is silent (residual
# resampling blocks) the code's choice
_PAPER = DiffusionADConfig(
    denoiser=DenoiserConfig(num_heads=4, resnet_resampling="all"),
    segmenter=SegmenterConfig(decoder="draem"),
    require_textures=True,
)
PROFILES = {
    "paper": _PAPER,
    # the official code (github.com/HuiZhang0812/DiffusionAD, train.py, args1.json): its
    # network (the time embedding added, zero-initialised output layers: 131.7 M), the
    # norm-guided one-step denoising in [0, 1] with the noise loss on normal images only,
    # each image anomalous with p = 0.5, the segmenter at lr 1e-5 on CosineAnnealingLR(10)
    "official": replace(
        _PAPER,
        denoiser=replace(_PAPER.denoiser, time_conditioning="additive", zero_init=True),
        norm_guided=True,
        unit_range=True,
        noise_loss="normal",
        anomaly_prob=0.5,
        segmenter_lr=1e-5,
        segmenter_cosine=10,
        ground_truth="bilinear_full",
        synthesis=SynthesisConfig(
            augmenter="official", n_augment=3, augment_textures=True, rearrange="strips"
        ),
    ),
    # CPU minutes: 64 px, a small UNet and segmenter; top-K scaled with the image area (50 of
    # 256² ≈ 3 of 64²; 4 keeps it a small blob). Two departures from Alg. 1: t ≤ 300 (as the
    # official code's segmenter branch) with x̂0 detached — a tiny denoiser's repairs from large
    # t are noise the segmenter learns to ignore, and the mask loss would pull the denoiser
    # towards exposing rather than repairing anomalies; Perlin lattices of 2^0..2^3 cells
    # instead of 2^0..2^5 — the paper's finest, 32 cells at 256 px, are 8-px blobs, at 64 px
    # they would be 2-px slivers. Measured in benchmarks/RESULTS.md.
    "smoke": DiffusionADConfig(
        train_t_max=300,
        detach_x0_hat=True,
        image_size=64,
        denoiser=DenoiserConfig(
            channels=(16, 32, 64),
            attention_resolutions=(16,),
            layers_per_block=1,
            attention_head_dim=16,
            norm_num_groups=8,
        ),
        segmenter=SegmenterConfig(base=16, multipliers=(1, 2, 4, 8)),
        top_k=4,
        synthesis=SynthesisConfig(perlin_scale=(0, 4)),
    ),
}
# a student's own photographs on a CPU, about a quarter of an hour per category: the smoke
# networks at 96 px (thin defects span more pixels; the denoiser's levels are then 96, 48 and
# 24 px, so its attention, set at 16 px, is absent), Perlin lattices up to 2^4 cells (the finest
# 6-px blobs at 96 px, as the paper's 2^5 are 8 px at 256), top-K scaled with the area
# (4 × 1.5² ≈ 9) and 1600 steps whose lr falls on a cosine from 1e-3 to 1e-4 (at a constant
# 1e-3 the last weights are one draw from a noisy trajectory, and a seed could fire on normal
# photographs). The first four were chosen on foliage and dahlia; undone one at a time there,
# the resolution matters most, then the steps, while the finest lattice and top-9 lie within
# the seed spread. The decay was added for the seed-to-seed spread on the confirmation photographs
# (benchmarks/RESULTS.md, "A laptop profile")
PROFILES["laptop"] = replace(
    PROFILES["smoke"],
    image_size=get_profile("laptop").image_size,
    top_k=9,
    synthesis=replace(PROFILES["smoke"].synthesis, perlin_scale=(0, 5)),
)


_PAPER_TRAIN = TrainConfig(
    steps=None, epochs=500, checkpoint_every=2000, log_every=50, mixed_precision="auto"
)
TRAIN_PROFILES = {
    # smoke: small CPU nets converge much faster at 1e-3 than at the paper's 1e-4 (measured)
    "smoke": TrainConfig(steps=900, lr=1e-3, checkpoint_every=300, log_every=25),
    "paper": _PAPER_TRAIN,
    # args1.json: batch 16, Adam at 1e-4 (the segmenter's lr is a model setting), 3000 epochs;
    # train.py keeps the best of every 50 epochs on the test set (optimistic, labelled so)
    "official": replace(_PAPER_TRAIN, epochs=3000, batch_size=16, select_on_test_every=50),
}
TRAIN_PROFILES["laptop"] = replace(TRAIN_PROFILES["smoke"], steps=1600, min_lr=1e-4)


def focal_loss(p: Tensor, y: Tensor, alpha: float = 0.5, gamma: float = 4.0) -> Tensor:
    """Binary focal loss on probabilities (Lin et al.), mean over pixels."""
    p = p.float().clamp(1e-6, 1 - 1e-6)
    pos = y > 0.5
    pt = torch.where(pos, p, 1 - p)
    w = torch.where(pos, alpha, 1 - alpha)
    return (-w * (1 - pt) ** gamma * pt.log()).mean()


def top_k_score(maps: Tensor, k: int) -> Tensor:
    """Image score of Alg. 2: the mean of the k largest pixels of each (B, 1, H, W) map."""
    return maps.flatten(1).topk(min(k, maps[0].numel()), dim=1).values.mean(1)


class DiffusionAD(nn.Module):
    def __init__(self, cfg: DiffusionADConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.schedule = make_schedule(
            "linear", cfg.T, beta_start=cfg.beta_start, beta_end=cfg.beta_end
        )
        self.denoiser = (
            make_denoiser(replace(cfg.denoiser, image_size=cfg.image_size))
            if cfg.variant != "segmentation_only"
            else None
        )
        seg_in = 3 if cfg.variant == "segmentation_only" else 6
        self.segmenter = (
            SegmentationNet(replace(cfg.segmenter, in_channels=seg_in))
            if cfg.variant != "denoising_only"
            else None
        )

    @property
    def _noise_on_normal(self) -> bool:
        mode = self.cfg.noise_loss
        return mode == "normal" or (mode == "auto" and self.cfg.norm_guided)

    def noise_loss(self, per_image: Tensor, masks: Tensor) -> Tensor:
        """Eq. 6 from per-image losses: their mean, or (``noise_loss="normal"``) their mean
        over the images without an anomaly (mask all 0), 0 when there are none."""
        if not self._noise_on_normal:
            return per_image.mean()
        normal = masks.flatten(1).amax(1) == 0
        return (per_image * normal).sum() / normal.sum().clamp(min=1)

    def to_model_range(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] (every n2n dataset) as the model takes them: [0, 1] with
        ``unit_range``."""
        return (images + 1) / 2 if self.cfg.unit_range else images

    def to_data_range(self, x: Tensor) -> Tensor:
        """The inverse of ``to_model_range`` (x̂0 back to [-1, 1] for figures)."""
        return x * 2 - 1 if self.cfg.unit_range else x

    def one_step(self, x0: Tensor, t: Tensor | int, eps: Tensor) -> tuple[Tensor, Tensor]:
        """Corrupt x0 to step t (Eq. 2), predict ε, and estimate x̂0 in one step (Eq. 5).
        Returns (x̂0 clamped to [-1, 1], predicted ε)."""
        t = torch.as_tensor(t, device=x0.device).expand(x0.shape[0])
        x_t = q_sample(x0, t.cpu(), self.schedule, eps)
        pred_eps = self.denoiser(x_t, t).sample
        return predict_x0(x_t, t.cpu(), self.schedule, pred_eps).clamp(-1, 1), pred_eps

    def norm_guided_x0(
        self, x0: Tensor, t_a: Tensor | int, t_b: Tensor | int, eps_a: Tensor, eps_b: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The official code's norm-guided estimate: the one-step repair x̂0_b from the noisier
        t_b is re-noised to t_a with the predicted ε̂_a, x̃_a = q(x̂0_b, t_a, ε̂_a), and
        guides the prediction at t_a like a score condition:
        ε̃ = ε̂_a − w √(1−ᾱ_a) (x̃_a − x_a); x̂0 = Eq. 5 with ε̃.
        Returns (x̂0 clamped to [-1, 1], ε̂_a, ε̂_b)."""
        b = x0.shape[0]
        t_a = torch.as_tensor(t_a, device=x0.device).expand(b)
        t_b = torch.as_tensor(t_b, device=x0.device).expand(b)
        x0_b, pred_eps_b = self.one_step(x0, t_b, eps_b)
        x_a = q_sample(x0, t_a.cpu(), self.schedule, eps_a)
        pred_eps_a = self.denoiser(x_a, t_a).sample
        x_a_guide = q_sample(x0_b, t_a.cpu(), self.schedule, pred_eps_a)
        sigma_a = (1 - _at(self.schedule.alpha_bar, t_a.cpu(), x0)).sqrt()
        eps_hat = pred_eps_a - self.cfg.condition_w * sigma_a * (x_a_guide - x_a)
        x0_hat = predict_x0(x_a, t_a.cpu(), self.schedule, eps_hat).clamp(-1, 1)
        return x0_hat, pred_eps_a, pred_eps_b

    def forward(
        self, images: Tensor, masks: Tensor, g: torch.Generator
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Alg. 1: the total loss (Eq. 8) and its parts, for images in [-1, 1] and masks in
        {0, 1}. ``g`` (a CPU generator) draws t and ε, so runs are reproducible."""
        parts: dict[str, Tensor] = {}
        x0_hat, images = None, self.to_model_range(images)
        if self.denoiser is not None and self.cfg.norm_guided:
            b, split = images.shape[0], self.cfg.guide_split
            t_a = torch.randint(1, split + 1, (b,), generator=g).to(images.device)
            t_b = torch.randint(split + 1, self.cfg.T + 1, (b,), generator=g).to(images.device)
            eps_a, eps_b = (
                torch.randn(images.shape, generator=g).to(images.device, images.dtype)
                for _ in range(2)
            )
            x0_hat, pred_a, pred_b = self.norm_guided_x0(images, t_a, t_b, eps_a, eps_b)
            # the code's noise loss: the sum of both timesteps' (Eq. 6 at t_a and t_b)
            per_image = ((pred_a - eps_a) ** 2 + (pred_b - eps_b) ** 2).float().flatten(1).mean(1)
            parts["noise"] = self.noise_loss(per_image, masks)
        elif self.denoiser is not None:
            b = images.shape[0]
            t_max = self.cfg.train_t_max or self.cfg.T
            t = torch.randint(1, t_max + 1, (b,), generator=g).to(images.device)
            eps = torch.randn(images.shape, generator=g).to(images.device, images.dtype)
            x0_hat, pred_eps = self.one_step(images, t, eps)
            if self._noise_on_normal:
                per_image = ((pred_eps - eps) ** 2).float().flatten(1).mean(1)
                parts["noise"] = self.noise_loss(per_image, masks)
            else:
                parts["noise"] = F.mse_loss(pred_eps.float(), eps.float())  # Eq. 6
        if self.segmenter is not None:
            if x0_hat is not None and self.cfg.detach_x0_hat:
                x0_hat = x0_hat.detach()
            inp = images if x0_hat is None else torch.cat([images, x0_hat], 1)
            pred = self.segmenter(inp)
            parts["mask"] = F.smooth_l1_loss(
                pred.float(), masks.float()
            ) + self.cfg.gamma * focal_loss(
                pred, masks, self.cfg.focal_alpha, self.cfg.focal_gamma
            )  # Eq. 7
        return sum(parts.values()), parts  # Eq. 8

    @torch.no_grad()
    def anomaly_map(
        self, images: Tensor, g: torch.Generator, lambdas: tuple[int, ...] | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """Alg. 2: the pixel anomaly map (B, 1, H, W) averaged over λ, and x̂0 for each λ
        (in the model's range: ``to_data_range`` maps it back)."""
        images = self.to_model_range(images)
        if self.denoiser is None:  # SegmentationAD
            return self.segmenter(images).float(), []
        lambdas = lambdas or self.cfg.lambdas
        if self.cfg.norm_guided:  # one guided repair at guide_t instead of one per λ
            lambdas = (self.cfg.guide_t,)
        total, x0_hats = torch.zeros_like(images[:, :1], dtype=torch.float32), []
        for lam in lambdas:
            eps = torch.randn(images.shape, generator=g).to(images.device, images.dtype)
            if self.cfg.norm_guided:
                eps_b = torch.randn(images.shape, generator=g).to(images.device, images.dtype)
                x0_hat, _, _ = self.norm_guided_x0(images, lam[0], lam[1], eps, eps_b)
            else:
                x0_hat, _ = self.one_step(images, lam, eps)
            x0_hats.append(x0_hat)
            if self.segmenter is None:  # DenoisingAD
                total += (images - x0_hat).abs().mean(1, keepdim=True).float()
            else:
                total += self.segmenter(torch.cat([images, x0_hat], 1)).float()
        return total / len(lambdas), x0_hats


class DiffusionADFeed(Feed):
    """Alg. 1's batches: normal images, half of them turned into synthetic anomalies."""

    def __init__(
        self, cfg: DiffusionADConfig, train_cfg: TrainConfig, data: DataSpec, run_dir: Path
    ) -> None:
        if data.category == "all":
            raise ValueError("DiffusionAD trains one model per category: pass a --category")
        self.images, self.fg = training_images(
            data.source, data.root, data.category, cfg.image_size, run_dir, True,
            data.foreground_dir,
        )  # fmt: skip
        self.synthesizer = AnomalySynthesizer(cfg.synthesis, TextureSource(cfg.texture_dir))
        self.anomalies, self.anomaly_prob = cfg.needs_anomalies, cfg.anomaly_prob

    def __len__(self) -> int:
        return len(self.images)

    def __call__(self, idx: Tensor, gen: torch.Generator, device: object) -> tuple:
        normals = self.images[idx].float() / 255
        if self.anomalies:
            n = None  # half the batch (§4.2), or each image with probability anomaly_prob
            if self.anomaly_prob is not None:
                n = int((torch.rand(len(idx), generator=gen) < self.anomaly_prob).sum())
            batch, masks, _ = self.synthesizer.batch(
                normals, gen, None if self.fg is None else self.fg[idx], n
            )
        else:
            batch, masks = normals, torch.zeros_like(normals[:, :1])
        return (batch * 2 - 1).to(device), masks.to(device)


class DiffusionADMethod(Method):
    name = "diffusionad"
    description = "DiffusionAD: one-step denoising + segmentation sub-network (pixel space)"
    config = DiffusionADConfig
    profiles = PROFILES
    train_profiles = TRAIN_PROFILES
    per_category = True
    eval_batch_size = 16
    options = (
        Option("--variant", "model.variant", "the sub-networks trained (Table 3)",
               choices=("full", "segmentation_only", "denoising_only")),
        Option("--lambdas", "model.lambdas", "inference steps λ (default 100 200)",
               type=positive(int), nargs="+"),
        Option("--norm-guided", "model.norm_guided",
               "the official code's norm-guided two-timestep variant (not the paper)", const=True),
        Option("--texture-dir", "model.texture_dir", "anomaly textures (paper profiles: "
               "required; default <dataset root>/../dtd/images)", reproduce=True),
    )  # fmt: skip
    repair_symbol = "x̂0"
    resources = ("texture_dir",)

    def build(self, cfg: DiffusionADConfig) -> DiffusionAD:
        return DiffusionAD(cfg)

    def prepare(
        self, cfg: DiffusionADConfig, tcfg: TrainConfig, data: DataSpec
    ) -> tuple[DiffusionADConfig, TrainConfig]:
        """With ``require_textures`` (the paper profiles): the texture folder given, or DTD
        beside the dataset; no images there is an error that says how to get DTD."""
        if not cfg.require_textures or not cfg.needs_anomalies:
            return cfg, tcfg
        from n2n_core.data.download import dtd_images
        from n2n_core.data.samples import DatasetError

        datasets = Path(data.root).resolve().parent
        folder = Path(cfg.texture_dir) if cfg.texture_dir else dtd_images(datasets)
        if not TextureSource.images_in(folder):
            given = "--texture-dir" if cfg.texture_dir else "the default texture folder"
            raise DatasetError(
                f"no texture images in {folder} ({given}): this profile draws the synthetic "
                "anomalies' appearance from DTD, as the paper does. Get it with "
                f"`python -m n2n_core download dtd --root {datasets}`, or pass --texture-dir "
                "a folder of texture images (the smoke profile uses procedural textures)"
            )
        return replace(cfg, texture_dir=str(folder.resolve())), tcfg

    def downloads(self, cfg: DiffusionADConfig) -> tuple[str, ...]:
        """DTD, when the profile requires textures and no folder was given."""
        needed = cfg.require_textures and cfg.needs_anomalies and not cfg.texture_dir
        return ("dtd",) if needed else ()

    def dataset(self, cfg: DiffusionADConfig, samples: list) -> AnomalyDataset:
        return AnomalyDataset(samples, cfg.image_size, (-1.0, 1.0), mask_rule=cfg.ground_truth)

    def param_groups(
        self, model: DiffusionAD, cfg: DiffusionADConfig, tcfg: TrainConfig
    ) -> list[ParamGroup] | None:
        """The official code's two optimisers as two groups: the segmenter at its own lr and
        cosine (``segmenter_lr``, ``segmenter_cosine``); None (one group) when neither is set."""
        if model.segmenter is None or (cfg.segmenter_lr is None and cfg.segmenter_cosine is None):
            return None
        period = cfg.segmenter_cosine
        cosine = None if period is None else lambda s: (1 + math.cos(math.pi * s / period)) / 2
        seg = ParamGroup(list(model.segmenter.parameters()), cfg.segmenter_lr or tcfg.lr, cosine)
        rest = [p for n, p in model.named_parameters() if not n.startswith("segmenter.")]
        return [ParamGroup(rest, tcfg.lr), seg]

    def feed(
        self, cfg: DiffusionADConfig, tcfg: TrainConfig, data: DataSpec, run_dir: Path,
        accelerator: Any,
    ) -> DiffusionADFeed:  # fmt: skip
        return DiffusionADFeed(cfg, tcfg, data, run_dir)

    def predict(
        self, model: DiffusionAD, images: Tensor, class_index: int, g: torch.Generator
    ) -> Prediction:
        """Alg. 2: maps averaged over λ, image score = mean of the top-K pixels; the repair
        is the first λ's x̂0 (none for SegmentationAD)."""
        maps, x0_hats = model.anomaly_map(images, g)
        extras = {"repair": model.to_data_range(x0_hats[0]).float()} if x0_hats else {}
        return Prediction(maps, top_k_score(maps, model.cfg.top_k), extras)

    def eval_info(self, cfg: DiffusionADConfig) -> dict[str, Any]:
        return {
            "lambdas": None if cfg.norm_guided else list(cfg.lambdas),
            "norm_guided_t": list(cfg.guide_t) if cfg.norm_guided else None,
            "top_k": cfg.top_k,
            "variant": cfg.variant,
        }


METHOD = DiffusionADMethod()
