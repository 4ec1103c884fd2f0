"""Anomaly synthesis (DiffusionAD §3.3) against closed forms and independent expectations."""

import numpy as np
import pytest
import torch
from PIL import Image

from n2n_core import synthesis as Y


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _image(h=64, w=64, seed=0):
    return torch.rand(3, h, w, generator=_g(seed))


def _object_fg(h=64, w=64):
    fg = torch.zeros(h, w, dtype=torch.bool)
    fg[12:52, 16:48] = True
    return fg


def test_perlin_is_zero_on_the_lattice_and_smooth():
    n = Y.perlin_noise(64, 64, (4, 8), _g())
    assert n.shape == (64, 64)
    lattice = n[::16, ::8]  # 4 cells of 16 px in y, 8 cells of 8 px in x
    assert lattice.abs().max() < 1e-6  # gradient noise vanishes at lattice points
    assert n.abs().max() < 1.5 and n.std() > 0.1
    assert (n[1:] - n[:-1]).abs().max() < 0.5  # continuous: no jumps between neighbours


def test_region_is_binary_inside_foreground_and_nonempty():
    syn = Y.AnomalySynthesizer()
    fg = _object_fg()
    for seed in range(20):
        P, F, M = syn.region(64, 64, _g(seed), fg)
        assert M.dtype == torch.bool and bool(M.any())
        assert not bool((M & ~fg).any()) and torch.equal(M, P & F)


def test_texture_region_is_a_random_part():
    syn = Y.AnomalySynthesizer()
    _, F, M = syn.region(64, 64, _g(3), None)
    ys, xs = torch.nonzero(F, as_tuple=True)
    h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
    assert int(F.sum()) == h * w and 32 <= h <= 64 and 32 <= w <= 64  # a rectangle, ≥ half a side
    assert not bool((M & ~F).any())


def test_region_redraws_until_it_hits_a_tiny_foreground():
    fg = torch.zeros(64, 64, dtype=torch.bool)
    fg[30:34, 30:34] = True
    *_, M = Y.AnomalySynthesizer().region(64, 64, _g(1), fg)
    assert bool(M.any()) and not bool((M & ~fg).any())
    with pytest.raises(ValueError, match="foreground mask is empty"):
        Y.AnomalySynthesizer().region(64, 64, _g(1), torch.zeros(64, 64, dtype=torch.bool))


@pytest.mark.parametrize("foreground", [True, False])
def test_eq9_outside_mask_is_exactly_normal(foreground):
    syn = Y.AnomalySynthesizer()
    N = _image()
    for seed in range(10):
        s = syn.synthesize(N, _g(seed), _object_fg() if foreground else None)
        outside = ~s.M.expand(3, -1, -1)
        assert torch.equal(s.S[outside], N[outside])
        inside = s.M.expand(3, -1, -1)
        expected = s.beta * N[inside] + (1 - s.beta) * s.A[inside]
        torch.testing.assert_close(s.S[inside], expected)
        assert 0.2 <= s.beta < 0.8


def test_beta_one_returns_the_normal_image():
    s = Y.AnomalySynthesizer().synthesize(_image(), _g(4), _object_fg(), beta=1.0)
    assert torch.equal(s.S, s.N) and bool(s.M.any())


def test_same_seed_same_output():
    syn = Y.AnomalySynthesizer()
    N = _image()
    a, b = syn.synthesize(N, _g(7), _object_fg()), syn.synthesize(N, _g(7), _object_fg())
    assert torch.equal(a.S, b.S) and torch.equal(a.M, b.M) and a.source == b.source
    c = syn.synthesize(N, _g(8), _object_fg())
    assert not torch.equal(a.M, c.M)


def test_every_augmentation_op():
    x = _image(32, 32)
    g = _g()
    torch.testing.assert_close(Y.AUGMENTATIONS["invert"](x, g), 1 - x)
    ac = Y.AUGMENTATIONS["autocontrast"](0.25 + 0.5 * x, g)
    torch.testing.assert_close(ac.amin((1, 2)), torch.zeros(3))
    torch.testing.assert_close(ac.amax((1, 2)), torch.ones(3))
    post = Y.AUGMENTATIONS["posterize"](x, g) * 255
    steps = {int(v) for v in torch.unique(post.round())}
    assert len(steps) <= 16 and all(v % 16 == 0 for v in steps)  # ≤ 4 bits kept
    sol = Y.AUGMENTATIONS["solarize"](x, g)
    flipped = ~torch.isclose(sol, x)
    assert torch.equal(sol[flipped], 1 - x[flipped])
    assert x[flipped].min() > x[~flipped].max() - 1e-6  # exactly the values above a threshold
    gam = Y.AUGMENTATIONS["gamma_contrast"](x, g)
    order = torch.argsort(x.flatten())
    assert bool((gam.flatten()[order].diff() >= -1e-7).all())  # monotone, 0 and 1 fixed
    assert (
        float(
            Y.AUGMENTATIONS["gamma_contrast"](torch.tensor([[[0.0, 1.0]]]).expand(3, 1, 2), g).sum()
        )
        == 3
    )
    flat = torch.full((3, 16, 16), 0.4)
    torch.testing.assert_close(Y.AUGMENTATIONS["sharpness"](flat, g), flat)
    sharp = Y.AUGMENTATIONS["sharpness"](x, g)
    assert float((sharp - x).abs().mean()) > 0.01


