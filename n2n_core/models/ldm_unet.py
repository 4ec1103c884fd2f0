"""The official DeCo-Diff DoD network, built from diffusers parts, and its checkpoint converter.

The official code (github.com/farzad-bz/DeCo-Diff, ``models.py``) uses LDM's ``UNetModel``:
per level ``num_res_blocks`` residual blocks, each followed by a spatial transformer
(self-attention, cross-attention to a one-token class context, GEGLU feed-forward, depth 1),
attention at every level and in the middle block, a fixed head size ``model_channels //
num_heads`` (so the number of heads grows with the width), GroupNorm(32), time embedding
4 × ``model_channels``. The class id enters as ``context``: an embedding table
(``cond_stage_model.embedding``, ncls × context_dim) gives a sequence of one token.

That is exactly diffusers' ``UNet2DConditionModel`` with cross-attention (the Stable Diffusion
UNet family) plus the class table; ``convert_official`` renames the checkpoint's keys (LDM's
``input_blocks``/``output_blocks`` layout) to it. Timesteps are the official 0-indexed ones
(``OfficialDoD.forward``); n2n's 1-indexed t is t − 1 here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "PRESETS",
    "OfficialDoD",
    "OfficialUNetConfig",
    "convert_official",
    "expected_shapes",
    "load_official",
]


@dataclass(frozen=True)
class OfficialUNetConfig:
    """The arguments of the official ``create_unet_model`` (the keys of a ``--config`` JSON)."""

    latent_size: int | None = 32  # None in DeCoDiffConfig: image_size / the VAE's factor
    model_channels: int = 256
    num_res_blocks: int = 2
    num_heads: int = 8  # sets the head size: model_channels // num_heads channels per head
    channel_mult: tuple[int, ...] = (1, 2, 4)
    context_dim: int = 512
    ncls: int | None = 15  # None in DeCoDiffConfig: the number of its classes (at least 1)
    dropout: float = 0.4
    in_channels: int = 4

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def heads(self) -> tuple[int, ...]:
        """Heads per level, as LDM computes them with ``legacy=True``: width // head size."""
        head = self.model_channels // self.num_heads
        return tuple(w // head for w in self.widths)

    @staticmethod
    def from_file(path: Path | str) -> OfficialUNetConfig:
        """The official ``create_unet_model`` arguments of a JSON file (unknown keys refused)."""
        from n2n_core.config import from_dict

        try:
            return from_dict(OfficialUNetConfig, json.loads(Path(path).read_text()))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


# the official UNet_XS ... UNet_XL (models.py); latent_size and ncls are set per dataset
PRESETS = {
    "UNet_XS": OfficialUNetConfig(model_channels=64, num_heads=4, context_dim=128),
    "UNet_S": OfficialUNetConfig(model_channels=128, num_heads=4, context_dim=256),
    "UNet_M": OfficialUNetConfig(model_channels=192, num_heads=6, context_dim=384),
    "UNet_L": OfficialUNetConfig(model_channels=256, num_heads=8, context_dim=512),
    "UNet_XL": OfficialUNetConfig(model_channels=320, num_heads=12, context_dim=640),
}


class OfficialDoD(nn.Module):
    """δ_θ(z_t, t, class) of the official code: ``unet`` (diffusers) + ``class_embedding``.
    Initialised as LDM's openaimodel: PyTorch's defaults, and zeros for the layers it wraps in
    ``zero_module`` (each residual block's last convolution, each transformer's ``proj_out``,
    the output convolution), so that a fresh network predicts δ = 0."""

    def __init__(self, cfg: OfficialUNetConfig) -> None:
        from diffusers import UNet2DConditionModel

        super().__init__()
        if cfg.latent_size is None or cfg.ncls is None:
            raise ValueError(f"OfficialDoD needs latent_size and ncls, got {cfg}")
        self.cfg = cfg
        n = len(cfg.channel_mult)
        self.unet = UNet2DConditionModel(
            sample_size=cfg.latent_size,
            in_channels=cfg.in_channels,
            out_channels=cfg.in_channels,
            down_block_types=("CrossAttnDownBlock2D",) * n,
            up_block_types=("CrossAttnUpBlock2D",) * n,
            block_out_channels=cfg.widths,
            layers_per_block=cfg.num_res_blocks,
            cross_attention_dim=cfg.context_dim,
            attention_head_dim=cfg.heads,  # diffusers reads this as the number of heads
            norm_num_groups=32,
            dropout=cfg.dropout,
            flip_sin_to_cos=True,  # LDM's embedding: [cos, sin]
            freq_shift=0,
        )
        self.class_embedding = nn.Embedding(cfg.ncls, cfg.context_dim)
        for name, module in self.unet.named_modules():  # LDM's zero_module layers
            if name == "conv_out" or name.endswith((".conv2", ".proj_out")):
                nn.init.zeros_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, z: Tensor, t: Tensor, classes: Tensor) -> Tensor:
        """``t``: the official 0-indexed timesteps (B,); ``classes``: class ids (B,) or (B, 1)."""
        context = self.class_embedding(classes.reshape(len(z), 1))
        return self.unet(z, t, encoder_hidden_states=context).sample


