"""DiffusionAD: models, Alg. 1 / Alg. 2 wiring, training (resume, NaN guard), CLI, accelerate."""

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny import TINY_DIFFUSIONAD  # tests/tiny.py

from n2n_core import cli
from n2n_core.data import fixtures
from n2n_core.methods.diffusionad import DiffusionAD, focal_loss, top_k_score
from n2n_core.metrics import METRIC_KEYS
from n2n_core.models import (
    DenoiserConfig,
    SegmentationNet,
    SegmenterConfig,
    count_parameters,
    make_denoiser,
)
from n2n_core.synthesis import AnomalySynthesizer, SynthesisConfig, TextureSource
from n2n_core.train import DataSpec, TrainConfig, TrainingDiverged, train

TINY = TINY_DIFFUSIONAD


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    return fixtures.write_mvtec(
        tmp_path_factory.mktemp("data") / "mvtec",
        categories=("bottle",),
        n_train=8,
        n_test=3,
        size=32,
    )


# ------------------------------------------------------------------------------ models
def test_paper_denoiser_configuration():
    unet = make_denoiser(DenoiserConfig(image_size=256))
    with pytest.raises(ValueError, match="image_size is None"):
        make_denoiser(DenoiserConfig())
    types = [type(b).__name__ for b in unet.down_blocks]
    assert types == ["DownBlock2D"] * 3 + ["AttnDownBlock2D"] * 3  # attention at 32, 16, 8 px
    assert [b.resnets[0].out_channels for b in unet.down_blocks] == [128, 128, 256, 256, 512, 512]
    assert unet.mid_block.attentions[0].heads == 4
    assert 120e6 < count_parameters(unet) < 150e6  # official: 131.7 M
    x = torch.randn(1, 3, 64, 64)
    small = make_denoiser(
        DenoiserConfig(
            image_size=64,
            channels=(16, 32),
            attention_resolutions=(32,),
            attention_head_dim=16,
            norm_num_groups=8,
        )
    )
    with pytest.raises(ValueError, match="attention_head_dim 128 must divide the 32 channels"):
        make_denoiser(DenoiserConfig(image_size=64, channels=(16, 32), attention_resolutions=(32,)))
    assert small(x, torch.tensor([10])).sample.shape == x.shape


def test_segmenter_shapes_and_range():
    net = SegmentationNet(SegmenterConfig(in_channels=6, base=8, multipliers=(1, 2, 4)))
    with torch.no_grad():
        out = net(torch.randn(2, 6, 32, 32))
    assert out.shape == (2, 1, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert 20e6 < count_parameters(SegmentationNet()) < 40e6  # paper/DRAEM scale
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 6, 30, 30))


# ---------------------------------------------------------------------- Alg. 1 / Alg. 2
class Oracle(torch.nn.Module):
    """A denoiser that knows x0, so returns the exact noise of x_t (DiffusionAD Eq. 2)."""

    def __init__(self, x0, schedule):
        super().__init__()
        self.x0, self.s = x0, schedule

    def forward(self, x_t, t):
        ab = self.s.alpha_bar[t.cpu()].float().view(-1, 1, 1, 1)
        return SimpleNamespace(sample=(x_t - ab.sqrt() * self.x0) / (1 - ab).sqrt())


def test_alg1_wiring_with_an_oracle_denoiser():
    model = DiffusionAD(TINY)
    x0 = torch.rand(2, 3, 32, 32) * 1.6 - 0.8
    model.denoiser = Oracle(x0, model.schedule)
    seen = {}
    model.segmenter.forward = lambda inp: (
        seen.setdefault("inp", inp)[:, :1] * 0 + 0.5
    )  # records input
    loss, parts = model(x0, torch.zeros(2, 1, 32, 32), torch.Generator().manual_seed(0))
    assert parts["noise"] < 1e-8  # Eq. 6 with the true noise
    torch.testing.assert_close(
        seen["inp"][:, 3:, :, 1], x0[:, :, :, 1], atol=1e-4, rtol=0
    )  # Eq. 5: x̂0 = x0
    torch.testing.assert_close(seen["inp"][:, :3], x0)  # concat(x0, x̂0)
    assert torch.isclose(loss, parts["noise"] + parts["mask"])  # Eq. 8


