"""DeCo-Diff (Beizaee et al., CVPR 2025): correct the deviation from normality in a VAE
latent space instead of denoising the whole image.

Training (§4.1-4.2, §5.1): latents of normal images, a random patch mask (r_mask ~ U[0, 0.7],
latent patch size from {1, 2, 4, 8}), patch shuffling (r_shuffle ~ U[0, 0.3]), the masked
forward process (Eq. 7) at t ~ U{1..T} (T = 10, squared cosine), MSE to the direction of
deviation (Eq. 10-12). One model for every category (multi-class). Three profiles: ``paper``
follows the text (§5.1), ``official`` the official code (patch sizes {1, 2, 4, 8, 16} with
p = .3/.25/.2/.15/.1, shuffled patches drawn from the whole batch, a +4 px shift with p = 0.5
(and 180° turns on VisA) of every batch before it is encoded, the official validation images
held out, its lr schedule and gradient accumulation), ``smoke`` is small for CPUs; every
difference between the first two is an option (docs/profiles.md).

Inference (§4.3): deviation correction (Eq. 13-14) from the encoded test image, decoding,
and the anomaly map of Eq. 15. Where the paper is silent we follow the official code
(github.com/farzad-bz/DeCo-Diff): the network is the official LDM UNet conditioned on the
category index by cross-attention (``network="official"``, both profiles; ``"unet2d"`` is a small
diffusers UNet2DModel with a class embedding, for tests); one patch size per batch; maps are
blurred; the image score is the maximum of the map (with a blurred map the max is a
small-region average, and a single defect region decides whether an image is anomalous). The
pixel discrepancy of Eq. 15 compares x̃0 with the test image x0 as the paper writes it
(``pixel_reference="input"``, the smoke profile: a small autoencoder trained on normal images
already half-repairs a defect in its reconstruction); the official code compares with the VAE
reconstruction of x0 (``"reconstruction"``, the official profile). Measurements of these choices:
benchmarks/RESULTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from n2n_core.config import DataSpec, TrainConfig, categories_of, renamed
from n2n_core.data.splits import HOLDOUTS, holdout
from n2n_core.data.training import to_model_range, training_images
from n2n_core.deviation import (
    BOUNDARIES,
    MAP_KINDS,
    SHUFFLES,
    STRATEGIES,
    correct,
    correction_timesteps,
    discrepancy_maps,
    dod_target,
    masked_forward,
    patch_mask,
    shuffle_noise,
)
from n2n_core.methods.base import Feed, Method, Prediction, Stage
from n2n_core.models import DenoiserConfig, make_denoiser
from n2n_core.models.ldm_unet import PRESETS as OFFICIAL_UNETS
from n2n_core.models.ldm_unet import OfficialDoD, OfficialUNetConfig, load_official
from n2n_core.models.vae import (
    SD_VAE,
    AutoencoderTrainer,
    LatentVAE,
    VAEConfig,
    untrained_like,
    with_scale,
)
from n2n_core.models.vae import load_vae as load_vae_folder
from n2n_core.options import Option, local_or_hub, positive
from n2n_core.profiles import get_profile
from n2n_core.schedules import make_schedule

__all__ = [
    "METHOD",
    "PROFILES",
    "TRAIN_PROFILES",
    "AugmentedLatentFeed",
    "AutoencoderFeed",
    "DeCoDiff",
    "DeCoDiffConfig",
    "augment",
    "autoencoder_stage",
    "detect",
    "draw_patch_size",
    "image_score",
    "latent_training_set",
    "run_vae",
]

# the DoD network: n2n's small diffusers UNet2DModel (tests, CPU) or the official LDM UNet
NETWORKS = ("unet2d", "official")
# the values older n2n called "n2n", in four fields that meant four different things
_RENAMED = {
    "network": "unet2d", "shuffle": "next_image", "spacing": "from_start", "boundary": "torch"
}  # fmt: skip


@dataclass(frozen=True)
class DeCoDiffConfig:
    image_size: int = 256
    load_size: int | None = None  # resize here, then centre crop image_size (official: 288)
    vae: VAEConfig = field(default_factory=lambda: VAEConfig(pretrained=SD_VAE))
    # the DoD networks' sizes that follow from the rest (latent size, class count) are not
    # stored: unet.image_size and num_classes, official_unet.latent_size and ncls stay unset
    unet: DenoiserConfig = field(
        default_factory=lambda: DenoiserConfig(
            in_channels=4,
            channels=(256, 512, 1024),  # the official "L" model: base 256, mults 1, 2, 4
            attention_resolutions=(32, 16, 8),
            layers_per_block=2,
            attention_head_dim=64,
            dropout=0.4,
        )
    )
    # "unet2d": the UNet above (class embedding added to the time embedding); "official": the
    # official code's LDM UNet (models.ldm_unet; cross-attention to the class), which loads
    # the released checkpoints
    network: str = "unet2d"
    official_unet: OfficialUNetConfig = field(
        default_factory=lambda: _unsized(OFFICIAL_UNETS["UNet_L"])
    )
    classes: tuple[str, ...] = ()  # conditioning categories (multi-class); empty: unconditional
    T: int = 10  # squared-cosine schedule (§5.1)
    mask_ratio_max: float = 0.7  # r_mask ~ U[0, 0.7]
    patch_sizes: tuple[int, ...] = (1, 2, 4, 8)  # latent patch sizes (8-64 image pixels at f = 8)
    patch_probs: tuple[float, ...] = ()  # their probabilities; empty: uniform
    shuffle_ratio_max: float = 0.3  # r_shuffle ~ U[0, 0.3]
    shuffle: str = "next_image"  # shuffled patches: the next image's, same place | "official"
    # training augmentation before the centre crop, each with p = 0.5: a shift of translate
    # pixels (official: (288 - 256) / 8 = 4) and a 180° rotation (official, VisA only); either
    # one encodes every batch with the VAE, as the official code. translate_draw: "uniform",
    # each axis from ± translate; "constant", +translate on both axes — albumentations 1.4.21's
    # Affine(translate_px=4), which the official code calls, reads a single int as the range
    # (4, 4) (to_tuple(4, 4) in _handle_dict_arg), so it always shifts by exactly +4 px
    translate: int = 0
    translate_draw: str = "uniform"
    # where a shifted window finds its pixels: "margin", inside the load_size image's crop
    # margin (official; the test view is the centre crop); "reflect", in the image padded by
    # reflection by translate pixels (no load_size: the test view stays the whole image)
    shift_fill: str = "margin"
    rotate_180: bool = False
    holdout: str = "none"  # "official": train without the official validation images
    strategy: str = "z_t-1"  # Table 3: "z_t-1" (Eq. 14) or "z_0"
    reverse_steps: int = 5
    start_t: int | None = None  # None: T
    spacing: str = "from_start"  # correction timesteps: [T, T-s, ...] | "official" [9, 7, .., 1]
    boundary: str = "torch"  # map borders: torch's | "official" (scipy blur, skimage resize)
    anomaly_map: str = "geometric"  # Table 4 / Eq. 15
    pixel_reference: str = "input"  # x0 of Eq. 15: "input" (paper) | "reconstruction" (code)
    tau_l: float = 0.2
    tau_p: float = 0.4
    sigma_l: float = 1.0  # latent pixels
    sigma_p: float = 3.0  # image pixels (at 256²)

    def __post_init__(self) -> None:
        choices = {
            "strategy": STRATEGIES, "pixel_reference": ("input", "reconstruction"),
            "anomaly_map": MAP_KINDS, "network": NETWORKS, "shuffle": SHUFFLES,
            "translate_draw": ("uniform", "constant"), "holdout": HOLDOUTS,
            "shift_fill": ("margin", "reflect"),
            "boundary": BOUNDARIES,
        }  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.image_size % self.vae.factor:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of the VAE's factor "
                f"{self.vae.factor}"
            )
        if self.patch_probs and (
            len(self.patch_probs) != len(self.patch_sizes)
            or min(self.patch_probs) < 0
            or abs(sum(self.patch_probs) - 1) > 1e-6
        ):
            raise ValueError(
                f"patch_probs {self.patch_probs} must be one probability per patch size "
                f"{self.patch_sizes}, summing to 1"
            )
        if self.shift_fill == "reflect":  # a reflection pads less than the image; half, at most
            margin = self.image_size // 2 - 1
            limit = f"{margin} with shift_fill='reflect' (half the image_size {self.image_size})"
        else:
            margin = ((self.load_size or self.image_size) - self.image_size) // 2
            limit = (
                f"the crop margin {margin} (load_size {self.load_size}, image_size "
                f"{self.image_size})"
            )
        if not 0 <= self.translate <= margin:
            raise ValueError(f"translate {self.translate} must be between 0 and {limit}")
        derived = {
            "unet.image_size": self.unet.image_size,
            "unet.num_classes": self.unet.num_classes or None,
            "official_unet.latent_size": self.official_unet.latent_size,
            "official_unet.ncls": self.official_unet.ncls,
        }  # fmt: skip
        for name, value in derived.items():
            if value is not None:
                raise ValueError(
                    f"model.{name} follows from model.image_size and model.classes; leave it "
                    f"unset (got {value!r})"
                )
        # validates T, reverse_steps, start_t and spacing
        correction_timesteps(self.T, self.reverse_steps, self.start_t, self.spacing)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae.factor

    @property
    def unet_config(self) -> DenoiserConfig:
        """The DoD UNet's config with its derived fields: latent size, number of classes."""
        return replace(self.unet, image_size=self.latent_size, num_classes=len(self.classes))

    @property
    def official_config(self) -> OfficialUNetConfig:
        """The official UNet's config with its derived fields: latent size, class count."""
        n = max(1, len(self.classes))
        return replace(self.official_unet, latent_size=self.latent_size, ncls=n)

    @property
    def timesteps(self) -> list[int]:
        return correction_timesteps(self.T, self.reverse_steps, self.start_t, self.spacing)

    def with_classes(self, classes: tuple[str, ...] | list[str]) -> DeCoDiffConfig:
        """The same config conditioned on these categories (empty: unconditional)."""
        return replace(self, classes=tuple(classes))

    @staticmethod
    def legacy(data: dict[str, Any]) -> dict[str, Any]:
        """A run.json model entry of an older n2n: the derived sizes stored (always equal to
        what the properties above compute), and "n2n" as a value of four fields."""
        unset = {
            "unet": {"image_size": None, "num_classes": 0},
            "official_unet": {"latent_size": None, "ncls": None},
        }
        data = dict(data)
        for part, values in unset.items():
            if isinstance(data.get(part), dict):
                data[part] = {**data[part], **values}
        return renamed(data, "n2n", _RENAMED)


