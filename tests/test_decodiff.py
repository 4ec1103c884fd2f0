"""DeCo-Diff: Eq. 7, 10-11, 13-15 against closed forms; the latent autoencoder; training
(shared loop: resume), CLI (multi-class, per-category metrics)."""

import json
import math
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage
from tiny import TINY_DECODIFF  # tests/tiny.py

from n2n_core import cli
from n2n_core.data import fixtures
from n2n_core.data.splits import holdout
from n2n_core.deviation import (
    correct,
    correction_timesteps,
    discrepancy_maps,
    dod_target,
    gaussian_blur,
    masked_forward,
    patch_mask,
    shuffle_noise,
)
from n2n_core.methods import resolve
from n2n_core.methods.decodiff import (
    OFFICIAL_CLASSES,
    PROFILES,
    AugmentedLatentFeed,
    DeCoDiff,
    augment,
    detect,
    draw_patch_size,
    image_score,
    latent_training_set,
)
from n2n_core.metrics import METRIC_KEYS
from n2n_core.models import count_parameters
from n2n_core.models.ldm_unet import OfficialDoD
from n2n_core.models.vae import (
    AutoencoderTrainer,
    VAEConfig,
    load_pretrained_vae,
    make_autoencoder,
    psnr,
    with_scale,
)
from n2n_core.schedules import make_schedule, q_sample
from n2n_core.train import DataSpec, TrainConfig, train