def test_alg1_draws_t_and_noise_from_the_generator():
    model = DiffusionAD(TINY)
    x, m = torch.rand(3, 3, 32, 32) * 2 - 1, torch.zeros(3, 1, 32, 32)
    a = model(x, m, torch.Generator().manual_seed(5))[0]
    b = model(x, m, torch.Generator().manual_seed(5))[0]
    c = model(x, m, torch.Generator().manual_seed(6))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_train_t_max_bounds_t_and_detach_stops_the_mask_gradient():
    x, m = torch.rand(4, 3, 32, 32) * 2 - 1, (torch.rand(4, 1, 32, 32) > 0.5).float()
    for detach in (False, True):
        model = DiffusionAD(replace(TINY, train_t_max=7, detach_x0_hat=detach))
        seen = []
        original = model.one_step
        model.one_step = lambda x0, t, eps, seen=seen, f=original: seen.append(t) or f(x0, t, eps)
        _, parts = model(x, m, torch.Generator().manual_seed(0))
        assert 1 <= int(seen[0].min()) and int(seen[0].max()) <= 7
        parts["mask"].backward()
        grads = [p.grad for p in model.denoiser.parameters() if p.grad is not None]
        assert (not grads or all(float(g.abs().sum()) == 0 for g in grads)) == detach
    with pytest.raises(ValueError, match="train_t_max"):
        replace(TINY, train_t_max=0)


class Biased(torch.nn.Module):
    """A denoiser that predicts the true noise of x_t plus a constant c."""

    def __init__(self, x0, schedule, c):
        super().__init__()
        self.oracle, self.c = Oracle(x0, schedule), c

    def forward(self, x_t, t):
        return SimpleNamespace(sample=self.oracle(x_t, t).sample + self.c)


def test_norm_guided_estimate_oracle_and_closed_form():
    model = DiffusionAD(replace(TINY, norm_guided=True, condition_w=0.7))
    x0 = torch.rand(2, 3, 32, 32) * 1.6 - 0.8
    eps_a, eps_b = torch.randn(2, *x0.shape).unbind(0)
    model.denoiser = Oracle(x0, model.schedule)  # exact ε at both steps: no guidance left
    x0_hat, _, _ = model.norm_guided_x0(x0, 200, 400, eps_a, eps_b)
    torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=0)
    # a biased denoiser: the guided estimate is the t_a estimate moved by
    # w (1 − ᾱ_a)/√ᾱ_a · (x̃_a − x_a), x̃_a = q(x̂0_b, t_a, ε̂_a) (ε̃ substituted into Eq. 5)
    model.denoiser = Biased(x0, model.schedule, 0.05)
    ab_a, ab_b = (float(model.schedule.alpha_bar[t]) for t in (20, 400))
    x_a = ab_a**0.5 * x0 + (1 - ab_a) ** 0.5 * eps_a
    x_b = ab_b**0.5 * x0 + (1 - ab_b) ** 0.5 * eps_b
    x0_a = (x_a - (1 - ab_a) ** 0.5 * (eps_a + 0.05)) / ab_a**0.5
    x0_b = ((x_b - (1 - ab_b) ** 0.5 * (eps_b + 0.05)) / ab_b**0.5).clamp(-1, 1)
    x_a_guide = ab_a**0.5 * x0_b + (1 - ab_a) ** 0.5 * (eps_a + 0.05)
    expected = (x0_a + 0.7 * (1 - ab_a) / ab_a**0.5 * (x_a_guide - x_a)).clamp(-1, 1)
    x0_hat, _, _ = model.norm_guided_x0(x0, 20, 400, eps_a, eps_b)
    torch.testing.assert_close(x0_hat, expected, atol=1e-4, rtol=0)
    # w = 0: the plain one-step estimate at t_a (Eq. 5)
    model.cfg = replace(model.cfg, condition_w=0.0)
    torch.testing.assert_close(
        model.norm_guided_x0(x0, 20, 400, eps_a, eps_b)[0], x0_a.clamp(-1, 1), atol=1e-4, rtol=0
    )