def _unsized(unet: OfficialUNetConfig) -> OfficialUNetConfig:
    """An official UNet config without the sizes DeCoDiffConfig derives."""
    return replace(unet, latent_size=None, ncls=None)


# the text (§4-5.1), which the defaults follow: the official network (UNet_L, 395.0 M; the
# paper names LDM's UNet), patch sizes {1, 2, 4, 8} drawn uniformly, images at 256 px, x0 of
# Eq. 15 the input
_PAPER = DeCoDiffConfig(network="official")
PROFILES = {
    "paper": _PAPER,
    # the official code (github.com/farzad-bz/DeCo-Diff, train_DeCo_Diff.py and the loaders).
    # Training: latent patches of 1-16 with p = .3/.25/.2/.15/.1, patches shuffled across the
    # batch, +4 px shifts (and 180° rotations on VisA: dataset_model), the official
    # validation images held out. Inference: correction at t = 9, 7, 5, 3, 1, the pixel term
    # against the VAE reconstruction, the official map borders. Images resized to 288, the
    # centre 256 cropped.
    "official": replace(
        _PAPER,
        patch_sizes=(1, 2, 4, 8, 16),
        patch_probs=(0.3, 0.25, 0.2, 0.15, 0.1),
        shuffle="official",
        translate=4,
        translate_draw="constant",
        holdout="official",
        spacing="official",
        boundary="official",
        pixel_reference="reconstruction",
        load_size=288,
    ),
    # CPU minutes: 64 px, a small KL-f4 autoencoder trained on the data (16²×4 latents), a
    # tiny instance of the official network (base 32, one block per level); the map blur
    # scaled with the resolution. ``network="unet2d"`` selects the small UNet2DModel below. The
    # autoencoder trains 1800 steps: its blur is what the pixel term of Eq. 15 sees on every
    # edge (the measurements behind both choices: benchmarks/RESULTS.md).
    "smoke": DeCoDiffConfig(
        image_size=64,
        vae=VAEConfig(steps=1800),
        network="official",
        official_unet=_unsized(
            OfficialUNetConfig(
                model_channels=32, num_res_blocks=1, num_heads=1, context_dim=32, dropout=0.0
            )
        ),
        unet=DenoiserConfig(
            in_channels=4,
            channels=(32, 64, 128),
            attention_resolutions=(8, 4),
            layers_per_block=1,
            attention_head_dim=32,
            norm_num_groups=8,
        ),
        patch_sizes=(1, 2, 4, 8),
        sigma_p=1.0,
    ),
}