S = make_schedule("cosine", 10)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ Eq. 7: masked forward
@pytest.mark.parametrize("patch", [1, 2, 4, 8])
def test_patch_mask_has_the_ratio_and_is_constant_on_patches(patch):
    ratio = torch.tensor([0.0, 0.3, 0.7, 1.0])
    m = patch_mask(4, (16, 16), ratio, patch, _g())
    n = (16 // patch) ** 2
    expected = (ratio * n).round() / n
    torch.testing.assert_close(m.mean((1, 2, 3)), expected.float())
    blocks = m.unfold(2, patch, patch).unfold(3, patch, patch)  # (B, 1, gh, gw, p, p)
    assert bool((blocks == blocks[..., :1, :1]).all())
    with pytest.raises(ValueError, match="must divide"):
        patch_mask(1, (16, 16), ratio[:1], 3, _g())


def test_masked_forward_diffuses_only_the_noisy_patches():
    z0, eps = torch.randn(3, 4, 8, 8, generator=_g(1)), torch.randn(3, 4, 8, 8, generator=_g(2))
    m = patch_mask(3, (8, 8), torch.full((3,), 0.5), 2, _g(3))
    t = torch.tensor([1, 5, 10])
    zt = masked_forward(z0, t, S, m, eps)
    vis, noisy = m.expand_as(z0) == 0, m.expand_as(z0) == 1
    assert torch.equal(zt[vis], z0[vis])  # visible patches untouched (Eq. 7, second case)
    torch.testing.assert_close(zt[noisy], q_sample(z0, t, S, eps)[noisy])  # Eq. 2 on the others


def test_shuffled_patches_come_from_the_next_image_of_the_batch():
    z0 = torch.randn(4, 4, 8, 8, generator=_g(4))
    noise, s = shuffle_noise(z0, torch.full((4,), 0.25), 2, _g(5))
    sel = s.expand_as(z0) == 1
    assert sel.any() and torch.equal(noise[sel], z0.roll(-1, 0)[sel])
    rest = noise[~sel]  # Gaussian elsewhere
    assert abs(float(rest.mean())) < 0.1 and abs(float(rest.std()) - 1) < 0.1


# --------------------------------------------------------------- Eq. 10-11: the DoD target
def _patches(z, p):
    """Every p × p patch of a batch as a row (B · #patches, C · p · p)."""
    b, c, h, w = z.shape
    x = z.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def test_official_shuffle_draws_patches_from_the_whole_batch():
    b, p = 4, 2
    z0 = torch.randn(b, 4, 8, 8, generator=_g(6))
    # ratio 1: the noise is a permutation of all the batch's patches (any image, any place)
    noise, s = shuffle_noise(z0, torch.ones(b), p, _g(7), mode="official")
    assert bool((s == 1).all())
    src, out = _patches(z0, p).reshape(-1, 16), _patches(noise, p).reshape(-1, 16)
    match = (out[:, None, :] == src[None, :, :]).all(-1)  # (out patch, source patch)
    assert bool((match.sum(1) == 1).all()) and bool((match.sum(0) == 1).all())
    same_image = (match.nonzero()[:, 1] // 16 == match.nonzero()[:, 0] // 16).float().mean()
    assert float(same_image) < 0.6  # 1 / B expected; the n2n mode never stays in its image
    # ratios per image: the indicator covers that share; Gaussian elsewhere
    ratio = torch.tensor([0.0, 0.25, 0.5, 0.75])
    noise, s = shuffle_noise(z0, ratio, p, _g(8), mode="official")
    torch.testing.assert_close(s.mean((1, 2, 3)), ratio)
    sel = _patches(s.expand_as(z0), p)[..., 0].reshape(-1) == 1
    picked = _patches(noise, p).reshape(-1, 16)[sel]
    assert bool((picked[:, None, :] == src[None]).all(-1).any(1).all())
    with pytest.raises(ValueError, match="shuffle must be one of"):
        shuffle_noise(z0, ratio, p, _g(8), mode="ring")


def test_patch_sizes_follow_their_probabilities():
    cfg = PROFILES["official"]
    g, n = _g(9), 20000
    counts = Counter(draw_patch_size(cfg, g) for _ in range(n))
    for size, prob in zip(cfg.patch_sizes, cfg.patch_probs, strict=True):
        assert abs(counts[size] / n - prob) < 4 * (prob * (1 - prob) / n) ** 0.5
    uniform = Counter(draw_patch_size(TINY, g) for _ in range(3000))
    assert set(uniform) == set(TINY.patch_sizes) and min(uniform.values()) > 850
    with pytest.raises(ValueError, match="patch_probs"):
        replace(cfg, patch_probs=(0.5, 0.5))


def _windows(out: torch.Tensor, sources: torch.Tensor) -> list[tuple[int, int, bool]]:
    """Brute force: the one (dy, dx, turned by 180°) for which each 32 × 32 output is the
    centre window of its 40 × 40 source shifted by (dy, dx) in [-4, 4]²."""
    found = []
    for im, o in zip(sources, out, strict=True):
        hits = [
            (dy, dx, turn)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            for turn in (False, True)
            if torch.equal(o.flip(-2, -1) if turn else o, im[:, 4 + dy : 36 + dy, 4 + dx : 36 + dx])
        ]
        assert len(hits) == 1
        found.append(hits[0])
    return found


def test_official_augmentation_is_a_shifted_centre_crop_and_a_half_turn():
    """Brute force: every output is the centre 32 × 32 window of its 40 × 40 image shifted by
    (dy, dx) in [-4, 4]², possibly turned by 180°; half are shifted, half are turned."""
    n = 400
    images = torch.randint(0, 256, (n, 3, 40, 40), dtype=torch.uint8, generator=_g(10))
    out = augment(images, 32, 4, True, _g(11))
    found = _windows(out, images)
    still = sum(dy == dx == 0 for dy, dx, _ in found) / n
    assert abs(still - (0.5 + 0.5 / 81)) < 0.1  # p = 0.5 of a shift, which may be (0, 0)
    assert abs(sum(t for *_, t in found) / n - 0.5) < 0.1
    assert {dy for dy, _, _ in found} == set(range(-4, 5))
    assert torch.equal(augment(images, 32, 0, False, _g(12)), images[:, :, 4:36, 4:36])
    with pytest.raises(ValueError, match="crop margin"):
        augment(images, 32, 5, False, _g(12))
    with pytest.raises(ValueError, match="translate"):
        replace(TINY, translate=2)  # no load_size: no margin to shift in


def test_constant_translation_is_albumentations_single_int():
    """``Affine(translate_px=4)`` moves the content by +4 px on both axes (albumentations
    1.4.21 reads one int as the range (4, 4)): brute force, by moving the content with
    ``torch.roll`` and cropping the centre, with p = 0.5."""
    n = 200
    images = torch.randint(0, 256, (n, 3, 40, 40), dtype=torch.uint8, generator=_g(13))
    out = augment(images, 32, 4, False, _g(14), draw="constant")
    moved = torch.roll(images, shifts=(4, 4), dims=(-2, -1))[:, :, 4:36, 4:36]
    still = images[:, :, 4:36, 4:36]
    is_moved = [torch.equal(o, m) for o, m in zip(out, moved, strict=True)]
    is_still = [torch.equal(o, c) for o, c in zip(out, still, strict=True)]
    assert all(a != b for a, b in zip(is_moved, is_still, strict=True))
    assert abs(sum(is_moved) / n - 0.5) < 0.12
    with pytest.raises(ValueError, match="translate_draw"):
        replace(PROFILES["official"], translate_draw="gaussian")


def test_reflect_fill_shifts_the_whole_image_within_its_mirror():
    """``shift_fill="reflect"``: with no crop margin, each output is a 32 × 32 window of its
    image padded by 4 px by reflection (numpy's ``np.pad(mode="reflect")``, brute force) at a
    shift in [-4, 4]², half of them unshifted; the config then needs no ``load_size``."""
    n = 300
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=_g(15))
    out = augment(images, 32, 4, False, _g(16), fill="reflect")
    padded = np.pad(images.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)), mode="reflect")
    found = _windows(out, torch.from_numpy(padded))
    assert not any(turn for *_, turn in found)
    still = sum(dy == dx == 0 for dy, dx, _ in found) / n
    assert abs(still - (0.5 + 0.5 / 81)) < 0.1
    assert {dy for dy, _, _ in found} == set(range(-4, 5)) == {dx for _, dx, _ in found}
    assert out.dtype == torch.uint8
    assert replace(TINY, translate=2, shift_fill="reflect").load_size is None
    with pytest.raises(ValueError, match="shift_fill"):
        replace(TINY, translate=2, shift_fill="wrap")
    with pytest.raises(ValueError, match="half the image_size"):
        replace(TINY, translate=TINY.image_size // 2, shift_fill="reflect")


def test_official_holdout_is_the_official_validation_split(mvtec):
    held = holdout("mvtec", "official")
    assert len(held) == 362 and holdout("visa", "official") == holdout("mvtec", "none") == set()
    # about 10 % of each category's train/good images (MVTec AD's training-set sizes)
    train_sizes = {
        "bottle": 209, "cable": 224, "capsule": 219, "carpet": 280, "grid": 264,
        "hazelnut": 391, "leather": 245, "metal_nut": 220, "pill": 267, "screw": 320,
        "tile": 230, "toothbrush": 60, "transistor": 213, "wood": 247, "zipper": 240,
    }  # fmt: skip
    per_cat = Counter(p.split("/")[0] for p in held)
    assert set(per_cat) == set(train_sizes)
    assert all(abs(per_cat[c] - n / 10) <= 1.5 for c, n in train_sizes.items())
    assert all(p.split("/")[1:3] == ["train", "good"] for p in held)
    # the fixture's bottle/train/good/005.png is one of them
    data = DataSpec("mvtec", str(mvtec), "all")
    cfg = TINY.with_classes(["bottle", "carpet"])
    _, labels = latent_training_set(cfg, data, mvtec)
    _, kept = latent_training_set(replace(cfg, holdout="official"), data, mvtec)
    assert labels.bincount().tolist() == [6, 6] and kept.bincount().tolist() == [5, 6]


def test_dod_target_matches_eq_10_11_on_noisy_and_is_zero_on_visible_patches():
    z0, eps = torch.randn(4, 4, 8, 8, generator=_g(6)), torch.randn(4, 4, 8, 8, generator=_g(7))
    m = patch_mask(4, (8, 8), torch.full((4,), 0.5), 4, _g(8))
    t = torch.tensor([1, 3, 7, 10])
    zt = masked_forward(z0, t, S, m, eps)
    delta = dod_target(zt, z0, t, S)
    ab = S.alpha_bar[t].float().view(-1, 1, 1, 1)
    closed = eps - (1 - ab.sqrt()) / (1 - ab).sqrt() * z0  # Eq. 10
    noisy = m.expand_as(z0) == 1
    torch.testing.assert_close(delta[noisy], closed[noisy])
    assert torch.equal(delta[~noisy], torch.zeros_like(delta[~noisy]))
    torch.testing.assert_close(z0 + (1 - ab).sqrt() * delta, zt)  # Eq. 11
    with pytest.raises(ValueError, match="t ≥ 1"):
        dod_target(zt, z0, 0, S)


# ------------------------------------------------------------- Eq. 13-14: the correction
def test_correction_timesteps():
    assert correction_timesteps(10, 5) == [10, 8, 6, 4, 2]
    assert correction_timesteps(10, 10) == list(range(10, 0, -1))
    assert correction_timesteps(10, 1) == [10]
    assert correction_timesteps(10, 5, start=9) == [9, 8, 7, 6, 5]
    with pytest.raises(ValueError, match="steps"):
        correction_timesteps(10, 11)


@pytest.mark.parametrize("strategy", ["z_t-1", "z_0"])
def test_an_oracle_dod_recovers_z0_exactly_with_either_strategy(strategy):
    z0 = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=_g(9))
    z = z0 + torch.randn(z0.shape, dtype=torch.float64, generator=_g(10))  # a deviated latent
    oracle = lambda zt, t: dod_target(zt, z0, t, S)  # noqa: E731
    final, traj = correct(oracle, z, S, [10, 7, 4, 1], strategy)
    torch.testing.assert_close(final, z0)
    assert all(torch.allclose(x, z0) for x in traj)


