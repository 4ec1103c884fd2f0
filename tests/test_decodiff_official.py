"""DeCo-Diff's official network, checkpoints and inference protocol, against data recorded from
the official code (tests/fixtures/decodiff_official/, see its README) and an independent
functional reading of the official UNet (LDM's openaimodel layout, written out below)."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from n2n_core.deviation import correct, correction_timesteps, discrepancy_maps
from n2n_core.models.ldm_unet import (
    PRESETS,
    OfficialDoD,
    OfficialUNetConfig,
    convert_official,
    load_official,
)
from n2n_core.schedules import make_schedule

FIX = Path(__file__).parent / "fixtures" / "decodiff_official"
MANIFEST = json.loads((FIX / "manifest.json").read_text())
TINY = OfficialUNetConfig(
    **{k: tuple(v) if isinstance(v, list) else v for k, v in MANIFEST["tiny_config"].items()}
)


# ------------------------------------------------------------------ the network
@pytest.mark.parametrize(("dataset", "ncls"), [("mvtec", 15), ("visa", 12)])
def test_every_released_unet_l_key_converts_with_its_shape(dataset, ncls):
    """The released checkpoints' manifest, on the meta device (no memory): every key has a
    place of the right shape in n2n's model, nothing is left over, 395.0 M parameters."""
    shapes = MANIFEST["unet_l"][dataset]
    with torch.device("meta"):
        sd = {k: torch.empty(v) for k, v in shapes.items()}
    cfg = OfficialUNetConfig(**{**PRESETS["UNet_L"].__dict__, "latent_size": 32, "ncls": ncls})
    out = convert_official(sd, cfg)  # raises on any missing, unexpected or mis-shaped key
    assert len(out) == len(sd)
    n = sum(math.prod(v) for v in shapes.values())
    assert round(n / 1e6, 1) == 395.0


def test_a_checkpoint_that_does_not_fit_names_the_keys_and_the_config():
    with torch.device("meta"):
        sd = {k: torch.empty(v) for k, v in MANIFEST["unet_l"]["mvtec"].items()}
    with pytest.raises(
        ValueError, match=r"ncls=12.*wrong shape \(1\): class_embedding.*\(15, 512\) vs \(12, 512\)"
    ):
        convert_official(sd, OfficialUNetConfig(ncls=12))
    sd["extra.weight"] = torch.empty(1, device="meta")
    with pytest.raises(ValueError, match=r"unexpected \(1\): extra.weight"):
        convert_official(sd, OfficialUNetConfig())


