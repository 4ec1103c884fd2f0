"""Model configs small enough for unit tests (32 px, a few thousand parameters)."""

from dataclasses import replace

from n2n_core.methods.diffusionad import PROFILES
from n2n_core.models import SegmenterConfig

TINY_DIFFUSIONAD = replace(
    PROFILES["smoke"],
    image_size=32,
    denoiser=replace(
        PROFILES["smoke"].denoiser,
        image_size=32,
        channels=(8, 16),
        attention_resolutions=(),
        norm_num_groups=4,
    ),
    segmenter=SegmenterConfig(base=4, multipliers=(1, 2, 4)),
)