def test_constant_dod_closed_forms_distinguish_the_strategies():
    z, c = torch.zeros(1, 1, 2, 2, dtype=torch.float64), torch.ones(1, 1, 2, 2, dtype=torch.float64)
    steps = [10, 8, 6, 4, 2]
    s = (1 - S.alpha_bar).sqrt()
    f1, _ = correct(lambda zt, t: c, z, S, steps, "z_t-1")
    f0, _ = correct(lambda zt, t: c, z, S, steps, "z_0")
    # Eq. 14 re-noises along the same δ, so the steps telescope: z̃0 = z - √(1-ᾱ_10) c
    torch.testing.assert_close(f1, z - s[10] * c)
    # keeping z̃0 subtracts at every step: z - Σ √(1-ᾱ_t) c
    torch.testing.assert_close(f0, z - sum(s[t] for t in steps) * c)


# --------------------------------------------------------------------- Eq. 15: the maps
def test_gaussian_blur_matches_scipy():
    x = torch.rand(1, 1, 20, 24, generator=_g(11), dtype=torch.float64)
    ours = gaussian_blur(x, 1.5)[0, 0].numpy()
    ref = ndimage.gaussian_filter(x[0, 0].numpy(), 1.5, mode="mirror", truncate=4.0)
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_discrepancy_maps_clip_scale_and_combine():
    z0, x0 = torch.zeros(1, 4, 4, 4), torch.zeros(1, 3, 16, 16)
    zero = discrepancy_maps(z0, z0, x0, x0)
    assert all(float(v.abs().max()) == 0 for v in zero.values())
    # constant deviations: the blurs leave constants alone, so the closed forms hold everywhere
    for dz, dx in [(0.1, 0.2), (0.1, 0.4), (0.5, 1.0)]:
        zt = z0 + torch.tensor([dz, dz, dz, dz]).view(1, 4, 1, 1)
        xt = x0 + torch.tensor([0.0, dx, dx / 2]).view(1, 3, 1, 1)  # max over RGB = dx
        maps = discrepancy_maps(z0, zt, x0, xt, tau_l=0.2, tau_p=0.4)
        lat, pix = min(dz, 0.2) / 0.2, min(dx, 0.4) / 0.4
        expected = {
            "latent": lat,
            "pixel": pix,
            "arithmetic": (lat + pix) / 2,
            "geometric": math.sqrt(lat * pix),
        }
        for k, v in expected.items():
            assert maps[k].shape == (1, 1, 16, 16)
            torch.testing.assert_close(maps[k], torch.full_like(maps[k], v))