# a student's own photographs on a CPU: the smoke networks at 96 px, as DiffusionAD's and
# patchknn's laptop profiles (latents 24² × 4), the map blur scaled with the resolution
# (1.0 × 96 / 64 = 1.5), the smoke steps and schedule; with p = 0.5 a training image shifted by
# up to ± 4 px on each axis (one latent pixel), padded by reflection. The shifts are against the
# DoD network memorising the latents of its few training images, which made it "correct" unseen
# normal texture and poses as much as defects (benchmarks/RESULTS.md, "A laptop profile")
_SMOKE, _LAPTOP_SIZE = PROFILES["smoke"], get_profile("laptop").image_size
PROFILES["laptop"] = replace(
    _SMOKE,
    image_size=_LAPTOP_SIZE,
    sigma_p=_SMOKE.sigma_p * _LAPTOP_SIZE / _SMOKE.image_size,
    translate=4,
    shift_fill="reflect",
)


# the class ids of the released checkpoints (the official data loaders)
OFFICIAL_CLASSES = {
    "mvtec": (
        "capsule", "bottle", "grid", "leather", "metal_nut", "tile", "transistor", "zipper",
        "cable", "carpet", "hazelnut", "pill", "screw", "toothbrush", "wood",
    ),
    "visa": (
        "candle", "cashew", "fryum", "macaroni2", "pcb2", "pcb4", "capsules", "chewinggum",
        "macaroni1", "pcb1", "pcb3", "pipe_fryum",
    ),
}  # fmt: skip


