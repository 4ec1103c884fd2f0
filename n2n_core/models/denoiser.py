"""The denoising sub-network ε_θ(x_t, t) of DiffusionAD (§3.2, §4.2) on diffusers' UNet2DModel.

Paper configuration: base 128 channels with multipliers (1, 1, 2, 2, 4, 4) (128 … 512 from
256 px down to 8 px), 2 residual blocks per level, BigGAN-style resampling residual blocks,
scale-shift time conditioning, GroupNorm(32), attention at 32, 16 and 8 px, sinusoidal time
embedding. diffusers takes one head *size*; 128 gives the paper's 4 heads at the 512-channel
levels (16 px, 8 px, middle) and 2 heads at 32 px.

DeCo-Diff's DoD predictor is the same kind of attention UNet on 4-channel latents
(``in_channels=4``), optionally class-conditioned (``num_classes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import UNet2DModel

__all__ = ["DenoiserConfig", "make_denoiser"]


@dataclass(frozen=True)
class DenoiserConfig:
    image_size: int = 256
    channels: tuple[int, ...] = (128, 128, 256, 256, 512, 512)
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    layers_per_block: int = 2
    attention_head_dim: int = 128
    norm_num_groups: int = 32
    dropout: float = 0.0
    in_channels: int = 3
    num_classes: int = 0  # > 0: a learned class embedding added to the time embedding


def make_denoiser(cfg: DenoiserConfig) -> UNet2DModel:
    """A UNet2DModel predicting ε (same shape as its input)."""
    res = [cfg.image_size // 2**i for i in range(len(cfg.channels))]
    if res[-1] < 1 or cfg.image_size % 2 ** (len(cfg.channels) - 1):
        raise ValueError(
            f"image_size {cfg.image_size} cannot be halved {len(cfg.channels) - 1} times"
        )
    attn = [r in cfg.attention_resolutions for r in res]
    for ch, a in zip(cfg.channels, attn, strict=True):
        if a and (ch < cfg.attention_head_dim or ch % cfg.attention_head_dim):
            raise ValueError(
                f"attention_head_dim {cfg.attention_head_dim} must divide the {ch} channels of "
                "every attention level (heads = channels // attention_head_dim)"
            )
    return UNet2DModel(
        sample_size=cfg.image_size,
        in_channels=cfg.in_channels,
        out_channels=cfg.in_channels,
        block_out_channels=cfg.channels,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        downsample_type="resnet",
        upsample_type="resnet",
        resnet_time_scale_shift="scale_shift",
        dropout=cfg.dropout,
        time_embedding_type="positional",
        num_class_embeds=cfg.num_classes or None,
    )
