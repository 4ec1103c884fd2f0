"""The GPU user's first hour: the precision chosen by the card, `plan` (FLOPs and activation
bytes against closed forms, the per-card arithmetic against a brute force), `train --dry-run`
at the paper networks' full size on the CPU (activation bytes within 10 % of `plan`'s), and a
run copied mid-training, as a Colab disconnect leaves it, resumed with --resume."""

import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from typing import ClassVar

import pytest
import torch
from torch import nn

from n2n_core import cli, methods
from n2n_core.config import DataSpec, TrainConfig
from n2n_core.data import fixtures
from n2n_core.device import precision_for, precision_for_capability
from n2n_core.dry_run import SavedBytes, dry_run
from n2n_core.methods import Feed, Method, Prediction
from n2n_core.models.vae import VAEConfig, make_autoencoder
from n2n_core.plan import CARDS, RESERVED_GIB, Card, Measured, card_plan, measure


# ------------------------------------------------------------------ precision by card
@pytest.mark.parametrize(
    ("card", "capability", "expected"),
    [("T4", (7, 5), "fp16"), ("V100", (7, 0), "fp16"), ("P100", (6, 0), "fp16"),
     ("A100", (8, 0), "bf16"), ("L4", (8, 9), "bf16"), ("H100", (9, 0), "bf16")],
)  # fmt: skip
def test_mixed_precision_follows_the_cards_bf16_support(card, capability, expected):
    assert precision_for_capability(capability) == expected
    if card in CARDS or f"{card}-40" in CARDS:
        assert CARDS.get(card, CARDS.get(f"{card}-40")).precision == expected


def test_auto_precision_is_full_precision_off_cuda_and_recorded_in_run_json(tmp_path):
    assert precision_for("cpu") == "no"
    assert precision_for(torch.device("meta")) == "no"
    root = fixtures.write_mvtec(tmp_path / "mvtec", categories=("bottle",), size=16)
    run = tmp_path / "run"
    args = ["train", "--method", "diffusionad", "--data", "mvtec", "--root", str(root)]
    args += ["--category", "bottle", "--out", str(run), "--steps", "1", "--batch-size", "2"]
    args += ["--mixed-precision", "auto", "--image-size", "32", *_TINY_DIFFUSIONAD]
    assert cli.main(args) == 0
    rec = json.loads((run / "run.json").read_text())
    assert rec["train"]["mixed_precision"] == "no"  # the CPU's choice, not "auto"
    assert rec["environment"]["tf32"] is False  # no CUDA here
    for name in ("diffusionad", "decodiff"):
        for profile in ("paper", "official"):
            assert methods.resolve(name, profile)[1].mixed_precision == "auto"


_TINY_DIFFUSIONAD = [
    a
    for s in ("model.denoiser.channels=(8, 16)", "model.denoiser.attention_resolutions=()",
              "model.denoiser.norm_num_groups=4", "model.segmenter.base=4",
              "model.segmenter.multipliers=(1, 2, 4)", "model.top_k=4")
    for a in ("--set", s)
]  # fmt: skip


def test_a_run_copied_mid_training_resumes_in_its_own_precision(tmp_path):
    """What a Colab disconnect leaves on Drive: the run folder as it was at its last
    checkpoint, copied elsewhere. `--resume` there finishes it with the losses of an
    uninterrupted run, in the precision it started with (bf16 here), though the command now
    says auto (the next session may get another card). Subprocesses: accelerate fixes one
    precision per process."""
    root = fixtures.write_mvtec(tmp_path / "mvtec", categories=("bottle",), size=16)
    base = ["train", "--method", "diffusionad", "--data", "mvtec", "--root", str(root)]
    base += ["--category", "bottle", "--steps", "4", "--batch-size", "2", "--image-size", "32"]
    base += [*_TINY_DIFFUSIONAD, "--set", "train.checkpoint_every=2", "--set", "train.log_every=1"]

    def n2n(*args, stop_after=None):
        code = "import sys; from n2n_core import cli; sys.exit(cli.main(sys.argv[1:]))"
        if stop_after:  # ends the run after that step with a checkpoint, as a disconnect
            code = (
                "import sys, functools; from n2n_core import cli, train as t; "
                f"t.train = functools.partial(t.train, stop_after={stop_after}); "
                "sys.exit(cli.main(sys.argv[1:]))"
            )
        out = subprocess.run([sys.executable, "-c", code, *base, *args], capture_output=True)
        assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()

    whole, cut = tmp_path / "whole", tmp_path / "drive" / "run"
    n2n("--mixed-precision", "bf16", "--out", str(whole))
    n2n("--mixed-precision", "bf16", "--out", str(cut), stop_after=2)
    assert (cut / "checkpoints" / "last").is_dir() and not (cut / "model.safetensors").exists()
    moved = tmp_path / "new_session" / "run"
    shutil.copytree(cut, moved)
    shutil.rmtree(cut)
    n2n("--mixed-precision", "auto", "--out", str(moved), "--resume")
    assert json.loads((moved / "run.json").read_text())["train"]["mixed_precision"] == "bf16"
    assert (moved / "train_log.jsonl").read_text() == (whole / "train_log.jsonl").read_text()