def test_norm_guided_training_and_inference():
    cfg = replace(TINY, norm_guided=True, guide_split=30, guide_t=(10, 50))
    model = DiffusionAD(cfg)
    x0 = torch.rand(4, 3, 32, 32) * 1.6 - 0.8
    seen = []
    original = model.norm_guided_x0
    model.norm_guided_x0 = lambda x, a, b, ea, eb: seen.append((a, b)) or original(x, a, b, ea, eb)
    masks = torch.zeros(4, 1, 32, 32)
    masks[2:, :, :4, :4] = 1  # two anomalous images
    model.denoiser = Oracle(x0, model.schedule)
    _, parts = model(x0, masks, torch.Generator().manual_seed(0))
    t_a, t_b = seen[0]
    assert int(t_a.min()) >= 1 and int(t_a.max()) <= 30 < int(t_b.min()) and int(t_b.max()) <= 1000
    assert parts["noise"] < 1e-8
    model.denoiser = Biased(x0, model.schedule, 0.1)  # ε error 0.1 at both steps: loss 2 · 0.01
    assert math.isclose(float(model(x0, masks, torch.Generator())[1]["noise"]), 0.02, rel_tol=1e-4)
    masks[:] = 1  # only anomalous images: the code's noise loss is 0
    assert float(model(x0, masks, torch.Generator())[1]["noise"]) == 0
    maps, x0_hats = model.anomaly_map(x0, torch.Generator().manual_seed(0), lambdas=(100, 200))
    assert seen[-1] == (10, 50) and len(x0_hats) == 1 and maps.shape == (4, 1, 32, 32)
    for bad in (
        {"guide_t": (50, 10)},
        {"guide_split": 1000},
        {"variant": "segmentation_only"},
    ):
        with pytest.raises(ValueError, match="guide"):
            replace(cfg, **bad)


def test_alg2_denoising_only_map_is_reconstruction_error():
    model = DiffusionAD(replace(TINY, variant="denoising_only"))
    assert model.segmenter is None and not model.cfg.needs_anomalies
    x0 = torch.rand(2, 3, 32, 32) * 1.6 - 0.8
    model.denoiser = Oracle(x0, model.schedule)
    maps, x0_hats = model.anomaly_map(x0, torch.Generator().manual_seed(0), (100, 200))
    assert maps.shape == (2, 1, 32, 32) and len(x0_hats) == 2
    assert float(maps.max()) < 1e-4  # a perfect repair: |x0 − x̂0| = 0


def test_alg2_is_seeded_and_averages_lambdas():
    model = DiffusionAD(TINY).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    m1, _ = model.anomaly_map(x, torch.Generator().manual_seed(1))
    m2, _ = model.anomaly_map(x, torch.Generator().manual_seed(1))
    assert torch.equal(m1, m2)
    g = torch.Generator().manual_seed(2)
    both, _ = model.anomaly_map(x, g, (100, 200))
    g = torch.Generator().manual_seed(2)
    a, _ = model.anomaly_map(x, g, (100,))
    b, _ = model.anomaly_map(x, g, (200,))
    torch.testing.assert_close(both, (a + b) / 2)


def test_segmentation_only_variant_sees_the_image_alone():
    model = DiffusionAD(replace(TINY, variant="segmentation_only"))
    assert model.denoiser is None and model.segmenter.encoder[0][0].in_channels == 3
    _, parts = model(torch.rand(2, 3, 32, 32), torch.zeros(2, 1, 32, 32), torch.Generator())
    assert set(parts) == {"mask"}


def test_focal_loss_and_top_k_by_hand():
    p, y = torch.tensor([0.9, 0.2, 0.7, 0.1]), torch.tensor([1.0, 1.0, 0.0, 0.0])
    expect = [
        -0.5 * 0.1**4 * math.log(0.9),
        -0.5 * 0.8**4 * math.log(0.2),
        -0.5 * 0.7**4 * math.log(0.3),
        -0.5 * 0.1**4 * math.log(0.9),
    ]
    assert float(focal_loss(p, y)) == pytest.approx(sum(expect) / 4, rel=1e-5)
    maps = torch.arange(32.0).view(2, 1, 4, 4)
    torch.testing.assert_close(top_k_score(maps, 3), torch.tensor([14.0, 30.0]))


