"""The latent space of DeCo-Diff (§5): a KL autoencoder on diffusers' ``AutoencoderKL``.

Paper profile: a pretrained, frozen KL-f8 VAE (the Stable Diffusion VAE, 256² → 32²×4),
latents scaled by its ``scaling_factor`` (0.18215). Smoke profile: a small KL autoencoder
trained on the data in minutes on CPU (L1 + a tiny KL term, as LDM's first stage without
its perceptual and adversarial terms), cached in the run folder; its scaling factor is
1/std of the training latents, the rule LDM used to pick 0.18215.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from n2n_core.progress import progress

__all__ = ["LatentVAE", "VAEConfig", "ensure_vae", "load_pretrained_vae", "psnr", "train_vae"]

SD_VAE = "stabilityai/sd-vae-ft-ema"


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
    try:
        if local.is_dir():
            return LatentVAE(AutoencoderKL.from_pretrained(local))
        return LatentVAE(AutoencoderKL.from_pretrained(name_or_path))
    except (OSError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        raise RuntimeError(
            f"could not load the VAE {name_or_path!r}"
            f"{' (HF_HUB_OFFLINE is set, so only the local cache was tried)' if offline else ''}."
            f" With network access it downloads from the Hugging Face hub once (e.g. {SD_VAE});"
            " without it, copy the model folder (config.json + diffusion_pytorch_model"
            ".safetensors) here, e.g. `huggingface-cli download "
            f"{SD_VAE} --local-dir models/sd-vae-ft-ema` on a connected machine, and pass that"
            " folder (--vae DIR, or VAEConfig.pretrained); set HF_HUB_OFFLINE=1 to use an already"
            f" cached copy without network. Cause: {type(e).__name__}: {e}"
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


def train_vae(
    images: Tensor, cfg: VAEConfig, seed: int = 0, device: str | torch.device = "cpu"
) -> tuple[LatentVAE, list[float]]:
    """Train the small KL autoencoder on uint8 images (N, 3, S, S); returns it with its
    scaling factor set to 1/std of the training latents, and the loss per step."""
    torch.manual_seed(seed)
    ae = make_autoencoder(cfg).to(device).train()
    opt = torch.optim.Adam(ae.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps, eta_min=cfg.lr / 10)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in progress(range(cfg.steps), desc="autoencoder"):
        idx = torch.randint(len(images), (cfg.batch_size,), generator=g)
        x = (images[idx].float() / 127.5 - 1).to(device)
        flip = torch.rand(len(idx), generator=g) < 0.5  # horizontal flips: more views
        x = torch.where(flip.to(device)[:, None, None, None], x.flip(-1), x)
        dist = ae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(device)
        rec = ae.decode(z).sample
        loss = (rec - x).abs().mean() + cfg.kl_weight * dist.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    ae.eval()
    with torch.no_grad():
        zs = torch.cat(
            [
                ae.encode((images[i : i + 64].float() / 127.5 - 1).to(device)).latent_dist.mean
                for i in range(0, len(images), 64)
            ]
        )
    ae.register_to_config(scaling_factor=float(1 / zs.std()))
    return LatentVAE(ae), losses


def ensure_vae(
    cfg: VAEConfig, folder: Path | str, images: Tensor | None = None, seed: int = 0
) -> LatentVAE:
    """The pretrained VAE, or the small one cached in ``folder`` (trained on ``images`` the
    first time; saved atomically with its loss curve)."""
    if cfg.pretrained:
        return load_pretrained_vae(cfg.pretrained)
    from diffusers import AutoencoderKL

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return LatentVAE(AutoencoderKL.from_pretrained(folder))
    if images is None:
        raise FileNotFoundError(f"{folder} holds no trained autoencoder and no images were given")
    start = time.perf_counter()
    vae, losses = train_vae(images, cfg, seed)
    seconds = time.perf_counter() - start
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.vae.save_pretrained(tmp)
    (tmp / "losses.json").write_text(json.dumps([round(v, 6) for v in losses]))
    (tmp / "train_info.json").write_text(json.dumps({"steps": cfg.steps, "seconds": seconds}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return vae