# ------------------------------------------------------------------ plan against closed forms
@dataclass(frozen=True)
class TwoConvConfig:
    image_size: int = 16


class TwoConv(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x, g):
        y = self.c2(self.c1(x))
        loss = (y**2).mean()
        return loss, {}


class Noise(Feed):
    def __init__(self, size):
        self.size = size

    def __len__(self):
        return 4

    def __call__(self, idx, g, device):
        return (torch.randn(len(idx), 3, self.size, self.size, generator=g).to(device),)


class TwoConvMethod(Method):
    name = "twoconv"
    description = "two convolutions (closed-form FLOPs and saved bytes)"
    config = TwoConvConfig
    profiles: ClassVar = {"smoke": TwoConvConfig(), "paper": TwoConvConfig()}
    train_profiles: ClassVar = dict.fromkeys(("smoke", "paper"), TrainConfig(steps=2))

    def build(self, cfg):
        return TwoConv(cfg)

    def feed(self, cfg, tcfg, data, run_dir, accelerator):
        return Noise(cfg.image_size)

    def predict(self, model, images, class_index, g):
        maps = model.c2(model.c1(images))
        return Prediction(maps, maps.flatten(1).amax(1))


def test_plan_counts_flops_and_saved_bytes_of_a_known_network():
    """Per image at H × W: conv1 (3 → 8, 3 × 3) F1 = 2·8·3·9·HW, conv2 (8 → 1) F2 = 2·8·9·HW.
    Training: both forwards, both weight gradients, conv2's input gradient (the images need
    none): 2·F1 + 3·F2. Test: F1 + F2. Saved for backward, float32: the images (conv1), conv1's
    output (conv2), conv2's output (the square): 4 · HW · (3 + 8 + 1) bytes per image."""
    h = w = 16
    f1, f2 = 2 * 8 * 3 * 9 * h * w, 2 * 1 * 8 * 9 * h * w
    m = measure(TwoConvMethod(), TwoConvConfig(h), TrainConfig(steps=2), ("a",))
    assert m.train_flops == 2 * f1 + 3 * f2
    assert m.test_flops == f1 + f2
    assert m.act_fp32 == (4 * h * w * 12, 2 * 4 * h * w * 12)
    assert m.trained == (8 * 3 * 9 + 8) + (1 * 8 * 9 + 1) and m.frozen == 0


def test_card_plan_agrees_with_a_brute_force_over_batches():
    gib = 2**30
    m = Measured(trained=100_000_000, frozen=10_000_000, train_flops=1e12, test_flops=1e12,
                 act_fp32=(3 * gib, 5 * gib), act_mixed=(1.5 * gib, 2.5 * gib))  # fmt: skip
    card = Card("X", 24.0, 100.0, (8, 0))
    tcfg = TrainConfig(steps=10, batch_size=32)
    out = card_plan(m, card, tcfg, flops=3.6e17)

    def need(b):  # bytes at micro-batch b, written out
        return 16 * 100e6 + 4 * 10e6 + (0.5 + 1.0 * b) * gib + RESERVED_GIB * gib

    largest = max(b for b in range(1, 1000) if need(b) <= 24 * gib)
    assert out["largest_batch"] == largest and not out["fits"]
    k = next(k for k in range(1, 100) if math.ceil(32 / k) <= largest)
    assert (out["micro_batch"], out["grad_accum"]) == (math.ceil(32 / k), k)
    assert out["hours"] == pytest.approx(3.6e17 / (0.3 * 100e12) / 3600)


def test_saved_bytes_count_each_storage_once_and_stop_at_the_backward():
    lin = nn.Linear(10, 10)
    x = torch.randn(4, 10)
    with SavedBytes(lin) as saved:
        y = lin(x)
        z = (y * y).sum()  # y saved twice (both operands): counted once
        z.backward()
        (lin(x) * 2).sum()  # after the backward: not counted
    assert saved.total == 4 * 10 * 4 + 4 * 10 * 4  # x (the matmul) and y (the product)


# ------------------------------------------------------------------ dry runs at full size
def _textures(tmp_path):
    return fixtures.write_mvtec(tmp_path / "tex", categories=("t",), n_test=0, size=64) / "t"