# ---------------------------------------------------------------------------- training
def _cfg(**kw):
    return TrainConfig(**{"steps": 6, "batch_size": 4, "checkpoint_every": 2, "log_every": 1, **kw})


def _log(run):
    return [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]


def test_interrupted_run_resumes_with_the_same_losses(tmp_path, mvtec):
    data = DataSpec("mvtec", str(mvtec), "bottle")
    train(tmp_path / "straight", TINY, _cfg(), data)
    first = train(tmp_path / "resumed", TINY, _cfg(), data, stop_after=3)  # "interrupted"
    assert (
        len(_log(tmp_path / "resumed")) == 3
        and not (tmp_path / "resumed" / "model.safetensors").exists()
    )
    second = train(tmp_path / "resumed", TINY, _cfg(), data, resume=True)
    assert _log(tmp_path / "resumed") == _log(tmp_path / "straight")  # bit-identical losses
    assert (tmp_path / "resumed" / "model.safetensors").exists()
    # the run's cost counts both segments (the first up to its checkpoint)
    info = json.loads((tmp_path / "resumed" / "train_info.json").read_text())
    assert info["steps"] == 6
    assert second["seconds"] < info["seconds"] <= first["seconds"] + second["seconds"]
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(tmp_path / "straight", TINY, _cfg(), data)
    with pytest.raises(ValueError, match="other settings"):
        train(tmp_path / "straight", TINY, _cfg(lr=1e-3), data, resume=True)


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, mvtec, monkeypatch):
    original = DiffusionAD.forward
    calls = {"n": 0}

    def poisoned(self, *args):
        calls["n"] += 1
        loss, parts = original(self, *args)
        return (loss * float("nan"), parts) if calls["n"] == 5 else (loss, parts)

    monkeypatch.setattr(DiffusionAD, "forward", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"not finite at step 5.*last good checkpoint"):
        train(run, TINY, _cfg(), DataSpec("mvtec", str(mvtec), "bottle"))
    ckpt = run / "checkpoints" / "last"
    assert ckpt.is_dir() and not (run / "checkpoints" / "last.tmp").exists()
    assert len(_log(run)) == 4
    monkeypatch.setattr(DiffusionAD, "forward", original)
    train(
        run, TINY, _cfg(), DataSpec("mvtec", str(mvtec), "bottle"), resume=True
    )  # resumes from step 4
    assert [e["step"] for e in _log(run)] == [1, 2, 3, 4, 5, 6]


def _train_args(data, root, run, *extra):
    return [
        "train",
        "--data",
        data,
        "--root",
        str(root),
        "--category",
        "bottle",
        "--out",
        str(run),
        "--steps",
        "3",
        "--image-size",
        "32",
        *extra,
    ]


def test_cli_train_and_evaluate_on_a_folder(tmp_path, mvtec, capsys):
    run = tmp_path / "run"
    args = _train_args(
        "folder",
        mvtec / "bottle",
        run,
        "--method",
        "diffusionad",
        "--profile",
        "smoke",
        "--checkpoint-every",
        "2",
        "--seed",
        "1",
    )
    assert cli.main(args) == 0
    assert cli.main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics) == list(METRIC_KEYS) and all(0 <= v <= 1 for v in metrics.values())
    rows = (run / "scores.csv").read_text().splitlines()
    assert rows[0] == "category,image,label,defect,score" and len(rows) == 1 + 9
    assert (run / "figures" / "samples.png").stat().st_size > 1000
    assert "pixel_aupro" in capsys.readouterr().out
    assert cli.main(["evaluate", str(tmp_path / "nope")]) == 2


def test_cli_norm_guided_variant_round_trips_through_the_run_folder(tmp_path, mvtec):
    run = tmp_path / "run"
    args = _train_args("folder", mvtec / "bottle", run, "--norm-guided")
    assert cli.main(args) == 0 and cli.main(["evaluate", str(run)]) == 0
    info = json.loads((run / "eval_info.json").read_text())
    assert info["norm_guided_t"] == [200, 400] and info["lambdas"] is None