def test_image_score_is_the_map_maximum():
    maps = torch.rand(3, 1, 8, 8, generator=_g(12))
    torch.testing.assert_close(image_score(maps), maps.flatten(1).max(1).values)


# ------------------------------------------------------------------- the latent space
def test_offline_vae_error_names_the_hub_id_and_what_to_do(tmp_path):
    code = (
        "from n2n_core.models.vae import load_pretrained_vae\n"
        "try:\n    load_pretrained_vae('stabilityai/sd-vae-ft-ema')\n"
        "except RuntimeError as e:\n    print(e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    ).stdout
    assert "stabilityai/sd-vae-ft-ema" in out and "HF_HUB_OFFLINE" in out and "--vae" in out
    assert "not in the local Hugging Face cache" in out and "no file named" not in out


def test_pretrained_vae_loads_from_a_local_folder(tmp_path):
    torch.manual_seed(0)
    ae = make_autoencoder(VAEConfig(channels=(8, 8), norm_num_groups=4))
    ae.save_pretrained(tmp_path / "vae")
    vae = load_pretrained_vae(str(tmp_path / "vae"))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (2, 4, 8, 8) and vae.factor == 2 and vae.scale == ae.config.scaling_factor
    torch.testing.assert_close(z, ae.encode(x).latent_dist.mean * ae.config.scaling_factor)
    assert vae.decode(z).shape == x.shape
    n_all = sum(p.numel() for p in ae.parameters())
    assert count_parameters(vae) == 0 and count_parameters(vae, trainable_only=False) == n_all


def test_small_vae_loss_by_hand_and_scale_to_unit_std():
    cfg = VAEConfig(channels=(8, 8), norm_num_groups=4, kl_weight=0.5)
    torch.manual_seed(0)
    trainer = AutoencoderTrainer(cfg)
    x = torch.rand(3, 3, 16, 16, generator=_g(13)) * 2 - 1
    loss, parts = trainer(x, _g(1))
    dist = trainer.ae.encode(x).latent_dist  # the same draw, by hand
    z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=_g(1))
    l1 = (trainer.ae.decode(z).sample - x).abs().mean()
    # KL(N(m, s²) || N(0, 1)) = ½ Σ (m² + s² − 1 − log s²), summed over a latent, mean over images
    kl = 0.5 * (dist.mean**2 + dist.var - 1 - dist.logvar).sum((1, 2, 3)).mean()
    torch.testing.assert_close(parts["l1"], l1)
    torch.testing.assert_close(parts["kl"], kl)
    torch.testing.assert_close(loss, l1 + 0.5 * kl)
    images = ((x + 1) * 127.5).to(torch.uint8)
    vae = with_scale(trainer.ae, images)
    torch.testing.assert_close(float(vae.encode(images.float() / 127.5 - 1).std()), 1.0)


