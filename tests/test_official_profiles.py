"""``--profile official`` trains from the command line on the MVTec AD and VisA layouts (a few
steps on CPU, the paper-size networks swapped for small ones with ``--set``), and the run
folder records the official regime."""

import json

import pytest
import torch

from n2n_core import cli
from n2n_core.data import fixtures
from n2n_core.models.vae import VAEConfig, make_autoencoder


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    mvtec = fixtures.write_mvtec(root / "mvtec", categories=("bottle", "carpet"), size=40)
    visa = fixtures.write_visa_raw(root / "visa", categories=("candle", "pcb1"), size=40)
    torch.manual_seed(0)
    vae = root / "vae"  # a tiny local AutoencoderKL (f = 8) stands in for the SD VAE
    make_autoencoder(VAEConfig(channels=(8, 8, 8, 8), norm_num_groups=4)).save_pretrained(vae)
    return {"mvtec": mvtec, "visa": visa, "vae": vae}


SMALL_DIFFUSIONAD = [
    "model.image_size=32", "model.denoiser.channels=(32, 64)",
    "model.denoiser.attention_resolutions=(16,)", "model.denoiser.norm_num_groups=8",
    "model.denoiser.layers_per_block=1", "model.segmenter.base=8",
    "model.segmenter.multipliers=(1, 2, 4)", "model.top_k=4",
]  # fmt: skip
SMALL_DECODIFF = [
    "model.image_size=32", "model.translate=2", "model.load_size=36",
    "model.official_unet.model_channels=32", "model.official_unet.num_res_blocks=1",
    "model.official_unet.num_heads=1", "model.official_unet.context_dim=32",
    "model.patch_sizes=(1, 2, 4)", "model.patch_probs=(0.5, 0.3, 0.2)", "model.sigma_p=1.0",
]  # fmt: skip


def _sets(items):
    return [a for item in items for a in ("--set", item)]


@pytest.mark.parametrize(("data", "category"), [("mvtec", "bottle"), ("visa", "candle")])
def test_diffusionad_official_profile_trains_from_the_command_line(
    tmp_path, layouts, data, category
):
    run = tmp_path / "run"
    textures = layouts["mvtec"] / "carpet" / "train" / "good"  # any folder of images
    args = ["train", "--method", "diffusionad", "--profile", "official", "--data", data]
    args += ["--root", str(layouts[data]), "--category", category, "--out", str(run)]
    args += ["--steps", "2", "--batch-size", "4", "--texture-dir", str(textures)]
    assert cli.main(args + _sets(SMALL_DIFFUSIONAD)) == 0
    cfg = json.loads((run / "run.json").read_text())
    model = cfg["model"]
    assert (model["norm_guided"], model["unit_range"], model["anomaly_prob"]) == (True, True, 0.5)
    assert (model["segmenter_lr"], model["segmenter_cosine"]) == (1e-05, 10)
    assert model["denoiser"]["time_conditioning"] == "additive" and model["denoiser"]["zero_init"]
    assert cli.main(["evaluate", str(run)]) == 0
    assert json.loads((run / "eval_info.json").read_text())["pixel_aupro_official_grid"][
        "code"
    ] == ("diffusionad")


@pytest.mark.parametrize("data", ["mvtec", "visa"])
def test_decodiff_official_profile_trains_from_the_command_line(tmp_path, layouts, data):
    run = tmp_path / "run"
    args = ["train", "--method", "decodiff", "--profile", "official", "--data", data]
    args += ["--root", str(layouts[data]), "--category", "all", "--out", str(run)]
    args += ["--steps", "2", "--batch-size", "4", "--vae", str(layouts["vae"])]
    assert cli.main(args + _sets(SMALL_DECODIFF)) == 0
    cfg = json.loads((run / "run.json").read_text())
    model, train = cfg["model"], cfg["train"]
    assert (model["translate_draw"], model["shuffle"], model["spacing"]) == (
        "constant", "official", "official"
    )  # fmt: skip
    assert model["rotate_180"] == (data == "visa") and train["grad_accum"] == 2
    assert (train["optimizer"], train["weight_decay"], train["cosine_span"]) == ("adamw", 1e-4, 1.5)
    # --steps replaces the per-epoch schedule with a per-step one (no epochs to count)
    assert (train["steps"], train["epochs"], train["lr_per"]) == (2, None, "step")
    assert cli.main(["evaluate", str(run)]) == 0
    grid = json.loads((run / "eval_info.json").read_text())["pixel_aupro_official_grid"]
    assert grid["code"] == "decodiff" and grid["thresholds"] == 200


def test_selection_on_the_test_set_follows_the_official_rule(tmp_path):
    """train.py of the official code: keep the model when image + pixel AUROC is at least the
    best sum so far and image AUROC is at least the best too."""
    from types import SimpleNamespace

    from safetensors.torch import load_file

    from n2n_core.selection import SelectionOnTest

    scores = iter([(0.6, 0.7), (0.5, 0.9), (0.7, 0.6), (0.7, 0.65), (0.9, 0.1)])
    sel = SelectionOnTest(lambda m: next(scores), every=3, path=tmp_path / "best" / "w.st")
    acc = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)
    model, state, kept = torch.nn.Linear(2, 1), {}, []
    for step in range(1, 16):
        with torch.no_grad():
            model.weight.fill_(step)
        sel.after(step, model, state, acc)
        kept.append(state.get("best", {}).get("step"))
    # scored at 3, 6, 9, 12, 15: kept at 3 (first), not 6 (image fell), 9 (1.3 ≥ 1.3),
    # 12 (1.35), not 15 (the sum fell)
    assert kept[2::3] == [3, 3, 9, 12, 12]
    assert float(load_file(tmp_path / "best" / "w.st")["weight"][0, 0]) == 12
    assert state["best"] == {"step": 12, "image_auroc": 0.7, "pixel_auroc": 0.65}


def test_a_run_selected_on_the_test_set_says_so(tmp_path, layouts):
    """With train.select_on_test_every the run keeps the selected weights, train_info.json
    labels them optimistic, and a report says so."""
    from n2n_core.reproduce import _selection_note

    run = tmp_path / "run"
    textures = layouts["mvtec"] / "carpet" / "train" / "good"
    args = ["train", "--method", "diffusionad", "--profile", "official", "--data", "mvtec"]
    args += ["--root", str(layouts["mvtec"]), "--category", "bottle", "--out", str(run)]
    args += ["--steps", "2", "--batch-size", "4", "--texture-dir", str(textures)]
    sets = [*SMALL_DIFFUSIONAD, "train.select_on_test_every=1"]  # 1 epoch: 1 update here
    assert cli.main(args + _sets(sets)) == 0
    info = json.loads((run / "train_info.json").read_text())
    chosen = info["selected_checkpoint"]
    assert chosen["on"] == "test set" and chosen["optimistic"] and chosen["step"] in (1, 2)
    from safetensors.torch import load_file

    best = load_file(run / "checkpoints" / "best" / "model.safetensors")
    final = load_file(run / "model.safetensors")
    assert all(torch.equal(best[k], final[k]) for k in final)
    assert "Optimistic" in "\n".join(_selection_note(tmp_path))