def test_accelerate_launch_with_two_cpu_processes(tmp_path, mvtec):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "n2n_core",
        *_train_args("mvtec", mvtec, run, "--batch-size", "2"),
    ]
    # no GPU: ACCELERATE_USE_CPU makes the torchrun processes form a gloo (MULTI_CPU) group
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (run / "model.safetensors").exists() and len(_log(run)) >= 1
    state = run / "checkpoints" / "last"
    assert sorted(p.name for p in state.glob("rng_*.json")) == ["rng_0.json", "rng_1.json"]
    assert not list(state.glob("*.pkl"))  # nothing in a checkpoint is unpickled
    shutil.rmtree(run)


# ----------------------------------------------------------- the official code's regime
class PerImage(torch.nn.Module):
    """The true noise of x_t (for the clean images ``x0``) plus c_i for image i."""

    def __init__(self, x0, schedule, c):
        super().__init__()
        self.oracle, self.c = Oracle(x0, schedule), torch.tensor(c).view(-1, 1, 1, 1)

    def forward(self, x_t, t):
        return SimpleNamespace(sample=self.oracle(x_t, t).sample + self.c)


def test_noise_loss_on_normal_images_only_closed_form():
    x0 = torch.rand(4, 3, 32, 32) * 1.6 - 0.8
    masks = torch.zeros(4, 1, 32, 32)
    masks[2:, :, 5:9, 5:9] = 1  # images 2 and 3 carry an anomaly
    c = [0.1, 0.2, 0.3, 0.4]  # per-image ε error: per-image loss c_i²
    want = {"all": (0.01 + 0.04 + 0.09 + 0.16) / 4, "auto": 0.075, "normal": (0.01 + 0.04) / 2}
    for mode, expected in want.items():
        model = DiffusionAD(replace(TINY, noise_loss=mode))
        model.denoiser = PerImage(x0, model.schedule, c)
        got = float(model(x0, masks, torch.Generator().manual_seed(1))[1]["noise"])
        assert math.isclose(got, expected, rel_tol=1e-4), (mode, got)
    model = DiffusionAD(replace(TINY, noise_loss="normal"))
    model.denoiser = PerImage(x0, model.schedule, c)
    everything = torch.ones_like(masks)  # an all-anomalous batch: 0, not NaN
    assert float(model(x0, everything, torch.Generator())[1]["noise"]) == 0
    with pytest.raises(ValueError, match="noise_loss must be"):
        replace(TINY, noise_loss="anomalous")


def test_unit_range_feeds_images_in_zero_one():
    """With ``unit_range`` the denoiser sees Eq. 2 applied to (x + 1) / 2: an oracle that
    knows those images predicts the noise exactly (loss 0), and the segmenter gets them with
    their repair; the repair in the prediction is back in [-1, 1]."""
    from n2n_core.methods.diffusionad import METHOD

    x0 = torch.rand(2, 3, 32, 32) * 1.6 - 0.8
    masks = torch.zeros(2, 1, 32, 32)
    for unit in (True, False):
        model = DiffusionAD(replace(TINY, unit_range=unit))
        model.denoiser = Oracle((x0 + 1) / 2, model.schedule)  # knows the [0, 1] images
        noise = float(model(x0, masks, torch.Generator().manual_seed(0))[1]["noise"])
        assert (noise < 1e-8) == unit, (unit, noise)
    seen = []
    model.segmenter.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    model.cfg = replace(model.cfg, unit_range=True)
    pred = METHOD.predict(model, x0, 0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(seen[0][:, :3], (x0 + 1) / 2)  # the image, in [0, 1]
    torch.testing.assert_close(seen[0][:, 3:], (x0 + 1) / 2, atol=1e-4, rtol=0)  # exact x̂0
    torch.testing.assert_close(pred.extras["repair"], x0, atol=2e-4, rtol=0)  # back in [-1, 1]


def test_equivalent_step_of_the_unit_range_by_brute_force():
    """t' has the SNR nearest to ¼ of SNR(t) (a [0, 1] image is half a [-1, 1] one), found
    here from ᾱ_t = ∏(1 − β_i) in float64 over every step."""
    import numpy as np

    from n2n_core.schedules import equivalent_step, make_schedule

    s = make_schedule("linear")
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - betas)
    snr = ab / (1 - ab)
    for t in (1, 50, 100, 200, 300, 700):
        brute = 1 + int(np.argmin(np.abs(np.log(snr) - np.log(snr[t - 1] / 4))))
        assert equivalent_step(s, t, 0.5) == brute
        assert equivalent_step(s, t, 1.0) == t
    assert (equivalent_step(s, 100, 0.5), equivalent_step(s, 200, 0.5)) == (190, 331)
    with pytest.raises(ValueError, match=r"1\.\.1000"):
        equivalent_step(s, 0, 0.5)


