"""The latent space of DeCo-Diff (§5): a KL autoencoder on diffusers' ``AutoencoderKL``.

Paper profile: a pretrained, frozen KL-f8 VAE (the Stable Diffusion VAE, 256² → 32²×4),
latents scaled by its ``scaling_factor`` (0.18215). Smoke profile: a small KL autoencoder
trained on the data in minutes on CPU (L1 + a tiny KL term, as LDM's first stage without
its perceptual and adversarial terms), trained as the first stage of the run into its
``vae/`` folder; its scaling factor is 1/std of the training latents, the rule LDM used to
pick 0.18215.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from n2n_core.data.training import to_model_range

__all__ = [
    "SD_VAE_ARCHITECTURE",
    "AutoencoderTrainer",
    "LatentVAE",
    "VAEConfig",
    "load_pretrained_vae",
    "load_vae",
    "make_autoencoder",
    "psnr",
    "untrained_like",
    "with_scale",
]

SD_VAE = "stabilityai/sd-vae-ft-ema"
# its architecture (the hub's config.json), for an untrained stand-in where the weights are not
# here (``plan`` counts FLOPs and bytes, which need none)
SD_VAE_ARCHITECTURE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "norm_num_groups": 32, "sample_size": 256,
    "scaling_factor": 0.18215,
}  # fmt: skip


@dataclass(frozen=True)
class VAEConfig:
    pretrained: str | None = None  # hub id or local folder; None: train the small one below
    channels: tuple[int, ...] = (16, 32, 32)  # downsampling factor f = 2^(len - 1)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 8
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    kl_weight: float = 1e-6

    @property
    def factor(self) -> int:
        return 8 if self.pretrained else 2 ** (len(self.channels) - 1)


class LatentVAE(nn.Module):
    """Frozen encoder/decoder between images in [-1, 1] and scaled latents."""

    def __init__(self, vae: nn.Module, scale: float | None = None) -> None:
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.scale = float(scale if scale is not None else vae.config.scaling_factor)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode_dist(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of q(z | x), both scaled."""
        dist = self.vae.encode(x).latent_dist
        return dist.mean * self.scale, dist.std * self.scale

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """The latent mean (deterministic; what evaluation uses)."""
        return self.encode_dist(x)[0]

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z / self.scale).sample.clamp(-1, 1)


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB per image, for images in [-1, 1] (peak-to-peak 2)."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4 / mse.clamp_min(1e-12))


def load_pretrained_vae(name_or_path: str) -> LatentVAE:
    """A pretrained AutoencoderKL from a local folder or the Hugging Face hub."""
    from diffusers import AutoencoderKL

    local = Path(name_or_path).expanduser()
    if str(name_or_path).startswith(("/", "./", "../", "~")) or local.exists():
        if not (local / "config.json").is_file():  # a path, never tried as a hub id
            raise FileNotFoundError(
                f"VAE folder {local} {'has no config.json' if local.is_dir() else 'does not exist'}"
                f": expected a diffusers AutoencoderKL folder (config.json + "
                f"diffusion_pytorch_model.safetensors), e.g. `huggingface-cli download {SD_VAE} "
                "--local-dir models/sd-vae-ft-ema` on a connected machine"
            )
    try:
        if local.is_dir():
            return LatentVAE(AutoencoderKL.from_pretrained(local))
        return LatentVAE(AutoencoderKL.from_pretrained(name_or_path))
    except (OSError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        if "config.json" in str(e):  # diffusers' wording points at a file, not at the cause
            e = OSError(
                "it is not in the local Hugging Face cache"
                + (" (HF_HUB_OFFLINE is set: nothing was downloaded)" if offline else "")
                + " and the hub could not be reached"
            )
        raise RuntimeError(
            f"could not load the VAE {name_or_path!r}"
            f"{' (HF_HUB_OFFLINE is set, so only the local cache was tried)' if offline else ''}."
            f" With network access it downloads from the Hugging Face hub once (e.g. {SD_VAE});"
            " without it, copy the model folder (config.json + diffusion_pytorch_model"
            ".safetensors) here, e.g. `huggingface-cli download "
            f"{SD_VAE} --local-dir models/sd-vae-ft-ema` on a connected machine, and pass that"
            " folder (--vae DIR, or VAEConfig.pretrained); set HF_HUB_OFFLINE=1 to use an already"
            f" cached copy without network. Cause: {e}"
        ) from e


def make_autoencoder(cfg: VAEConfig) -> nn.Module:
    from diffusers import AutoencoderKL

    n = len(cfg.channels)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        mid_block_add_attention=False,
    )


class AutoencoderTrainer(nn.Module):
    """The small KL autoencoder with its training loss: L1 reconstruction of a latent drawn
    from q(z | x) plus ``kl_weight`` × KL(q(z | x) || N(0, I)) (LDM's first stage without
    its perceptual and adversarial terms). Trained by the generic loop as a stage of a
    DeCo-Diff run (``n2n_core.methods.decodiff``)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ae = make_autoencoder(cfg)

    def forward(self, x: Tensor, g: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        dist = self.ae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(x.device)
        l1 = (self.ae.decode(z).sample - x).abs().mean()
        kl = dist.kl().mean()
        return l1 + self.cfg.kl_weight * kl, {"l1": l1, "kl": kl}


@torch.no_grad()
def with_scale(ae: nn.Module, images: Tensor, device: str | torch.device = "cpu") -> LatentVAE:
    """The trained autoencoder, frozen, with its scaling factor set to 1/std of the latent
    means of ``images`` (uint8, N×3×S×S): the rule by which LDM chose 0.18215."""
    ae = ae.to(device).eval()
    zs = torch.cat(
        [
            ae.encode(to_model_range(images[i : i + 64], device)).latent_dist.mean
            for i in range(0, len(images), 64)
        ]
    )
    ae.register_to_config(scaling_factor=float(1 / zs.std()))
    return LatentVAE(ae)


def untrained_like(name_or_path: str, folder: Path | str) -> str:
    """An untrained AutoencoderKL of ``name_or_path``'s architecture (its config.json when it
    is a local folder, SD's otherwise) saved into ``folder``; returns the folder."""
    from diffusers import AutoencoderKL

    local = Path(name_or_path).expanduser()
    if (local / "config.json").is_file():
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(local))
    else:
        vae = AutoencoderKL(**SD_VAE_ARCHITECTURE)
    vae.save_pretrained(folder)
    return str(folder)


def load_vae(cfg: VAEConfig, folder: Path | str) -> LatentVAE:
    """The pretrained VAE of ``cfg``, or the small one a run trained into ``folder``."""
    if cfg.pretrained:
        return load_pretrained_vae(cfg.pretrained)
    from diffusers import AutoencoderKL

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} holds no trained autoencoder: it is the first stage of the run's training"
            " (python -m n2n_core train --method decodiff ..., or --resume an interrupted run)"
        )
    return LatentVAE(AutoencoderKL.from_pretrained(folder))