def test_psnr_by_hand():
    x = torch.zeros(1, 3, 4, 4)
    torch.testing.assert_close(psnr(x, x + 0.2), torch.tensor([10 * math.log10(4 / 0.04)]))


# ------------------------------------------------------------------ model and training
TINY = TINY_DECODIFF


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    return fixtures.write_mvtec(
        tmp_path_factory.mktemp("data") / "mvtec", n_train=6, n_test=3, size=32
    )


def test_paper_profile_is_the_text_and_official_profile_the_code():
    paper, official = PROFILES["paper"], PROFILES["official"]
    for cfg in (paper, official):
        assert cfg.T == 10 and cfg.latent_size == 32 and cfg.network == "official"
        assert cfg.vae.pretrained == "stabilityai/sd-vae-ft-ema" and cfg.vae.factor == 8
        assert (cfg.mask_ratio_max, cfg.shuffle_ratio_max) == (0.7, 0.3)
    # §5.1: latent patches {1, 2, 4, 8}; nothing about shifts, held-out images or resizing
    assert paper.patch_sizes == (1, 2, 4, 8) and paper.patch_probs == ()
    text = (paper.shuffle, paper.translate, paper.holdout, paper.load_size, paper.spacing)
    assert text == ("next_image", 0, "none", None, "from_start")
    assert paper.pixel_reference == "input"
    # the official code's training and inference protocol, each a named option
    assert official.patch_sizes == (1, 2, 4, 8, 16)
    assert official.patch_probs == (0.3, 0.25, 0.2, 0.15, 0.1)
    code = (official.shuffle, official.translate, official.translate_draw, official.holdout)
    assert code == ("official", 4, "constant", "official") and official.load_size == 288
    assert (official.spacing, official.boundary, official.pixel_reference) == (
        "official", "official", "reconstruction"
    )  # fmt: skip
    # VisA alone is also rotated by 180° (the official VisA loader); smoke keeps n2n's feed
    visa, _ = resolve("decodiff", "official", "visa", ["candle", "cashew"])
    mvtec, _ = resolve("decodiff", "official", "mvtec", ["bottle", "cable"])
    assert visa.rotate_180 and not mvtec.rotate_180 and visa.translate == 4
    assert not resolve("decodiff", "paper", "visa", ["candle"])[0].rotate_180
    smoke, _ = resolve("decodiff", "smoke", "visa", ["candle"])
    assert (smoke.shuffle, smoke.translate, smoke.rotate_180, smoke.holdout) == (
        "next_image",
        0,
        False,
        "none",
    )
    # the UNet's class count and latent size are derived from classes and the VAE's factor
    assert replace(paper, classes=("a", "b")).unet_config.num_classes == 2
    conditioned = paper.with_classes(["a", "b"])
    assert conditioned.unet_config.num_classes == 2 and conditioned.official_config.ncls == 2
    assert conditioned.unet.num_classes == 0 and conditioned.official_unet.ncls is None  # unset