def test_the_draem_decoder_has_the_official_segmenters_layers():
    """The official code's segmentation sub-network (models/Seg_subnetwork.py, DRAEM's
    discriminative network), read layer by layer at base b: upsampling convolutions
    8b→8b, 8b→4b, 4b→2b, 2b→b, b→b, each fused with its skip (8b, 8b, 4b, 2b, b wide) by
    convolutions from 16b, 12b, 6b, 3b, 2b channels; 28.4 M parameters at b = 64."""
    from n2n_core.methods.diffusionad import METHOD
    from n2n_core.models.segmenter import SegmentationNet, SegmenterConfig

    b = 64
    net = SegmentationNet(SegmenterConfig(decoder="draem"))
    ups = [tuple(u[1].weight.shape[:2]) for u in net.up]
    fuse = [tuple(d[0].weight.shape[:2]) for d in net.decoder]
    assert ups == [(8 * b, 8 * b), (4 * b, 8 * b), (2 * b, 4 * b), (b, 2 * b), (b, b)]
    assert fuse == [(8 * b, 16 * b), (4 * b, 12 * b), (2 * b, 6 * b), (b, 3 * b), (b, 2 * b)]
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 28.4
    assert SegmentationNet(SegmenterConfig()).decoder[1][0].weight.shape[:2] == (8 * b, 16 * b)
    assert METHOD.profiles["paper"].segmenter.decoder == "draem"
    x = torch.randn(1, 6, 32, 32)
    assert net.eval()(x).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match=r"segmenter\.decoder must be one of"):
        SegmenterConfig(decoder="unet")


# ------------------------------------------------------------------ the official profile
OFFICIAL_NETS = json.loads(
    (Path(__file__).parent / "fixtures" / "diffusionad_official" / "networks.json").read_text()
)


def _shapes(state: dict) -> list:
    """Sorted parameter shapes, diffusers' attention written in the official layout: q, k, v
    as one 1-d convolution (3C, C, 1) with one bias (3C,), the output projection (C, C, 1)."""
    out = []
    for k, v in state.items():
        shape = tuple(v.shape)
        if "num_batches_tracked" in k or k.endswith((".to_k.weight", ".to_k.bias")):
            continue
        if k.endswith((".to_v.weight", ".to_v.bias")):
            continue
        if k.endswith(".to_q.weight"):
            shape = (3 * shape[0], shape[1], 1)
        elif k.endswith(".to_q.bias"):
            shape = (3 * shape[0],)
        elif k.endswith(".to_out.0.weight"):
            shape = (*shape, 1)
        out.append(shape)
    return sorted(out)