@pytest.mark.parametrize("seed", range(3))
def test_equalize_matches_pil_exactly(seed):
    from PIL import ImageOps

    rng = np.random.default_rng(seed)
    rgb = (rng.random((40, 56, 3)) ** np.array([1, 3, 0.5]) * 255).round().astype(np.uint8)
    rgb[..., 2] = 77 if seed == 2 else rgb[..., 2]  # a constant channel: identity
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    ours = (Y.AUGMENTATIONS["equalize"](x, _g()) * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(ours, np.asarray(ImageOps.equalize(Image.fromarray(rgb))))


def test_grid_shuffle_is_a_tile_permutation():
    x = _image(64, 64)
    y = Y.grid_shuffle(x, _g(), grid=8)
    tiles = lambda t: t.reshape(3, 8, 8, 8, 8).permute(1, 3, 0, 2, 4).reshape(64, -1)  # noqa: E731
    a, b = tiles(x), tiles(y)
    match = [(a[i] == b).all(1).nonzero().flatten().tolist() for i in range(64)]
    assert sorted(m[0] for m in match) == list(range(64))  # each tile appears exactly once
    assert not torch.equal(x, y)
    with pytest.raises(ValueError, match="divisible by grid=8"):
        Y.grid_shuffle(_image(60, 64), _g())


def test_self_augmentation_uses_two_distinct_ops():
    syn = Y.AnomalySynthesizer(Y.SynthesisConfig(p_texture=0.0))
    seen = set()
    for seed in range(30):
        a, source = syn.appearance(_image(), _g(seed), texture_category=False)
        ops = source.removeprefix("self-augmentation: ").split("+")
        assert len(ops) == 2 and len(set(ops)) == 2 and a.shape == (3, 64, 64)
        seen.update(ops)
    assert seen == set(Y.AUGMENTATIONS)  # all seven are drawn


def test_texture_folder_and_clean_fallback(tmp_path):
    folder = tmp_path / "dtd" / "images" / "banded"
    folder.mkdir(parents=True)
    colours = [(200, 30, 30), (30, 200, 30)]
    for i, c in enumerate(colours):
        Image.fromarray(np.full((40, 50, 3), c, np.uint8)).save(folder / f"t{i}.jpg", quality=100)
    src = Y.TextureSource(tmp_path / "dtd" / "images")
    assert not src.procedural and len(src.files) == 2
    t = src.sample(32, 32, _g())
    assert t.shape == (3, 32, 32)
    assert (
        min(float((t - torch.tensor(c)[:, None, None] / 255).abs().max()) for c in colours) < 0.05
    )
    syn = Y.AnomalySynthesizer(textures=src)
    s = syn.synthesize(_image(32, 32), _g(), None)  # texture category: always the folder
    assert s.source == "texture"
    with pytest.warns(UserWarning, match=r"missing or has no images.*download dtd"):
        missing = Y.TextureSource(tmp_path / "nope")
    assert missing.procedural and missing.sample(32, 32, _g()).shape == (3, 32, 32)


def test_procedural_textures_are_varied_and_in_range():
    texs = [Y.procedural_texture(48, 48, _g(s)) for s in range(8)]
    assert all(float(t.min()) >= 0 and float(t.max()) <= 1 for t in texs)
    assert len({round(float(t.mean()), 3) for t in texs}) == 8


def test_batch_composition():
    syn = Y.AnomalySynthesizer()
    normals = torch.stack([_image(seed=i) for i in range(6)])
    fgs = _object_fg()[None, None].expand(6, 1, -1, -1).float()
    images, masks, labels = syn.batch(normals, _g(), fgs)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]  # 3 normal + 3 synthetic, as in the paper
    assert torch.equal(images[:3], normals[:3]) and float(masks[:3].sum()) == 0
    assert all(float(masks[i].sum()) > 0 for i in range(3, 6))
    assert float((masks * (1 - fgs)).sum()) == 0
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="n_anomalous"):
        syn.batch(normals, _g(), n_anomalous=7)


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="perlin_scale"):
        Y.AnomalySynthesizer(Y.SynthesisConfig(perlin_scale=(3, 3)))
    with pytest.raises(ValueError, match="beta"):
        Y.AnomalySynthesizer(Y.SynthesisConfig(beta=(0.9, 0.2)))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        Y.AnomalySynthesizer().synthesize(torch.rand(1, 3, 8, 8), _g())
    with pytest.raises(ValueError, match="foreground shape"):
        Y.AnomalySynthesizer().synthesize(_image(), _g(), torch.ones(32, 32, dtype=torch.bool))