TRAIN_PROFILES = {
    # §5.1: AdamW, warm-up then cosine 1e-4 → 1e-5, batch 128, 800 epochs (MVTec AD;
    # 200 for VisA: dataset_train below); the text gives no weight decay or warm-up length:
    # the code's 1e-4 and 300 steps
    "smoke": TrainConfig(
        steps=1500, batch_size=32, lr=1e-3, min_lr=1e-4, optimizer="adamw",
        weight_decay=1e-4, warmup_steps=100, checkpoint_every=500, log_every=25,
    ),
    "paper": TrainConfig(
        steps=None, epochs=800, batch_size=128, lr=1e-4, min_lr=1e-5, optimizer="adamw",
        weight_decay=1e-4, warmup_steps=300, checkpoint_every=2000, log_every=50,
        mixed_precision="auto",
    ),
    # the code: batch 128 × 2 accumulated, AdamW (weight decay 1e-4), its scheduler stepped
    # once per epoch: 10 warm-up epochs from 0, then a cosine over 1.5 × the epochs, to 0
    # (it ends at ≈ 0.25 × 1e-4)
    "official": TrainConfig(
        steps=None, epochs=800, batch_size=128, grad_accum=2, lr=1e-4, min_lr=0.0,
        optimizer="adamw", weight_decay=1e-4, lr_per="epoch", warmup_epochs=10,
        cosine_span=1.5, checkpoint_every=1000, log_every=20, mixed_precision="auto",
    ),
}  # fmt: skip
TRAIN_PROFILES["laptop"] = TRAIN_PROFILES["smoke"]