def test_official_profile_networks_have_the_official_layers():
    """Against the official code's networks, recorded (tests/fixtures/diffusionad_official):
    the same parameter shapes, layer for layer up to naming (131,654,403 in the denoiser:
    additive time embedding, residual resampling at every level), the same zeros at
    construction (its zero_module layers), and DRAEM's segmenter."""
    from n2n_core.methods.diffusionad import METHOD

    cfg = METHOD.profiles["official"]
    torch.manual_seed(0)
    net = make_denoiser(replace(cfg.denoiser, image_size=cfg.image_size))
    official = [tuple(v) for v in OFFICIAL_NETS["unet"].values()]
    assert _shapes(net.state_dict()) == sorted(official)
    assert count_parameters(net) == 131_654_403
    zeros = _shapes({n: p for n, p in net.named_parameters() if not p.any()})
    zero_keys = OFFICIAL_NETS["unet_zero_at_init"]
    assert zeros == sorted(tuple(OFFICIAL_NETS["unet"][k]) for k in zero_keys)
    seg = SegmentationNet(replace(cfg.segmenter, in_channels=6))
    official_seg = sorted(tuple(v) for v in OFFICIAL_NETS["segmenter"].values())
    assert _shapes(seg.state_dict()) == official_seg
    # the paper profile: the text's 4 heads, scale-shift conditioning, no zeros
    paper = make_denoiser(replace(METHOD.profiles["paper"].denoiser, image_size=256))
    assert count_parameters(paper) > count_parameters(net)  # scale and shift: 2 × the emb
    assert all(p.any() for n, p in paper.named_parameters() if n.endswith("conv_out.weight"))


def test_num_heads_sets_every_attention_and_computes_multi_head_attention():
    """``num_heads=4`` at a 256-channel level (diffusers would give 2 heads of 128): the
    attention equals softmax(QKᵀ/√64)V computed by hand over 4 heads of 64 channels."""
    from diffusers.models.attention_processor import Attention

    cfg = DenoiserConfig(
        image_size=16, channels=(256, 256), attention_resolutions=(8,), num_heads=4,
        attention_head_dim=128, norm_num_groups=32,
    )  # fmt: skip
    net = make_denoiser(cfg)
    attns = [m for m in net.modules() if isinstance(m, Attention)]
    assert attns and all(a.heads == 4 for a in attns)
    a = attns[0].eval()
    x = torch.randn(1, 256, 8, 8)
    with torch.no_grad():
        got = a(x)
        h = a.group_norm(x).flatten(2).transpose(1, 2)  # (1, 64 tokens, 256)
        q, k, v = (f(h).reshape(1, 64, 4, 64).transpose(1, 2) for f in (a.to_q, a.to_k, a.to_v))
        w = torch.softmax(q @ k.transpose(-1, -2) / 8.0, dim=-1)
        out = a.to_out[0]((w @ v).transpose(1, 2).reshape(1, 64, 256))
        want = out.transpose(1, 2).reshape(1, 256, 8, 8) / a.rescale_output_factor + x
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_official_segmenter_lr_is_torchs_cosine_annealing_per_iteration():
    """The official code: Adam(seg, 1e-5) with CosineAnnealingLR(T_max=10) stepped after
    every iteration, beside Adam(unet, 1e-4). n2n's two parameter groups follow torch's own
    scheduler step for step (down to 0 at 10, back up at 20, …)."""
    from n2n_core.methods.diffusionad import METHOD, DiffusionAD
    from n2n_core.train import _optimizer

    cfg = replace(TINY_DIFFUSIONAD, segmenter_lr=1e-5, segmenter_cosine=10)
    model = DiffusionAD(cfg)
    tcfg = replace(METHOD.train_profiles["official"], steps=45, epochs=None)
    groups = METHOD.param_groups(model, cfg, tcfg)
    assert [g.lr for g in groups] == [1e-4, 1e-5]
    n_seg = sum(p.numel() for p in model.segmenter.parameters())
    assert sum(p.numel() for p in groups[1].params) == n_seg
    assert sum(p.numel() for g in groups for p in g.params) == count_parameters(model)
    opt, sched = _optimizer(model, tcfg, 45, 1, groups)
    ref_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-5)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=10, eta_min=0)
    for _ in range(45):
        assert opt.param_groups[0]["lr"] == 1e-4
        assert opt.param_groups[1]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], abs=1e-15)
        opt.step(), sched.step(), ref_opt.step(), ref.step()
    assert METHOD.param_groups(DiffusionAD(TINY_DIFFUSIONAD), TINY_DIFFUSIONAD, tcfg) is None


