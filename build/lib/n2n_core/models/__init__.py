"""Networks: the ε-prediction UNet (diffusers UNet2DModel) and the segmentation U-Net."""

from n2n_core.models.denoiser import DenoiserConfig, make_denoiser
from n2n_core.models.segmenter import SegmentationNet, SegmenterConfig
from n2n_core.models.util import count_parameters

__all__ = [
    "DenoiserConfig",
    "SegmentationNet",
    "SegmenterConfig",
    "count_parameters",
    "make_denoiser",
]
