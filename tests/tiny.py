"""Model configs small enough for unit tests (32 px, a few thousand parameters)."""

from dataclasses import replace

from n2n_core.methods import decodiff
from n2n_core.methods.diffusionad import PROFILES
from n2n_core.models import SegmenterConfig
from n2n_core.models.vae import VAEConfig

TINY_DIFFUSIONAD = replace(
    PROFILES["smoke"],
    image_size=32,
    denoiser=replace(
        PROFILES["smoke"].denoiser,
        channels=(8, 16),
        attention_resolutions=(),
        norm_num_groups=4,
    ),
    segmenter=SegmenterConfig(base=4, multipliers=(1, 2, 4)),
)

TINY_DECODIFF = replace(
    decodiff.PROFILES["smoke"],
    image_size=32,
    network="unet2d",  # the small UNet2DModel: the official network needs 32 channels per level
    vae=VAEConfig(channels=(8, 8, 8), norm_num_groups=4, steps=3, batch_size=4),
    unet=replace(
        decodiff.PROFILES["smoke"].unet,
        channels=(8, 16),
        attention_resolutions=(4,),
        attention_head_dim=8,
        norm_num_groups=4,
    ),
    patch_sizes=(1, 2, 4),
)
