"""The official DiffusionAD code's anomaly appearances (n2n_core.official_augment), each
operation against a hand computation or a second implementation."""

import colorsys

import pytest
import torch

from n2n_core.official_augment import (
    OFFICIAL_AUGMENTATIONS,
    scale_luma,
    shift_hsv,
    strip_shuffle,
)
from n2n_core.synthesis import AnomalySynthesizer, SynthesisConfig


def _g(seed):
    return torch.Generator().manual_seed(seed)


def test_luma_scaling_keeps_the_chroma():
    """YCrCb's Cr and Cb are scaled R − Y and B − Y: keeping them while Y becomes
    mul·Y + add moves every channel by the same amount (away from clipping)."""
    x = 0.2 + 0.6 * torch.rand(3, 6, 6, generator=_g(0))
    out = scale_luma(x, 1.1, 10 / 255)
    y = lambda t: 0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2]  # noqa: E731
    torch.testing.assert_close(y(out), 1.1 * y(x) + 10 / 255)
    for c in range(3):
        torch.testing.assert_close(out[c] - y(out), x[c] - y(x))


def test_hue_and_saturation_shift_equals_colorsys():
    x = torch.rand(3, 5, 5, generator=_g(1))
    out = shift_hsv(x, 0.13, -0.08)
    for i in range(5):
        for j in range(5):
            h, s, v = colorsys.rgb_to_hsv(*x[:, i, j].tolist())
            want = colorsys.hsv_to_rgb((h + 0.13) % 1.0, min(max(s - 0.08, 0.0), 1.0), v)
            assert out[:, i, j].tolist() == pytest.approx(list(want), abs=1e-5)


def test_strip_shuffle_regroups_even_and_odd_strips():
    """A 64 × 64 image whose pixels name their 8 × 8 block: the output is the blocks
    rearranged by one row order and one column order; the first four column strips are the
    source's even ones, the last four its odd ones (the official code's concatenation)."""
    i, j = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    x = torch.stack([i, j, i * 0]).float()
    out = strip_shuffle(x, _g(2))
    rows = [int(out[0, 8 * r, 0]) // 8 for r in range(8)]
    cols = [int(out[1, 0, 8 * c]) // 8 for c in range(8)]
    assert sorted(rows) == list(range(8)) and sorted(cols) == list(range(8))
    assert set(cols[:4]) == {0, 2, 4, 6} and set(cols[4:]) == {1, 3, 5, 7}
    for r in range(8):
        for c in range(8):
            block = out[:2, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8]
            y0, x0 = 8 * rows[r], 8 * cols[c]
            assert torch.equal(block, x[:2, y0 : y0 + 8, x0 : x0 + 8])


def test_every_official_operation_keeps_shape_and_range():
    x = torch.rand(3, 32, 32, generator=_g(3))
    assert len(OFFICIAL_AUGMENTATIONS) == 10
    for name, op in OFFICIAL_AUGMENTATIONS.items():
        out = op(x, _g(4))
        assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1, name
    gamma = OFFICIAL_AUGMENTATIONS["gamma_per_channel"](torch.full((3, 4, 4), 0.5), _g(5))
    assert len({round(float(v), 6) for v in gamma[:, 0, 0]}) == 3  # one γ per channel
    turned = OFFICIAL_AUGMENTATIONS["rotate_45"](torch.ones(3, 32, 32), _g(6))
    assert float(turned[:, 16, 16].min()) > 0.99 and float(turned[:, 0, 0].max()) < 1


def test_the_official_synthesis_augments_textures_with_three_operations():
    cfg = SynthesisConfig(augmenter="official", n_augment=3, augment_textures=True,
                          rearrange="strips")  # fmt: skip
    synth, g = AnomalySynthesizer(cfg), _g(7)
    sources = [synth.synthesize(torch.rand(3, 32, 32), g).source for _ in range(6)]
    assert all(s.startswith("texture: ") and s.count("+") == 2 for s in sources)
    objects = [synth.appearance(torch.rand(3, 32, 32), g, False)[1] for _ in range(12)]
    assert any(s.startswith("self-augmentation: ") for s in objects)
    assert {n for s in objects for n in s.split(": ")[1].split("+")} <= set(OFFICIAL_AUGMENTATIONS)
    with pytest.raises(ValueError, match="augmenter must be"):
        AnomalySynthesizer(SynthesisConfig(augmenter="imgaug"))