def test_anomaly_probability_draws_each_image():
    """anomaly_prob = 0.5 (the official batches of 16): the number of anomalous images per
    batch is Binomial(16, 0.5); the default stays the paper's half of the batch."""
    from n2n_core.methods.diffusionad import DiffusionADFeed

    feed = DiffusionADFeed.__new__(DiffusionADFeed)
    feed.images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    feed.fg, feed.anomalies = None, True
    feed.synthesizer = AnomalySynthesizer(SynthesisConfig(), TextureSource(None))
    counts = []
    for p, trials in ((None, 3), (0.5, 60)):
        feed.anomaly_prob = p
        g = torch.Generator().manual_seed(1)
        counts.append([int(feed(torch.arange(16), g, "cpu")[1].flatten(1).amax(1).gt(0).sum())
                       for _ in range(trials)])  # fmt: skip
    assert set(counts[0]) <= {8} and max(counts[0]) == 8
    half = counts[1]
    mean = sum(half) / len(half)
    assert abs(mean - 8) < 4 * (4 / len(half)) ** 0.5 and len(set(half)) > 3


def test_official_profile_is_the_codes_arguments():
    from n2n_core.methods.diffusionad import METHOD

    cfg, t = METHOD.profiles["official"], METHOD.train_profiles["official"]
    assert (cfg.norm_guided, cfg.unit_range, cfg.noise_loss) == (True, True, "normal")
    assert (cfg.guide_split, cfg.guide_t, cfg.condition_w) == (300, (200, 400), 1.0)
    assert (cfg.anomaly_prob, cfg.segmenter_lr, cfg.segmenter_cosine) == (0.5, 1e-5, 10)
    assert (t.batch_size, t.lr, t.epochs, t.optimizer) == (16, 1e-4, 3000, "adam")
    assert not cfg.detach_x0_hat and cfg.segmenter.decoder == "draem"
    paper = METHOD.profiles["paper"]
    assert paper.denoiser.num_heads == 4 and not paper.norm_guided and paper.anomaly_prob is None


def test_official_ground_truth_keeps_only_fully_covered_pixels(tmp_path):
    """The official loader: cv2.resize (bilinear, half-pixel centres, no antialiasing) of the
    0/255 mask, / 255, cast to int. Brute force over every output pixel: a defect only where
    all four interpolated source pixels are (a one-pixel-wide scratch vanishes)."""
    import numpy as np
    from PIL import Image

    from n2n_core.data.samples import Sample
    from n2n_core.methods.diffusionad import METHOD

    rng = np.random.default_rng(0)
    mask = np.zeros((75, 90), bool)
    mask[10:40, 20:70] = True
    mask[50, 5:85] = True  # a scratch one source pixel wide
    mask |= rng.random(mask.shape) < 0.02
    Image.fromarray(np.zeros((75, 90, 3), np.uint8)).save(tmp_path / "x.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    s = Sample(tmp_path / "x.png", tmp_path / "m.png", 1, "d", "c", "test")
    cfg = replace(METHOD.profiles["official"], image_size=32)
    got = METHOD.dataset(cfg, [s])[0]["mask"][0].numpy() > 0.5
    want = np.zeros((32, 32), bool)
    for i in range(32):
        for j in range(32):
            y = min(max((i + 0.5) * 75 / 32 - 0.5, 0), 74)
            x = min(max((j + 0.5) * 90 / 32 - 0.5, 0), 89)
            y0, x0 = int(y), int(x)
            y1, x1 = min(y0 + 1, 74), min(x0 + 1, 89)
            wy, wx = y - y0, x - x0
            v = (
                mask[y0, x0] * (1 - wy) * (1 - wx) + mask[y0, x1] * (1 - wy) * wx
                + mask[y1, x0] * wy * (1 - wx) + mask[y1, x1] * wy * wx
            )  # fmt: skip
            want[i, j] = v >= 1 - 1e-9
    assert (got == want).all() and want.sum() > 0
    nearest = METHOD.dataset(replace(cfg, ground_truth="nearest"), [s])[0]["mask"][0] > 0.5
    assert want.sum() < int(nearest.sum())  # thinner than nearest neighbour
    with pytest.raises(ValueError, match="ground_truth must be one of"):
        replace(cfg, ground_truth="area")