@pytest.mark.parametrize("profile", ["paper", "official"])
def test_diffusionad_dry_run_at_full_size_matches_the_plan(tmp_path, profile, capsys):
    """The paper network (256², batch 1) trains two steps on the CPU; the bytes autograd saves
    in the real loop agree with `plan`'s measurement within 10 %; nothing is left behind."""
    root = fixtures.write_mvtec(tmp_path / "mvtec", categories=("bottle",), n_test=1, size=64)
    data = DataSpec("mvtec", str(root), "bottle")
    cfg, tcfg = methods.resolve("diffusionad", profile, "mvtec", ["bottle"])
    cfg = replace(cfg, texture_dir=str(_textures(tmp_path) / "train" / "good"))
    tcfg = replace(tcfg, batch_size=1)
    before = set(tmp_path.rglob("*"))
    result = dry_run(cfg, tcfg, data, steps=2)
    assert set(tmp_path.rglob("*")) == before
    (loop,) = result["loops"]
    assert len(loop["seconds"]) == 2 and loop["total_steps"] == tcfg.total_steps(4)
    planned = measure(methods.get("diffusionad"), cfg, tcfg, ("bottle",)).activations(1, False)
    assert loop["activation_bytes"] == pytest.approx(planned, rel=0.1)
    assert loop["activation_bytes"] > 2**30  # 256² at full width: GiBs, not a toy


@pytest.mark.parametrize("profile", ["paper", "official"])
def test_decodiff_dry_run_at_full_size_matches_the_plan(tmp_path, profile):
    """UNet_L (395 M) on 32 × 32 latents at batch 2, a tiny local AutoencoderKL (f = 8) in
    place of the SD VAE."""
    root = fixtures.write_mvtec(tmp_path / "mvtec", categories=("bottle", "carpet"), size=64)
    torch.manual_seed(0)
    vae = tmp_path / "vae"
    make_autoencoder(VAEConfig(channels=(8, 8, 8, 8), norm_num_groups=4)).save_pretrained(vae)
    data = DataSpec("mvtec", str(root), "all")
    cfg, tcfg = methods.resolve(
        "decodiff", profile, "mvtec", ["bottle", "carpet"], {"model.vae.pretrained": str(vae)}
    )
    assert cfg.latent_size == 32 and cfg.official_unet.model_channels == 256
    tcfg = replace(tcfg, batch_size=2)
    result = dry_run(cfg, tcfg, data, steps=2)
    (loop,) = result["loops"]
    planned = measure(methods.get("decodiff"), cfg, tcfg, ("bottle", "carpet"))
    assert planned.trained == pytest.approx(395.0e6, rel=0.001)
    assert loop["activation_bytes"] == pytest.approx(planned.activations(2, False), rel=0.1)


def test_dry_run_from_the_command_line_prints_the_rate_and_keeps_only_when_asked(tmp_path, capsys):
    root = fixtures.write_mvtec(tmp_path / "mvtec", categories=("bottle",), size=16)
    args = ["train", "--method", "diffusionad", "--data", "mvtec", "--root", str(root)]
    args += ["--category", "bottle", "--image-size", "32", *_TINY_DIFFUSIONAD]
    before = set(tmp_path.rglob("*"))
    assert cli.main([*args, "--dry-run", "3"]) == 0
    out = capsys.readouterr().out
    assert "diffusionad bottle: 3 steps" in out and "s/step" in out and "peak resident" in out
    assert set(tmp_path.rglob("*")) == before
    assert cli.main([*args, "--dry-run", "--keep", "--out", str(tmp_path / "kept")]) == 0
    assert json.loads((tmp_path / "kept" / "run.json").read_text())["train"]["steps"] == 900
    assert (tmp_path / "kept" / "checkpoints" / "last").is_dir()
    assert cli.main([*args, "--dry-run", "--keep"]) == 2  # --keep needs --out


def test_train_plan_prints_the_configurations_costs_and_trains_nothing(tmp_path, capsys):
    root = fixtures.write_mvtec(tmp_path / "mvtec", categories=("bottle",), size=16)
    args = ["train", "--method", "diffusionad", "--data", "mvtec", "--root", str(root)]
    args += ["--category", "bottle", "--image-size", "32", *_TINY_DIFFUSIONAD, "--plan"]
    before = set(tmp_path.rglob("*"))
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "diffusionad on mvtec bottle (smoke profile): 1 model(s)" in out
    assert "900 steps of batch 6 × 1" in out and "× 6 images" in out  # fixture: 2 × 3 test
    assert out.count("| yes |") == len(CARDS) and set(tmp_path.rglob("*")) == before
    assert cli.main(["train", "--method", "patchknn", "--category", "cap", "--plan"]) == 2
    assert "patchknn is fitted" in capsys.readouterr().out
