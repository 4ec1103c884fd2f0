"""The denoising sub-network ε_θ(x_t, t) of DiffusionAD (§3.2, §4.2) on diffusers' UNet2DModel.

Paper configuration: base 128 channels with multipliers (1, 1, 2, 2, 4, 4) (128 … 512 from
256 px down to 8 px), 2 residual blocks per level, BigGAN-style resampling residual blocks,
scale-shift time conditioning, GroupNorm(32), attention at 32, 16 and 8 px, sinusoidal time
embedding. diffusers takes one head *size*; 128 gives 4 heads at the 512-channel levels
(16 px, 8 px, middle) and 2 heads at 32 px. The official code's network (models/
Recon_subnetwork.py, 131.7 M parameters) differs in three options: the time embedding added to
the features (``time_conditioning="additive"``) instead of scaling and shifting them, 4 heads
at every attention level (``num_heads=4``), and zeros in the layers it wraps in
``zero_module`` (``zero_init``: each residual block's last convolution, each attention's output
projection, the output convolution).

DeCo-Diff's DoD predictor is the same kind of attention UNet on 4-channel latents
(``in_channels=4``), optionally class-conditioned (``num_classes``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention
from torch import nn

__all__ = ["DenoiserConfig", "make_denoiser"]


@dataclass(frozen=True)
class DenoiserConfig:
    # the sample size; None in a method's config, which builds the network at its image (or
    # latent) size
    image_size: int | None = None
    channels: tuple[int, ...] = (128, 128, 256, 256, 512, 512)
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    layers_per_block: int = 2
    attention_head_dim: int = 128
    norm_num_groups: int = 32
    dropout: float = 0.0
    in_channels: int = 3
    num_classes: int = 0  # > 0: a learned class embedding added to the time embedding
    time_conditioning: str = "scale_shift"  # "scale_shift" (paper) | "additive" (official code)
    num_heads: int | None = None  # every attention level with this many heads; None: by size
    zero_init: bool = False  # the official code's zero_module layers start at zero
    # BigGAN-style residual up/downsampling blocks at "all" levels (the official code) or at
    # the "attention_levels" only, strided / interpolating convolutions elsewhere (how n2n's
    # first networks were built; diffusers' plain blocks resample with convolutions)
    resnet_resampling: str = "attention_levels"

    def __post_init__(self) -> None:
        if self.resnet_resampling not in ("attention_levels", "all"):
            raise ValueError(
                "resnet_resampling must be 'attention_levels' or 'all', "
                f"got {self.resnet_resampling!r}"
            )
        if self.time_conditioning not in ("scale_shift", "additive"):
            raise ValueError(
                "time_conditioning must be 'scale_shift' or 'additive', "
                f"got {self.time_conditioning!r}"
            )


def make_denoiser(cfg: DenoiserConfig) -> UNet2DModel:
    """A UNet2DModel predicting ε (same shape as its input)."""
    if cfg.image_size is None:
        raise ValueError("DenoiserConfig.image_size is None: give the sample size")
    res = [cfg.image_size // 2**i for i in range(len(cfg.channels))]
    if res[-1] < 1 or cfg.image_size % 2 ** (len(cfg.channels) - 1):
        raise ValueError(
            f"image_size {cfg.image_size} cannot be halved {len(cfg.channels) - 1} times"
        )
    attn = [r in cfg.attention_resolutions for r in res]
    for ch, a in zip(cfg.channels, attn, strict=True):
        if cfg.num_heads is not None:
            if a and ch % cfg.num_heads:
                raise ValueError(f"num_heads {cfg.num_heads} must divide the {ch} channels")
        elif a and (ch < cfg.attention_head_dim or ch % cfg.attention_head_dim):
            raise ValueError(
                f"attention_head_dim {cfg.attention_head_dim} must divide the {ch} channels of "
                "every attention level (heads = channels // attention_head_dim)"
            )
    head_dim = cfg.attention_head_dim  # with num_heads: one that divides every attention width
    if cfg.num_heads is not None:
        head_dim = math.gcd(*[ch for ch, a in zip(cfg.channels, attn, strict=True) if a] or [1])
    plain = ("DownBlock2D", "UpBlock2D")
    if cfg.resnet_resampling == "all":
        plain = ("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D")
    net = UNet2DModel(
        sample_size=cfg.image_size,
        in_channels=cfg.in_channels,
        out_channels=cfg.in_channels,
        block_out_channels=cfg.channels,
        down_block_types=tuple("AttnDownBlock2D" if a else plain[0] for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else plain[1] for a in reversed(attn)),
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=head_dim,
        norm_num_groups=cfg.norm_num_groups,
        downsample_type="resnet",
        upsample_type="resnet",
        resnet_time_scale_shift="scale_shift"
        if cfg.time_conditioning == "scale_shift"
        else "default",
        dropout=cfg.dropout,
        time_embedding_type="positional",
        num_class_embeds=cfg.num_classes or None,
    )
    for name, module in net.named_modules():
        if cfg.num_heads is not None and isinstance(module, Attention):
            module.heads = cfg.num_heads  # the projections are unchanged: heads × size = C
            module.scale = (module.inner_dim // cfg.num_heads) ** -0.5
        if cfg.zero_init and (name == "conv_out" or name.endswith((".conv2", ".to_out.0"))):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)
    return net
