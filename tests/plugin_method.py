"""A fourth method as a user would add one: this file and its one ``register()`` call, no
edit to n2n. A per-pixel Gaussian of the normal images (mean and log-variance learned by
gradient steps on their negative log-likelihood); the anomaly map is the squared z-score,
box-blurred over ``blur`` pixels, its own command-line option (``--blur``).

tests/test_plugins.py installs it through the entry point group ``n2n_core.methods`` and drives
it with ``python -m n2n_core train --method pixelgauss --blur 3``, ``evaluate`` and
``reproduce pixelgauss-synthetic``.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from n2n_core import methods
from n2n_core.config import TrainConfig
from n2n_core.data.training import training_images
from n2n_core.methods import Feed, Method, Option, Prediction
from n2n_core.options import positive


@dataclass(frozen=True)
class PixelGaussConfig:
    image_size: int = 32
    blur: int = 1  # box filter side for the map (1: none)


class PixelGauss(nn.Module):
    def __init__(self, cfg: PixelGaussConfig) -> None:
        super().__init__()
        self.cfg = cfg
        shape = (1, 3, cfg.image_size, cfg.image_size)
        self.mu, self.log_var = nn.Parameter(torch.zeros(shape)), nn.Parameter(torch.zeros(shape))

    def forward(self, x, g):
        nll = ((x - self.mu) ** 2 * torch.exp(-self.log_var) + self.log_var).mean() / 2
        return nll, {"nll": nll}

    def anomaly_map(self, x):
        z2 = ((x - self.mu) ** 2 * torch.exp(-self.log_var)).mean(1, keepdim=True)
        k = self.cfg.blur
        blurred = F.avg_pool2d(z2, k, stride=1, padding=k // 2, count_include_pad=False)
        return blurred[..., : x.shape[-2], : x.shape[-1]]  # an even k pads one more


class Images(Feed):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __call__(self, idx, g, device):
        return (self.images[idx].float().div(127.5).sub(1).to(device),)


class PixelGaussMethod(Method):
    name = "pixelgauss"
    description = "per-pixel Gaussian of the normal images (a plug-in example)"
    config = PixelGaussConfig
    options = (Option("--blur", "model.blur", "box filter side of the map", type=positive(int)),)
    profiles: ClassVar = {"smoke": PixelGaussConfig(), "paper": PixelGaussConfig(256)}
    train_profiles: ClassVar = dict.fromkeys(
        ("smoke", "paper"), TrainConfig(steps=20, batch_size=4, lr=0.05, checkpoint_every=10)
    )

    def build(self, cfg):
        return PixelGauss(cfg)

    def feed(self, cfg, tcfg, data, run_dir, accelerator):
        return Images(training_images(data.source, data.root, data.category, cfg.image_size)[0])

    def predict(self, model, images, class_index, g):
        maps = model.anomaly_map(images)
        return Prediction(maps, maps.flatten(1).amax(1))

    def eval_info(self, cfg):
        return {"blur": cfg.blur}


METHOD = methods.register(PixelGaussMethod())