def _key_map(cfg: OfficialUNetConfig) -> dict[str, str]:
    """Official key prefix → diffusers key prefix."""
    resnet = {
        "in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
        "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut",
    }  # fmt: skip
    m = {
        "cond_stage_model.embedding": "class_embedding",
        "time_embed.0": "unet.time_embedding.linear_1",
        "time_embed.2": "unet.time_embedding.linear_2",
        "input_blocks.0.0": "unet.conv_in",
        "out.0": "unet.conv_norm_out",
        "out.2": "unet.conv_out",
    }

    def resnet_block(src: str, dst: str) -> None:
        m.update({f"{src}.{a}": f"{dst}.{b}" for a, b in resnet.items()})

    def level(src: str, dst: str, j: int) -> None:  # a residual block + its transformer
        resnet_block(f"{src}.0", f"{dst}.resnets.{j}")
        m[f"{src}.1"] = f"{dst}.attentions.{j}"

    nrb, n = cfg.num_res_blocks, len(cfg.channel_mult)
    for i in range(n):  # LDM's input_blocks: [conv_in], then per level nrb blocks (+ downsample)
        for j in range(nrb):
            level(f"input_blocks.{1 + i * (nrb + 1) + j}", f"unet.down_blocks.{i}", j)
        if i < n - 1:
            down = f"input_blocks.{(i + 1) * (nrb + 1)}.0.op"
            m[down] = f"unet.down_blocks.{i}.downsamplers.0.conv"
    resnet_block("middle_block.0", "unet.mid_block.resnets.0")
    m["middle_block.1"] = "unet.mid_block.attentions.0"
    resnet_block("middle_block.2", "unet.mid_block.resnets.1")
    for i in range(n):  # output_blocks: per level nrb + 1 blocks (+ upsample), deepest first
        for j in range(nrb + 1):
            level(f"output_blocks.{i * (nrb + 1) + j}", f"unet.up_blocks.{i}", j)
        if i < n - 1:
            up = f"output_blocks.{i * (nrb + 1) + nrb}.2.conv"
            m[up] = f"unet.up_blocks.{i}.upsamplers.0.conv"
    return m


def convert_official(state_dict: dict[str, Tensor], cfg: OfficialUNetConfig) -> dict[str, Tensor]:
    """The official checkpoint's ``model`` state_dict renamed to ``OfficialDoD``'s keys.

    Raises a ValueError naming the first keys the config does not expect (or lacks) and the
    config it tried."""
    prefixes = sorted(_key_map(cfg).items(), key=lambda kv: -len(kv[0]))
    out, unexpected = {}, []
    for key, value in state_dict.items():
        for src, dst in prefixes:
            if key == src or key.startswith(src + "."):
                out[dst + key[len(src) :]] = value
                break
        else:
            unexpected.append(key)
    expected = expected_shapes(cfg)
    missing = [k for k in expected if k not in out]
    unexpected += [k for k in out if k not in expected]
    wrong = [
        f"{k} {tuple(out[k].shape)} vs {expected[k]}"
        for k in out
        if k in expected and tuple(out[k].shape) != expected[k]
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"the checkpoint does not fit the official UNet {cfg}: "
            + "; ".join(
                f"{name} ({len(keys)}): {', '.join(keys[:3])}"
                for name, keys in [
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("wrong shape", wrong),
                ]
                if keys
            )
        )
    return out


def expected_shapes(cfg: OfficialUNetConfig) -> dict[str, tuple[int, ...]]:
    """Key → shape of ``OfficialDoD(cfg)``, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = OfficialDoD(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_official(path: Path | str, cfg: OfficialUNetConfig) -> OfficialDoD:
    """An official checkpoint (``torch.save({"model": state_dict, ...})``, float32 or float16)
    as an ``OfficialDoD`` in float32."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or a pickle that needs code
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise ValueError(
            f"{path} is not a checkpoint torch can read safely ({type(exc).__name__}: {first}); "
            "expected the official .pt file ({'model': state_dict, ...})"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: expected {{'model': state_dict, ...}} (the official format)")
    weights = {k: v.float() for k, v in convert_official(ckpt["model"], cfg).items()}
    model = OfficialDoD(cfg)
    model.load_state_dict(weights)
    return model.eval()