class DeCoDiff(nn.Module):
    """The DoD predictor δ_θ(z_t, t[, class]) and its training loss (Eq. 12)."""

    def __init__(self, cfg: DeCoDiffConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.schedule = make_schedule("cosine", cfg.T)
        if cfg.network == "official":
            self.net = OfficialDoD(cfg.official_config)
        else:
            self.unet = make_denoiser(cfg.unet_config)

    def dod(self, z: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """δ_θ at the papers' 1-indexed t; the official network counts from 0."""
        if self.cfg.network == "official":
            if labels is None or not self.cfg.classes:
                labels = torch.zeros(len(z), dtype=torch.long, device=z.device)
            return self.net(z, t - 1, labels)
        labels = labels if self.cfg.classes else None
        return self.unet(z, t, class_labels=labels).sample

    def forward(
        self, z0: Tensor, labels: Tensor, g: torch.Generator
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 7 + Eq. 12 on a batch of normal latents. ``g`` draws t, masks and noise."""
        cfg, b = self.cfg, z0.shape[0]
        shape = tuple(z0.shape[-2:])
        t = torch.randint(1, cfg.T + 1, (b,), generator=g)
        patch = draw_patch_size(cfg, g)  # one per batch (official code)
        r_mask = torch.rand(b, generator=g) * cfg.mask_ratio_max
        mask = patch_mask(b, shape, r_mask, patch, g).to(z0)
        n = b if cfg.shuffle == "official" else 1  # official: a ratio per image
        r_shuffle = torch.rand(n, generator=g).expand(b) * cfg.shuffle_ratio_max
        noise, _ = shuffle_noise(z0, r_shuffle, patch, g, cfg.shuffle)
        zt = masked_forward(z0, t, self.schedule, mask, noise)  # Eq. 7
        target = dod_target(zt, z0, t, self.schedule)  # Eq. 11
        pred = self.dod(zt, t.to(z0.device), labels)
        loss = F.mse_loss(pred.float(), target.float())  # Eq. 12
        return loss, {"dod": loss}


def draw_patch_size(cfg: DeCoDiffConfig, g: torch.Generator) -> int:
    """A latent patch size from ``cfg.patch_sizes`` (with ``cfg.patch_probs``, else uniform)."""
    if cfg.patch_probs:
        i = torch.multinomial(torch.tensor(cfg.patch_probs), 1, generator=g)
    else:
        i = torch.randint(len(cfg.patch_sizes), (1,), generator=g)
    return cfg.patch_sizes[int(i)]


@torch.no_grad()
def detect(
    model: DeCoDiff,
    vae: LatentVAE,
    images: Tensor,
    labels: Tensor | None = None,
    strategy: str | None = None,
    reverse_steps: int | None = None,
    start_t: int | None = None,
) -> dict[str, Tensor | list[Tensor]]:
    """Deviation correction and anomaly maps for images in [-1, 1] (B, 3, H, W).

    Returns every map kind of Table 4 (B, 1, H, W), the corrected image x̃0, the VAE
    reconstruction, and the z̃0 of every correction step (for Fig. 4-style figures)."""
    cfg = model.cfg
    z0 = vae.encode(images)
    steps = correction_timesteps(
        cfg.T,
        reverse_steps or cfg.reverse_steps,
        start_t if start_t is not None else cfg.start_t,
        cfg.spacing,
    )
    z_corr, trajectory = correct(
        lambda z, t: model.dod(z, t, labels), z0, model.schedule, steps, strategy or cfg.strategy
    )
    recon, x_corr = vae.decode(z0), vae.decode(z_corr)
    x_ref = images if cfg.pixel_reference == "input" else recon
    maps = discrepancy_maps(
        z0, z_corr, x_ref, x_corr, cfg.tau_l, cfg.tau_p, cfg.sigma_l, cfg.sigma_p, cfg.boundary
    )
    return {**maps, "corrected": x_corr, "reconstruction": recon, "trajectory": trajectory}


def image_score(maps: Tensor) -> Tensor:
    """Image score: the maximum of each (B, 1, H, W) map (official code; see module doc)."""
    return maps.flatten(1).amax(1)


def latent_training_set(
    cfg: DeCoDiffConfig, data: DataSpec, run_dir: Path | str, crop: bool = True
) -> tuple[Tensor, Tensor]:
    """DeCo-Diff's training images (uint8, every category of the run, without ``cfg.holdout``)
    and class indices; the small autoencoder of a run is trained on exactly these
    (``autoencoder_stage``). ``crop=False``: at ``load_size``, uncropped (``augment`` crops)."""
    cats = categories_of(data)
    missing = [c for c in cats if cfg.classes and c not in cfg.classes]
    if missing:
        raise ValueError(f"categories {missing} are not in the model's classes {cfg.classes}")
    size, load = cfg.image_size, cfg.load_size
    if not crop and load is not None:
        size = load
    exclude = holdout(data.source, cfg.holdout)
    parts = [
        training_images(
            data.source, data.root, c, size, Path(run_dir), load_size=load, exclude=exclude
        )[0]
        for c in cats
    ]
    labels = [
        torch.full((len(p),), cfg.classes.index(c) if cfg.classes else 0)
        for c, p in zip(cats, parts, strict=True)
    ]
    return torch.cat(parts), torch.cat(labels)


def augment(
    images: Tensor, size: int, translate: int, rotate_180: bool, g: torch.Generator,
    draw: str = "uniform", fill: str = "margin",
) -> Tensor:  # fmt: skip
    """The training augmentation of uint8 (N, C, L, L) images → (N, C, size, size): the centre
    crop, with p = 0.5 of an image shifted by ``translate`` pixels — ``draw="uniform"``: each
    axis from ± translate; ``"constant"``: the content moves by +translate on both axes (the
    official code's Affine) — then rotated by 180° with p = 0.5 if ``rotate_180``. Shifting the
    image and cropping its centre is cropping a shifted window (content moved by +d: the window
    moves by −d). ``fill="margin"``: the shift stays within the crop margin, so no fill enters;
    ``"reflect"``: the images are first padded by ``translate`` pixels by reflection."""
    if fill == "reflect" and translate:
        pad = F.pad(images.float(), (translate,) * 4, mode="reflect")
        images = pad.round().to(images.dtype)
    n, top = len(images), (images.shape[-1] - size) // 2
    if translate > top:
        raise ValueError(f"translate {translate} exceeds the crop margin {top}")
    if draw == "constant":
        shift = torch.full((n, 2), -translate)
    else:
        shift = torch.randint(-translate, translate + 1, (n, 2), generator=g)
    shift = shift * (torch.rand(n, generator=g) < 0.5)[:, None]
    out = torch.stack(
        [
            im[:, top + dy : top + dy + size, top + dx : top + dx + size]
            for im, (dy, dx) in zip(images, shift.tolist(), strict=True)
        ]
    )
    if rotate_180:
        turn = (torch.rand(n, generator=g) < 0.5)[:, None, None, None]
        out = torch.where(turn, out.flip(-2, -1), out)
    return out


class AutoencoderFeed(Feed):
    """Training images for the small autoencoder, in [-1, 1], randomly flipped horizontally
    (more views of few images)."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __call__(self, idx: Tensor, gen: torch.Generator, device: object) -> tuple:
        x = to_model_range(self.images[idx], device)
        flip = torch.rand(len(idx), generator=gen) < 0.5
        return (torch.where(flip.to(device)[:, None, None, None], x.flip(-1), x),)


def autoencoder_stage(
    cfg: DeCoDiffConfig, tcfg: TrainConfig, data: DataSpec, run_dir: Path
) -> Stage:
    """The small autoencoder (``cfg.vae``) as the first training stage of a run: Adam, cosine
    decay to lr/10, on the run's training images; saved into RUN/vae with its scale."""
    images, _ = latent_training_set(cfg, data, run_dir)
    v = cfg.vae
    train = TrainConfig(
        steps=v.steps, batch_size=v.batch_size, lr=v.lr, min_lr=v.lr / 10, optimizer="adam",
        seed=tcfg.seed, checkpoint_every=max(1, v.steps // 3), log_every=1,
        mixed_precision=tcfg.mixed_precision,
    )  # fmt: skip

    def save(trainer: nn.Module, folder: Path) -> None:
        device = next(trainer.parameters()).device
        with_scale(trainer.ae, images, device).vae.save_pretrained(folder)

    return Stage(
        "vae", lambda: AutoencoderTrainer(v), AutoencoderFeed(images), train, save, tcfg.seed
    )


class DeCoDiffFeed(Feed):
    """Latents of normal images of every category, sampled from q(z | x) as the official
    code does, with their class indices."""

    def __init__(
        self, cfg: DeCoDiffConfig, data: DataSpec, run_dir: Path, accelerator: Any
    ) -> None:
        images, self.labels = latent_training_set(cfg, data, run_dir)
        vae = _frozen_vae(cfg, run_dir, accelerator.device)
        parts = [_posterior(vae, images[i : i + 32]) for i in range(0, len(images), 32)]
        self.mean, self.std = (torch.cat([p[k].cpu() for p in parts]) for k in (0, 1))

    def __len__(self) -> int:
        return len(self.mean)

    def __call__(self, idx: Tensor, gen: torch.Generator, device: object) -> tuple:
        z = self.mean[idx] + self.std[idx] * torch.randn(self.mean[idx].shape, generator=gen)
        return z.to(device), self.labels[idx].to(device)


class AugmentedLatentFeed(Feed):
    """The official training feed: each draw augments the images (``augment``), encodes them
    with the frozen VAE and samples q(z | x) — the official code encodes every batch."""

    def __init__(
        self, cfg: DeCoDiffConfig, data: DataSpec, run_dir: Path, accelerator: Any
    ) -> None:
        self.cfg = cfg
        self.images, self.labels = latent_training_set(cfg, data, run_dir, crop=False)
        self.vae = _frozen_vae(cfg, run_dir, accelerator.device)

    def __len__(self) -> int:
        return len(self.images)

    def __call__(self, idx: Tensor, gen: torch.Generator, device: object) -> tuple:
        cfg = self.cfg
        x = augment(
            self.images[idx], cfg.image_size, cfg.translate, cfg.rotate_180, gen,
            cfg.translate_draw, cfg.shift_fill,
        )  # fmt: skip
        mean, std = _posterior(self.vae, x)
        z = mean + std * torch.randn(mean.shape, generator=gen).to(device)
        return z, self.labels[idx].to(device)


@torch.no_grad()
def _posterior(vae: LatentVAE, images: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of q(z | x) for uint8 images, on the VAE's device."""
    device = next(vae.parameters()).device
    mean, std = vae.encode_dist(to_model_range(images, device))
    return mean.float(), std.float()


def _frozen_vae(cfg: DeCoDiffConfig, run_dir: Path | str, device: object) -> LatentVAE:
    return load_vae_folder(cfg.vae, Path(run_dir) / "vae").to(device).eval()


def run_vae(run_dir: Path | str, device: str | torch.device = "cpu") -> LatentVAE:
    """The frozen autoencoder of a DeCo-Diff run (pretrained, or trained into RUN_DIR/vae)."""
    from n2n_core.methods import load_run

    return _frozen_vae(load_run(run_dir)[0], run_dir, device)


class Detector(nn.Module):
    """A trained DoD model with the autoencoder it works in: what ``predict`` takes."""

    def __init__(self, model: DeCoDiff, vae: LatentVAE) -> None:
        super().__init__()
        self.model, self.vae, self.cfg = model, vae, model.cfg


class DeCoDiffMethod(Method):
    name = "decodiff"
    description = "DeCo-Diff: deviation correction in a VAE latent space, one multi-class model"
    config = DeCoDiffConfig
    profiles = PROFILES
    train_profiles = TRAIN_PROFILES
    dataset_train: ClassVar = {
        ("paper", "visa"): {"epochs": 200},
        ("official", "visa"): {"epochs": 200},
    }  # §5.1
    dataset_model: ClassVar = {("official", "visa"): {"rotate_180": True}}  # official VisA loader
    per_category = False
    options = (
        Option("--vae", "model.vae.pretrained", "pretrained AutoencoderKL: hub id or local folder",
               type=local_or_hub),
        Option("--vae-steps", "model.vae.steps", "training steps of the small autoencoder",
               type=positive(int)),
        Option("--strategy", "model.strategy", "correction strategy (Table 3)",
               choices=("z_t-1", "z_0")),
        Option("--reverse-steps", "model.reverse_steps", "correction steps (default 5)",
               type=positive(int)),
        Option("--anomaly-map", "model.anomaly_map", "Table 4",
               choices=("pixel", "latent", "arithmetic", "geometric")),
        Option("--unconditional", "model.classes", "no class conditioning for --category all",
               const=()),
    )  # fmt: skip
    import_options = (
        Option("--config", "config", "UNet_XS..UNet_XL or a JSON file of its arguments",
               default="UNet_L"),
        Option("--classes", "classes", "mvtec | visa (the official class order) or NAME,NAME,... "
               "(default: the official order of --data)"),
        Option("--vae", "vae", "the autoencoder: a folder or hub id (default: the paper's)",
               type=local_or_hub),
    )  # fmt: skip
    eval_batch_size = 32
    repair_symbol = "x̃0"

    def for_categories(
        self, cfg: DeCoDiffConfig, categories: list[str], explicit: frozenset[str]
    ) -> DeCoDiffConfig:
        """Conditioned on the categories of a multi-category run, unless ``classes`` was set."""
        if "classes" in explicit:
            return cfg
        return replace(cfg, classes=tuple(categories) if len(categories) > 1 else ())

    def build(self, cfg: DeCoDiffConfig) -> DeCoDiff:
        return DeCoDiff(cfg)

    def stand_in(self, cfg: DeCoDiffConfig, folder: Path) -> DeCoDiffConfig:
        if not cfg.vae.pretrained:
            return cfg
        vae = untrained_like(cfg.vae.pretrained, Path(folder) / "vae-stand-in")
        return replace(cfg, vae=replace(cfg.vae, pretrained=vae))

    def stages(
        self, cfg: DeCoDiffConfig, tcfg: TrainConfig, data: DataSpec, run_dir: Path
    ) -> list[Stage]:
        return [] if cfg.vae.pretrained else [autoencoder_stage(cfg, tcfg, data, run_dir)]

    def feed(
        self, cfg: DeCoDiffConfig, tcfg: TrainConfig, data: DataSpec, run_dir: Path,
        accelerator: Any,
    ) -> Feed:  # fmt: skip
        augmented = cfg.translate or cfg.rotate_180
        return (AugmentedLatentFeed if augmented else DeCoDiffFeed)(cfg, data, run_dir, accelerator)

    def load(
        self, run_dir: Path, cfg: DeCoDiffConfig, weights: dict[str, Tensor], device: Any
    ) -> Detector:
        model = super().load(run_dir, cfg, weights, device)
        return Detector(model, _frozen_vae(cfg, run_dir, device))

    def predict(
        self, model: Detector, images: Tensor, class_index: int, g: torch.Generator
    ) -> Prediction:
        """Deviation correction and Eq. 15; the map is ``cfg.anomaly_map``, and every map
        kind of Table 4 is in the extras with its image scores (``score_<kind>``)."""
        cfg = model.cfg
        labels = torch.full((len(images),), class_index, device=images.device)
        res = detect(model.model, model.vae, images, labels)
        extras = {"repair": res["corrected"].float()}
        for k in MAP_KINDS:
            extras[k] = res[k].float()
            extras[f"score_{k}"] = image_score(extras[k])
        return Prediction(extras[cfg.anomaly_map], extras[f"score_{cfg.anomaly_map}"], extras)

    def import_official(
        self, checkpoint: Path, data: DataSpec, config: str = "UNet_L",
        classes: str | None = None, vae: str | None = None,
    ) -> tuple[DeCoDiff, DeCoDiffConfig, TrainConfig]:  # fmt: skip
        """A released DeCo-Diff checkpoint as an official-profile model: ``config`` a preset name
        (UNet_XS … UNet_XL) or a JSON file of the official ``create_unet_model`` arguments;
        ``classes`` "mvtec" / "visa" (the official class ids) or comma-separated names;
        default: the official order of the dataset evaluated on."""
        if classes is None and data.source not in OFFICIAL_CLASSES:
            raise ValueError(
                f"--classes: no official class order for {data.source!r} (known: "
                f"{sorted(OFFICIAL_CLASSES)}); give the checkpoint's classes as NAME,NAME,..."
            )
        classes = classes or data.source
        if config in OFFICIAL_UNETS:
            unet = OFFICIAL_UNETS[config]
        elif Path(config).is_file():
            unet = OfficialUNetConfig.from_file(config)
        else:
            raise ValueError(
                f"--config {config!r}: expected one of {sorted(OFFICIAL_UNETS)} or a JSON file"
            )
        names = OFFICIAL_CLASSES.get(classes) or tuple(c for c in classes.split(",") if c)
        base = PROFILES["official"]
        size = (unet.latent_size or 32) * base.vae.factor  # create_unet_model's default: 32
        cfg = replace(
            base, image_size=size, load_size=size * 9 // 8,  # 256 → 288
            official_unet=_unsized(unet), classes=names,
            vae=replace(base.vae, pretrained=vae or base.vae.pretrained),
        )  # fmt: skip
        net = load_official(checkpoint, cfg.official_config)  # checks every key and shape
        model = DeCoDiff(cfg)
        model.net.load_state_dict(net.state_dict())
        return model.eval(), cfg, TRAIN_PROFILES["official"]

    def dataset(self, cfg: DeCoDiffConfig, samples: list) -> Any:
        from n2n_core.data import AnomalyDataset

        return AnomalyDataset(samples, cfg.image_size, (-1.0, 1.0), load_size=cfg.load_size)

    def eval_info(self, cfg: DeCoDiffConfig) -> dict[str, Any]:
        return {
            "anomaly_map": cfg.anomaly_map,
            "strategy": cfg.strategy,
            "reverse_steps": cfg.reverse_steps,
            "timesteps": cfg.timesteps,
            "network": cfg.network,
            "pixel_reference": cfg.pixel_reference,
            "boundary": cfg.boundary,
            "image_score": "max of the map",
        }


METHOD = DeCoDiffMethod()