def _tiny_weights(seed=0):
    """Official-layout weights for the tiny UNet (shapes from the recorded checkpoint),
    PyTorch-default-like scales so that activations stay of order one."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in MANIFEST["tiny_keys"].items():
        if "norm" in k or k.endswith(("in_layers.0.weight", "out_layers.0.weight", "out.0.weight")):
            base = torch.ones(shape) if k.endswith("weight") else torch.zeros(shape)
            out[k] = base + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
            out[k] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return out


def _reference_forward(w, x, t, classes, cfg):
    """The official UNetModel.forward written out from its state_dict (float64)."""
    head = cfg.model_channels // cfg.num_heads

    def gn(h, p, eps=1e-5):
        return F.group_norm(h, 32, w[p + ".weight"], w[p + ".bias"], eps)

    def lin(h, p):
        return F.linear(h, w[p + ".weight"], w.get(p + ".bias"))

    def conv(h, p, **kw):
        return F.conv2d(h, w[p + ".weight"], w[p + ".bias"], **kw)

    def res(h, emb, p):
        y = conv(F.silu(gn(h, p + ".in_layers.0")), p + ".in_layers.2", padding=1)
        y = y + lin(F.silu(emb), p + ".emb_layers.1")[:, :, None, None]
        y = conv(F.silu(gn(y, p + ".out_layers.0")), p + ".out_layers.3", padding=1)
        skip = conv(h, p + ".skip_connection") if p + ".skip_connection.weight" in w else h
        return skip + y

    def attention(q_in, kv_in, p, heads):
        q, k, v = lin(q_in, p + ".to_q"), lin(kv_in, p + ".to_k"), lin(kv_in, p + ".to_v")
        b, n, d = q.shape
        q, k, v = (a.reshape(b, a.shape[1], heads, d // heads).transpose(1, 2) for a in (q, k, v))
        a = (q @ k.transpose(-1, -2) * (d // heads) ** -0.5).softmax(-1)
        return lin((a @ v).transpose(1, 2).reshape(b, n, d), p + ".to_out.0")

    def transformer(h, ctx, p):
        b, ch, hh, ww = h.shape
        heads, q = ch // head, p + ".transformer_blocks.0"
        y = conv(gn(h, p + ".norm", 1e-6), p + ".proj_in").flatten(2).transpose(1, 2)

        def ln(a, n):
            return F.layer_norm(a, (ch,), w[f"{q}.{n}.weight"], w[f"{q}.{n}.bias"])

        y = attention(ln(y, "norm1"), ln(y, "norm1"), q + ".attn1", heads) + y
        y = attention(ln(y, "norm2"), ctx, q + ".attn2", heads) + y
        a, gate = lin(ln(y, "norm3"), q + ".ff.net.0.proj").chunk(2, -1)
        y = lin(a * F.gelu(gate), q + ".ff.net.2") + y
        return conv(y.transpose(1, 2).reshape(b, ch, hh, ww), p + ".proj_out") + h

    half = cfg.model_channels // 2  # the sinusoidal embedding in float32, as the official code
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1).double()
    emb = lin(F.silu(lin(emb, "time_embed.0")), "time_embed.2")
    ctx = w["cond_stage_model.embedding.weight"][classes.reshape(-1)][:, None]
    nrb, levels = cfg.num_res_blocks, len(cfg.channel_mult)
    h = conv(x, "input_blocks.0.0", padding=1)
    hs, k = [h], 1
    for i in range(levels):
        for _ in range(nrb):
            h = transformer(res(h, emb, f"input_blocks.{k}.0"), ctx, f"input_blocks.{k}.1")
            hs.append(h)
            k += 1
        if i < levels - 1:
            h = conv(h, f"input_blocks.{k}.0.op", stride=2, padding=1)
            hs.append(h)
            k += 1
    h = res(h, emb, "middle_block.0")
    h = res(transformer(h, ctx, "middle_block.1"), emb, "middle_block.2")
    k = 0
    for i in range(levels):
        for j in range(nrb + 1):
            h = torch.cat([h, hs.pop()], 1)
            h = transformer(res(h, emb, f"output_blocks.{k}.0"), ctx, f"output_blocks.{k}.1")
            if i < levels - 1 and j == nrb:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
                h = conv(h, f"output_blocks.{k}.2.conv", padding=1)
            k += 1
    return conv(F.silu(gn(h, "out.0")), "out.2", padding=1)


def test_official_checkpoint_loads_and_matches_an_independent_reading_of_the_official_unet(
    tmp_path,
):
    """A tiny checkpoint in the official format (float16, as released) loads through the
    converter; in float64 its forward equals the official UNet written out by hand."""
    w = {k: v.half() for k, v in _tiny_weights().items()}
    torch.save({"model": w, "opt": {}}, tmp_path / "ckpt.pt")
    model = load_official(tmp_path / "ckpt.pt", TINY).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    t, classes = torch.tensor([8, 0]), torch.tensor([[2], [0]])
    with torch.no_grad():
        ours = model(x, t, classes)
        ref = _reference_forward({k: v.double() for k, v in w.items()}, x, t, classes, TINY)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    assert ours.abs().max() > 0.1  # a real signal, not zeros
    with torch.no_grad():  # and the class matters
        assert not torch.allclose(model(x, t, torch.tensor([[1], [0]])), ours)


def _rel(ours, ref):
    """The recording's measure: max |Δ| / max |y|."""
    return ((ours.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def test_the_recorded_official_checkpoint_gives_the_official_forward():
    """The official code's own tiny checkpoint and forward pass: float32 within 1e-5 relative,
    and float64 within 1e-10 of the official network run in float64."""
    io = load_file(FIX / "tiny_io.safetensors")
    x, t, ctx = io["unet_x"], io["unet_t"], io["unet_context"]
    model = load_official(FIX / "tiny_unet.pt", TINY).eval()
    with torch.no_grad():
        assert _rel(model(x, t, ctx), io["unet_out"]) < 1e-5
        ours64 = model.double()(x.double(), t, ctx)
    assert _rel(ours64, io["unet_out_float64"]) < 1e-10
    assert io["unet_out"].abs().max() > 0.1  # a real signal, not zeros


def test_import_official_then_correct_gives_the_official_sampler_output(tmp_path):
    """The official deviation-correction loop with the recorded checkpoint (T = 10, "ddim5",
    η = 0, started from z0): n2n's import and Eq. 13-14 correction, within 1e-5 relative."""
    from n2n_core.config import DataSpec
    from n2n_core.methods import get

    (tmp_path / "tiny.json").write_text(json.dumps(MANIFEST["tiny_config"]))
    model, cfg, _ = get("decodiff").import_official(
        FIX / "tiny_unet.pt", DataSpec(source="folder"), config=str(tmp_path / "tiny.json"),
        classes="a,b,c",
    )  # fmt: skip
    assert cfg.T == 10 and cfg.timesteps == [9, 7, 5, 3, 1]
    io = load_file(FIX / "tiny_io.safetensors")
    labels = io["sampler_context"][:, 0]
    with torch.no_grad():
        ours, _ = correct(
            lambda z, t: model.dod(z, t, labels), io["sampler_z0"], model.schedule, cfg.timesteps
        )
    assert _rel(ours, io["sampler_out"]) < 1e-5
    assert _rel(io["sampler_z0"], io["sampler_out"]) > 1e-2  # the correction moved the latents


def test_a_fresh_official_network_is_initialised_as_ldm():
    """LDM wraps three kinds of layer in ``zero_module``: each residual block's last
    convolution (``out_layers.3``), each transformer's ``proj_out`` and the output convolution
    (``out.2``). Those are zero in a fresh network, and only those of its weights."""
    shapes = MANIFEST["tiny_keys"]
    tagged = {k: torch.full(v, float(i)) for i, (k, v) in enumerate(shapes.items())}
    index = {i: k for i, k in enumerate(shapes)}
    official = {k: index[int(v.flatten()[0])] for k, v in convert_official(tagged, TINY).items()}
    fresh = OfficialDoD(TINY).state_dict()  # our key → its official key: official[...]
    zeroed = {official[k] for k, v in fresh.items() if not v.any()}
    ldm_zero = {
        k for k in shapes if ".out_layers.3." in k or ".proj_out." in k or k[:6] == "out.2."
    }
    norm_biases = {official[k] for k in fresh if "norm" in k and k.endswith(".bias")}
    assert ldm_zero and zeroed == ldm_zero | norm_biases
    x, t, c = torch.randn(1, 4, 8, 8), torch.tensor([3]), torch.tensor([1])
    with torch.no_grad():
        assert not OfficialDoD(TINY)(x, t, c).any()


def test_load_official_refuses_other_files(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=r"x.pt: expected \{'model'"):
        load_official(tmp_path / "x.pt", TINY)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_official(tmp_path / "missing.pt", TINY)


# ------------------------------------------------------------------ the inference protocol
def test_official_spacing_visits_the_timesteps_the_official_sampler_did():
    seen = [a + 1 for a, _ in MANIFEST["sampler_timesteps_seen_by_model"]]  # 0- → 1-indexed
    assert correction_timesteps(10, 5, spacing="official") == seen == [9, 7, 5, 3, 1]
    assert correction_timesteps(10, 10, spacing="official") == list(range(10, 0, -1))
    assert correction_timesteps(10, 3, spacing="official") == [9, 5, 1]
    assert correction_timesteps(10, 5) == [10, 8, 6, 4, 2]  # n2n's reading of the paper
    with pytest.raises(ValueError, match="no DDIM respacing"):
        correction_timesteps(10, 7, spacing="official")


def test_correction_equals_the_official_ddim_deviation_loop():
    """The official loop (respaced DDIM, η = 0, the model output read as the deviation),
    written out on the 0-indexed squared-cosine schedule, equals n2n's Eq. 13-14."""
    f = lambda u: math.cos((u / 10 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - f(i + 1) / f(i), 0.999) for i in range(10)]
    abar = torch.tensor(betas, dtype=torch.float64).neg().add(1).cumprod(0)  # index 0..9
    kept = [0, 2, 4, 6, 8]  # "ddim5"
    g = torch.Generator().manual_seed(3)
    a = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)

    def dod(z, t):  # any smooth function of (z, t)
        return torch.tanh(a * z) * (1 + t.view(-1, 1, 1, 1) / 10)

    z0 = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    z = z0
    for i in reversed(range(len(kept))):  # the official loop, respaced index i → timestep
        t0 = kept[i]
        d = dod(z, torch.full((2,), t0 + 1))  # n2n's δ takes the 1-indexed t
        x0 = z - (1 - abar[t0]).sqrt() * d
        z = x0 + (1 - abar[kept[i - 1]]).sqrt() * d if i > 0 else x0
    ours, _ = correct(dod, z0, make_schedule("cosine", 10), [9, 7, 5, 3, 1])
    torch.testing.assert_close(ours, z, rtol=1e-10, atol=1e-10)


def test_official_maps_reproduce_the_recorded_eq15_maps():
    """The recorded official maps (image 32 px, latent 4 px): blur, clipping, channel
    reductions, the latent resize and both combinations, at the border too."""
    io = load_file(FIX / "tiny_io.safetensors")
    maps = discrepancy_maps(
        io["map_z0"], io["map_latent_sample"], io["map_x0"], io["map_image_sample"],
        tau_l=0.2, tau_p=0.4, sigma_l=1.0, sigma_p=3.0, boundary="official",
    )  # fmt: skip
    for ours, key in [
        ("pixel", "map_image_term"),
        ("latent", "map_latent_term"),
        ("geometric", "map_geometric"),
        ("arithmetic", "map_arithmetic"),
    ]:
        torch.testing.assert_close(maps[ours][:, 0], io[key], rtol=1e-5, atol=1e-6)
    n2n = discrepancy_maps(
        io["map_z0"], io["map_latent_sample"], io["map_x0"], io["map_image_sample"]
    )  # our default border handling differs there, and only there
    diff = (n2n["latent"][:, 0] - io["map_latent_term"]).abs()
    assert diff.max() > 1e-3 and diff[:, 8:-8, 8:-8].max() < diff.max()


# ------------------------------------------------------------------ import + evaluate
def test_import_official_then_evaluate_end_to_end(tmp_path):
    """A tiny official-format checkpoint and a tiny local AutoencoderKL folder become an
    ordinary run folder that `evaluate` scores, one row per test image in scores.csv."""
    import csv

    from n2n_core import cli
    from n2n_core.data import fixtures
    from n2n_core.models.vae import VAEConfig, make_autoencoder

    torch.manual_seed(0)
    make_autoencoder(VAEConfig(channels=(8, 8, 8, 8), norm_num_groups=4)).save_pretrained(
        tmp_path / "vae"
    )  # f = 8, like the SD VAE
    torch.save({"model": {k: v.half() for k, v in _tiny_weights().items()}}, tmp_path / "c.pt")
    (tmp_path / "tiny.json").write_text(json.dumps(MANIFEST["tiny_config"]))
    cats = ("bottle", "carpet", "cable")
    root = fixtures.write_mvtec(tmp_path / "mvtec", categories=cats, n_test=2, size=64)
    run = tmp_path / "run"
    args = ["import-official", "decodiff", str(tmp_path / "c.pt"), "--config"]
    args += [str(tmp_path / "tiny.json"), "--classes", ",".join(cats), "--vae"]
    args += [str(tmp_path / "vae"), "--data", "mvtec", "--root", str(root), "--out", str(run)]
    assert cli.main(args) == 0
    info = json.loads((run / "train_info.json").read_text())
    assert info["imported_from"].endswith("c.pt")
    assert cli.main(["evaluate", str(run)]) == 0
    rows = list(csv.DictReader((run / "scores.csv").open()))
    assert len(rows) == 3 * 2 * 3  # 3 categories × (2 good + 2 per defect type × 2 types)
    assert {r["category"] for r in rows} == set(cats)
    ev = json.loads((run / "eval_info.json").read_text())
    assert ev["timesteps"] == [9, 7, 5, 3, 1] and ev["network"] == "official"
    grid = ev["pixel_aupro_official_grid"]  # beside the exact AUPRO, named so
    assert (grid["thresholds"], grid["fpr_rescale"]) == (200, "max")
    assert set(grid["categories"]) == set(cats) and "mean" in grid
    assert "pixel_aupro_official_grid" not in json.loads((run / "metrics.json").read_text())
    # the imported weights are the ones evaluated
    from n2n_core.evaluate import load_predictor

    _, cfg, detector = load_predictor(run)
    w = convert_official({k: v.half() for k, v in _tiny_weights().items()}, cfg.official_config)
    torch.testing.assert_close(
        detector.model.net.class_embedding.weight, w["class_embedding.weight"].float()
    )
    # a checkpoint for other classes fails naming the key
    args[args.index("--classes") + 1] = "bottle,carpet"
    args[-1] = str(tmp_path / "run2")
    assert cli.main(args) == 2


def test_official_preprocessing_resizes_bicubic_then_crops_the_centre(tmp_path):
    """288 → 256 in the paper profile; here 100 px → 72 → the centre 64 (offset 4): images
    bicubic, masks bicubic then > 0 (a defect grows by the filter's reach, never vanishes)."""
    import numpy as np
    from PIL import Image

    from n2n_core.data import AnomalyDataset
    from n2n_core.data.samples import Sample

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[50, 50] = 255  # one pixel
    Image.fromarray(img).save(tmp_path / "x.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    s = Sample(tmp_path / "x.png", tmp_path / "m.png", 1, "d", "c", "test")
    item = AnomalyDataset([s], 64, (0.0, 1.0), load_size=72)[0]
    big = np.asarray(Image.fromarray(img).resize((72, 72), Image.Resampling.BICUBIC))
    expected = torch.from_numpy(big[4:68, 4:68].copy()).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(item["image"], expected)
    m = item["mask"][0]
    assert (
        m.shape == (64, 64)
        and 1 <= int(m.sum()) <= 16
        and m[32 - 4 : 32 + 4, 32 - 4 : 32 + 4].sum() > 0
    )
    with pytest.raises(ValueError, match="load_size 32 must be at least image_size 64"):
        AnomalyDataset([s], 64, load_size=32)


@pytest.mark.parametrize("mode", ["L", "P"])
def test_raw_visa_labels_are_resized_as_they_are_then_thresholded(tmp_path, mode):
    """Raw VisA masks hold small labels (1, 2, …), not 0/255. The official loader resizes
    those values bicubically and keeps > 0, which gives thinner masks than resizing 0/255:
    the dataset does the same (PIL bicubic of the raw values, > 0, centre crop)."""
    import numpy as np
    from PIL import Image

    from n2n_core.data import AnomalyDataset, load_mask
    from n2n_core.data.samples import Sample

    raw = np.zeros((90, 90), dtype=np.uint8)
    raw[20:31, 15:60] = 1  # a blob with label 1
    raw[50:53, 10:80] = 2  # a thin scratch with label 2
    raw[70, 40] = 1  # one pixel
    Image.fromarray(np.zeros((90, 90, 3), np.uint8)).save(tmp_path / "x.png")
    im = Image.fromarray(raw)
    if mode == "P":
        im = im.convert("P")
        im.putpalette([0, 0, 0, 1, 1, 1, 2, 2, 2] + [0] * 759)  # read as grey, as the official
    im.save(tmp_path / "m.png")
    s = Sample(tmp_path / "x.png", tmp_path / "m.png", 1, "d", "c", "test")
    item = AnomalyDataset([s], 64, load_size=72)[0]
    big = np.asarray(Image.fromarray(raw).resize((72, 72), Image.Resampling.BICUBIC))
    assert torch.equal(item["mask"][0], torch.from_numpy(big[4:68, 4:68] > 0).float())
    binary = np.asarray(Image.fromarray(raw * 255).resize((72, 72), Image.Resampling.BICUBIC))
    assert (big > 0).sum() < (binary > 0).sum()  # the 0/255 version is dilated
    assert (load_mask(tmp_path / "m.png") == (raw > 0)).all()


def test_reproduce_with_the_released_weights_reports_beside_paper_and_released(tmp_path):
    """`reproduce decodiff-mvtec --weights CKPT`: import once, evaluate once, report ours next
    to Table 1 and to the released weights' own results (official class order, 15 classes)."""
    import csv

    from n2n_core import cli
    from n2n_core.data import fixtures
    from n2n_core.models.vae import VAEConfig, make_autoencoder
    from n2n_core.reproduce import reproduce

    torch.manual_seed(0)
    make_autoencoder(VAEConfig(channels=(8, 8, 8, 8), norm_num_groups=4)).save_pretrained(
        tmp_path / "vae"
    )
    w = _tiny_weights()
    w["cond_stage_model.embedding.weight"] = torch.randn(15, TINY.context_dim)  # MVTec's 15
    torch.save({"model": {k: v.half() for k, v in w.items()}}, tmp_path / "c.pt")
    (tmp_path / "tiny.json").write_text(json.dumps({**MANIFEST["tiny_config"], "ncls": 15}))
    root = fixtures.write_mvtec(tmp_path / "mvtec", categories=("bottle", "carpet"), size=64)
    runs = tmp_path / "released"
    options = {"config": str(tmp_path / "tiny.json"), "vae": str(tmp_path / "vae")}
    kw = {"profile": "paper", "root": root, "weights": tmp_path / "c.pt"}
    kw["weights_options"] = options
    table = reproduce("decodiff-mvtec", runs=runs, **kw)
    assert list(table) == ["bottle", "carpet", "mean"]
    rows = {(r["category"], r["metric"]): r for r in csv.DictReader((runs / "report.csv").open())}
    mean = rows[("mean", "pixel_ap")]
    assert float(mean["released"]) == pytest.approx(0.768)  # the official README's MVTec AD
    assert float(mean["paper"]) == pytest.approx(0.749)  # Table 1
    assert float(mean["delta_released"]) == pytest.approx(
        table["mean"]["pixel_ap"] - 0.768, abs=1e-4
    )
    assert "released weights' own results" in (runs / "report.md").read_text()
    stamp = (runs / "metrics.json").stat().st_mtime
    reproduce("decodiff-mvtec", runs=runs, **kw)
    assert (runs / "metrics.json").stat().st_mtime == stamp  # imported and evaluated once
    bad = ["reproduce", "diffusionad-visa", "--weights", str(tmp_path / "c.pt")]
    with pytest.raises(ValueError, match=r"no released weights.*decodiff-mvtec"):
        reproduce("diffusionad-visa", runs=tmp_path / "x", **kw)
    assert cli.main([*bad, "--runs", str(tmp_path / "x")]) == 2