def test_official_training_regime_is_the_codes():
    """train_DeCo_Diff.py: AdamW (wd 1e-4), batch 128 with 2 accumulated, 800 epochs (VisA 200),
    get_cosine_schedule_with_warmup(10 warm-up epochs, 1.5 × the epochs) stepped once per
    epoch. On MVTec AD's 3,267 training images an epoch is ceil(26 batches / 2) = 13 updates:
    10,400 in all; the lr is 0 in the first epoch and ends at 1e-4 × (1 + cos(π·790/1190))/2."""
    from n2n_core.train import _lr_lambda, _steps_per_epoch, _total_steps

    _, t = resolve("decodiff", "official", "mvtec", ["bottle"])
    assert (t.optimizer, t.weight_decay, t.batch_size, t.grad_accum) == ("adamw", 1e-4, 128, 2)
    assert (t.epochs, t.lr_per, t.warmup_epochs, t.cosine_span) == (800, "epoch", 10, 1.5)
    assert resolve("decodiff", "official", "visa", ["candle"])[1].epochs == 200
    feed = [None] * 3267
    per, steps = _steps_per_epoch(t, feed), _total_steps(t, feed)
    assert (per, steps) == (13, 10_400)
    f = _lr_lambda(t, steps, per)

    def hf(epoch: int) -> float:  # transformers.get_cosine_schedule_with_warmup, written out
        if epoch < 10:
            return epoch / 10
        progress = (epoch - 10) / (1.5 * 800 - 10)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 2 * 0.5 * progress)))

    for s in (0, 12, 13, 129, 130, 131, 5000, 10_399):
        assert f(s) == pytest.approx(hf(s // 13), abs=1e-12)
    assert f(10_399) * t.lr == pytest.approx(2.55e-5, abs=1e-7)
    # the paper profile: the per-step warm-up and cosine to 1e-5 over the training (§5.1)
    _, p = resolve("decodiff", "paper", "mvtec", ["bottle"])
    assert (p.lr_per, p.grad_accum, p.min_lr) == ("step", 1, 1e-5)
    assert _total_steps(p, feed) == math.ceil(800 * 3267 / 128)


def test_smoke_profile_is_a_tiny_official_network():
    """The smoke profile runs the paper profile's architecture (the official LDM UNet), small:
    base 32, one block per level, one head of 32 channels, 4.2 M parameters."""
    cfg, _ = resolve("decodiff", "smoke", "synthetic", ["cap", "chip", "grain", "weave"])
    paper, _ = resolve("decodiff", "paper", "mvtec", list(OFFICIAL_CLASSES["mvtec"]))
    small = DeCoDiff(cfg).net
    assert cfg.network == paper.network == "official"
    assert (cfg.official_config.latent_size, cfg.official_config.ncls) == (16, 4)
    assert 4.0e6 < count_parameters(small) < 4.3e6
    with torch.device("meta"):
        big = OfficialDoD(paper.official_config)
    assert {type(m).__name__ for m in small.modules()} == {type(m).__name__ for m in big.modules()}


def test_class_conditioning_changes_the_prediction():
    model = DeCoDiff(TINY.with_classes(["a", "b"])).eval()
    z, t = torch.randn(1, 4, 8, 8, generator=_g(14)), torch.tensor([5])
    with torch.no_grad():
        a, b = model.dod(z, t, torch.tensor([0])), model.dod(z, t, torch.tensor([1]))
    assert not torch.allclose(a, b)
    loss, parts = model(torch.randn(4, 4, 8, 8, generator=_g(15)), torch.tensor([0, 1, 0, 1]), _g())
    assert torch.isfinite(loss) and set(parts) == {"dod"}


def _tcfg(**kw):
    return TrainConfig(
        **{
            "steps": 6, "batch_size": 4, "checkpoint_every": 2, "log_every": 1,
            "optimizer": "adamw", "warmup_steps": 2, "min_lr": 1e-5, **kw,
        }
    )  # fmt: skip


def _log(run):
    return [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]


def test_multi_class_run_resumes_with_the_same_losses(tmp_path, mvtec):
    cfg = TINY.with_classes(["bottle", "carpet"])
    data = DataSpec("mvtec", str(mvtec), "all")
    train(tmp_path / "straight", cfg, _tcfg(), data)
    train(tmp_path / "resumed", cfg, _tcfg(), data, stop_after=3)
    train(tmp_path / "resumed", cfg, _tcfg(), data, resume=True)  # also the lr schedule
    assert _log(tmp_path / "resumed") == _log(tmp_path / "straight")
    assert (tmp_path / "straight" / "vae" / "config.json").is_file()


def test_official_training_protocol_trains_and_resumes_exactly(tmp_path, mvtec):
    """The paper profile's feed (shifts, half turns, each batch encoded and sampled) and
    batch-wide shuffling train through the shared loop and resume to the same losses."""
    cfg = replace(
        TINY, load_size=40, translate=4, rotate_180=True, shuffle="official", holdout="official",
        patch_sizes=(1, 2, 4), patch_probs=(0.5, 0.3, 0.2),
    ).with_classes(["bottle", "carpet"])  # fmt: skip
    data = DataSpec("mvtec", str(mvtec), "all")
    train(tmp_path / "straight", cfg, _tcfg(), data)
    train(tmp_path / "resumed", cfg, _tcfg(), data, stop_after=3)
    train(tmp_path / "resumed", cfg, _tcfg(), data, resume=True)
    log = _log(tmp_path / "straight")
    assert log == _log(tmp_path / "resumed") and all(math.isfinite(r["loss"]) for r in log)
    from accelerate import Accelerator

    feed = AugmentedLatentFeed(cfg, data, tmp_path / "straight", Accelerator(cpu=True))
    assert len(feed) == 11 and feed.images.shape[-1] == 40  # 005 held out; uncropped 40 px
    z, labels = feed(torch.arange(4), _g(), "cpu")
    assert z.shape == (4, 4, 8, 8) and labels.tolist() == [0, 0, 0, 0]


def test_autoencoder_is_a_stage_of_the_run_and_resumes_exactly(tmp_path, mvtec):
    """The small VAE is trained by the same loop before the DoD model: an interruption inside
    it resumes to the same losses and weights; ``until="vae"`` trains only it; the run's
    model then trains on the saved VAE without retraining it."""
    from safetensors.torch import load_file

    cfg = replace(TINY, vae=replace(TINY.vae, steps=5)).with_classes(["bottle", "carpet"])
    data = DataSpec("mvtec", str(mvtec), "all")
    a, b = tmp_path / "straight", tmp_path / "resumed"
    train(a, cfg, _tcfg(), data, until="vae")
    assert (a / "vae" / "config.json").is_file() and not (a / "model.safetensors").exists()
    assert len(_log(a / "vae")) == 5 and not (a / "checkpoints" / "vae").exists()
    first = train(b, cfg, _tcfg(), data, stop_after=2)  # interrupted inside the VAE stage
    assert first == {"stage": "vae", "finished": False} and not (b / "vae").exists()
    assert (b / "checkpoints" / "vae").is_dir() and len(_log(b / "vae.partial")) == 2
    with pytest.raises(FileExistsError, match="--resume"):
        train(b, cfg, _tcfg(), data)
    train(b, cfg, _tcfg(), data, resume=True)
    assert _log(b / "vae") == _log(a / "vae")
    wa, wb = (load_file(r / "vae" / "diffusion_pytorch_model.safetensors") for r in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (
        json.loads((b / "vae" / "config.json").read_text())["scaling_factor"]
        == json.loads((a / "vae" / "config.json").read_text())["scaling_factor"]
    )
    before = (a / "vae" / "train_info.json").read_text()
    train(a, cfg, _tcfg(), data, resume=True)  # a finished stage is resumable, not retrained
    assert (a / "vae" / "train_info.json").read_text() == before
    assert _log(a) == _log(b) and (a / "model.safetensors").is_file()


def test_detect_returns_every_map_kind_in_range():
    model = DeCoDiff(TINY).eval()
    torch.manual_seed(0)
    from n2n_core.models.vae import LatentVAE

    vae = LatentVAE(make_autoencoder(TINY.vae), scale=1.0)
    res = detect(model, vae, torch.rand(2, 3, 32, 32) * 2 - 1, reverse_steps=3)
    for k in ("pixel", "latent", "arithmetic", "geometric"):
        assert res[k].shape == (2, 1, 32, 32)
        assert 0 <= float(res[k].min()) <= float(res[k].max()) <= 1
    assert len(res["trajectory"]) == 3 and res["corrected"].shape == (2, 3, 32, 32)


@pytest.mark.parametrize("reference", ["input", "reconstruction"])
def test_pixel_term_compares_the_correction_with_the_chosen_reference(reference):
    from n2n_core.models.vae import LatentVAE

    cfg = replace(TINY, pixel_reference=reference, sigma_p=0.0, tau_p=2.0)
    model = DeCoDiff(cfg).eval()
    torch.manual_seed(0)
    vae = LatentVAE(make_autoencoder(cfg.vae), scale=1.0)
    x = torch.rand(2, 3, 32, 32, generator=_g(16)) * 2 - 1
    res = detect(model, vae, x, reverse_steps=2)
    ref = x if reference == "input" else res["reconstruction"]
    expected = (res["corrected"] - ref).abs().amax(1, keepdim=True) / 2.0  # no blur, τ_p = 2
    torch.testing.assert_close(res["pixel"], expected)


def test_cli_trains_one_model_for_all_categories_and_reports_each(tmp_path, mvtec, capsys):
    run = tmp_path / "run"
    args = ["train", "--method", "decodiff", "--data", "mvtec", "--root", str(mvtec)]
    args += ["--out", str(run), "--steps", "3", "--image-size", "32", "--batch-size", "4"]
    args += ["--vae-steps", "2"]
    assert cli.main(args) == 0  # --category defaults to all for decodiff
    record = json.loads((run / "run.json").read_text())
    assert record["data"]["category"] == "all"
    assert record["model"]["classes"] == ["bottle", "carpet"]
    assert cli.main(["evaluate", str(run)]) == 0
    rows = (run / "metrics_per_category.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["category", "bottle", "carpet", "mean"]
    metrics = json.loads((run / "metrics.json").read_text())
    mean = dict(zip(rows[0].split(",")[1:], map(float, rows[3].split(",")[1:]), strict=True))
    assert list(metrics) == list(METRIC_KEYS)
    assert all(abs(metrics[k] - mean[k]) < 1e-6 for k in METRIC_KEYS)
    scores = (run / "scores.csv").read_text().splitlines()
    assert len(scores) == 1 + 2 * 9 and scores[1].startswith("bottle,")
    assert "pixel_aupro" in capsys.readouterr().out
    # DiffusionAD still needs a category
    assert cli.main(["train", "--out", str(tmp_path / "x"), "--steps", "1"]) == 2
