"""The method interface: registry, one config resolver, uniform predictions, plug-in methods."""

import ast
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from n2n_core import cli, methods
from n2n_core.config import TrainConfig
from n2n_core.course.baseline import MeanImage, MeanImageConfig, MeanImageMethod
from n2n_core.data import fixtures
from n2n_core.evaluate import evaluate_run
from n2n_core.methods import resolve
from n2n_core.methods.patchknn import PatchKNN, PatchKNNConfig, patch_distances
from n2n_core.metrics import METRIC_KEYS
from n2n_core.train import DataSpec, ensure_trained, train

ROOT = Path(__file__).resolve().parent.parent
GENERIC = ["train.py", "evaluate.py", "cli.py", "reproduce.py"]


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    return fixtures.write_mvtec(
        tmp_path_factory.mktemp("data") / "mvtec", n_train=4, n_test=2, size=32
    )


# ------------------------------------------------------------------ a plug-in method
def _l1_map(mean, images):
    return (images - mean).abs().mean(1, keepdim=True)


def _max_score(maps):
    return maps.flatten(1).amax(1)


QUICK = {"model.image_size": 32, "train.steps": 3, "train.batch_size": 2}


class _Images:
    """A feed of uint8 images (what patchknn's fit takes)."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __call__(self, idx, g, device):
        return (self.images[idx].float() / 127.5 - 1,)


def test_a_registered_method_trains_and_evaluates_through_the_generic_modules(tmp_path, mvtec):
    methods.register(MeanImageMethod(_l1_map, _max_score))  # notebook 12's baseline
    cfg, tcfg = resolve("meanimage", "smoke", "mvtec", ["bottle"], QUICK)
    run = tmp_path / "run"
    train(run, cfg, tcfg, DataSpec("mvtec", str(mvtec), "bottle"))
    metrics = evaluate_run(run)
    assert set(metrics) == set(METRIC_KEYS) and all(0 <= v <= 1 for v in metrics.values())
    assert json.loads((run / "eval_info.json").read_text())["method"] == "meanimage"
    # the run records what decides bit-reproducibility: versions, CPU kernel path, threads
    env = json.loads((run / "train_info.json").read_text())["environment"]
    assert env["versions"]["torch"] == torch.__version__
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["threads"] == torch.get_num_threads()
    # and through the command line, which lists it as a method
    out = tmp_path / "cli"
    base = ["--data", "mvtec", "--root", str(mvtec), "--category", "bottle", "--out", str(out)]
    assert cli.main(["train", "--method", "meanimage", *base, "--steps", "3"]) == 0
    assert cli.main(["evaluate", str(out)]) == 0
    assert set(json.loads((out / "metrics.json").read_text())) == set(METRIC_KEYS)


@dataclass(frozen=True)
class StagedConfig(MeanImageConfig):
    pass


class StagedMean(MeanImageMethod):
    """The baseline with a first stage ("prior": the same model, saved to prior/mu.pt) that
    the main feed requires, as DeCo-Diff's model requires its autoencoder."""

    name = "stagedmean"
    config = StagedConfig
    profiles: ClassVar = {"smoke": StagedConfig(32), "paper": StagedConfig()}

    def stages(self, cfg, tcfg, data, run_dir):
        feed = MeanImageMethod.feed(self, cfg, tcfg, data, run_dir, None)

        def save(model, folder):
            torch.save(model.mean.detach(), folder / "mu.pt")

        stage_cfg = replace(tcfg, steps=4, log_every=1, checkpoint_every=2)
        return [methods.Stage("prior", lambda: MeanImage(cfg), feed, stage_cfg, save, 5)]

    def feed(self, cfg, tcfg, data, run_dir, accelerator):
        assert (run_dir / "prior" / "mu.pt").is_file(), "the stage runs before the model"
        return MeanImageMethod.feed(self, cfg, tcfg, data, run_dir, accelerator)


def test_a_methods_stage_trains_first_and_the_run_files_read_back(tmp_path, mvtec):
    from n2n_core import run_files

    methods.register(StagedMean(_l1_map, _max_score))
    cfg, tcfg = resolve("stagedmean", "smoke", "mvtec", ["bottle"], {"train.steps": 3})
    run, data = tmp_path / "run", DataSpec("mvtec", str(mvtec), "bottle")
    train(run, cfg, tcfg, data)
    assert [e["step"] for e in run_files.train_log(run, "prior")] == [1, 2, 3, 4]
    assert [e["step"] for e in run_files.train_log(run)] == [3]  # log_every 10, the last step
    info, prior = run_files.train_info(run), run_files.train_info(run, "prior")
    assert run_files.training_seconds(run) == info["seconds"] + prior["seconds"]
    assert not (run / "checkpoints" / "prior").exists() and not (run / "prior.partial").exists()
    evaluate_run(run)
    per_cat = run_files.metrics_per_category(run)
    assert per_cat == {
        "bottle": pytest.approx(json.loads((run / "metrics.json").read_text()), abs=1e-6)
    }
    with pytest.raises(FileNotFoundError, match="evaluate the run first"):
        run_files.metrics_per_category(tmp_path)


def test_unknown_method_is_an_error_listing_the_registered_ones():
    with pytest.raises(ValueError, match=r"registered: .*decodiff.*diffusionad.*patchknn"):
        methods.get("nope")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


@pytest.mark.parametrize("name", GENERIC)
def test_generic_modules_reach_methods_only_through_the_registry(name):
    path = ROOT / "n2n_core" / name
    forbidden = ("n2n_core.models", "n2n_core.synthesis", "n2n_core.deviation")
    forbidden += tuple(f"n2n_core.methods.{m}" for m in methods.BUILTIN)  # the methods' modules
    bad = [m for m in _imports(path) if m.startswith(forbidden)]
    assert not bad, f"{name} imports {bad}"
    branches = [  # `x == "decodiff"`, `x in ("decodiff", ...)`, a method name as a default
        n
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.Compare | ast.keyword)
        and any(isinstance(c, ast.Constant) and c.value in methods.BUILTIN for c in ast.walk(n))
    ]
    assert not branches, f"{name} branches on a method name at line {branches[0].lineno}"


# ------------------------------------------------------------------ one config resolver
def test_derived_sizes_follow_overrides_and_are_not_stored():
    cfg, _ = resolve("diffusionad", "smoke", "synthetic", ["cap"], {"model.image_size": 128})
    assert cfg.denoiser.image_size is None  # the config holds what was set
    assert methods.get("diffusionad").build(cfg).denoiser.config.sample_size == 128
    cfg, _ = resolve("decodiff", "smoke", "synthetic", ["a", "b"], {"model": {"image_size": 128}})
    assert (cfg.latent_size, cfg.unet_config.image_size, cfg.unet_config.num_classes) == (32, 32, 2)
    assert (cfg.unet.image_size, cfg.unet.num_classes) == (None, 0)
    # a pretrained VAE (f = 8) at the smoke size: the latent size follows the VAE's factor
    cfg, _ = resolve("decodiff", "smoke", "mvtec", ["a"], {"model.vae.pretrained": "/some/vae"})
    assert cfg.unet_config.image_size == 64 // 8 and cfg.classes == ()
    assert methods.get("decodiff").build(cfg).net.unet.config.sample_size == 8
    assert (cfg.official_config.latent_size, cfg.official_config.ncls) == (8, 1)
    assert (cfg.official_unet.latent_size, cfg.official_unet.ncls) == (None, None)


@pytest.mark.parametrize(
    ("method", "key"),
    [("diffusionad", "model.denoiser.image_size"), ("decodiff", "model.unet.image_size"),
     ("decodiff", "model.official_unet.latent_size"), ("decodiff", "model.official_unet.ncls")],
)  # fmt: skip
def test_setting_a_derived_size_is_refused_with_its_source(method, key):
    with pytest.raises(ValueError, match=rf"{key} follows from model.image_size"):
        resolve(method, "smoke", "synthetic", ["cap"], {key: 16})


def test_a_run_json_that_stored_the_derived_sizes_reads_as_the_same_settings():
    """Older n2n stored the sizes it derived (denoiser.image_size; the DoD UNets' latent
    size and class count); such a run.json reads back as the settings of today's resolve."""
    from n2n_core.config import from_dict, to_dict

    for method, cats, legacy in [
        ("diffusionad", ["cap"], {"denoiser": {"image_size": 64}}),
        ("decodiff", ["a", "b"], {"unet": {"image_size": 16, "num_classes": 2},
                                  "official_unet": {"latent_size": 16, "ncls": 2}}),
    ]:  # fmt: skip
        cfg, _ = resolve(method, "smoke", "synthetic", cats)
        old = to_dict(cfg)
        for part, values in legacy.items():
            old[part] = {**old[part], **values}
        assert from_dict(type(cfg), old) == cfg


def test_the_values_once_called_n2n_read_back_under_their_names():
    """Older n2n wrote "n2n" for six different choices; today's names read the same."""
    from n2n_core.config import from_dict, to_dict

    cfg, _ = resolve("diffusionad", "smoke", "synthetic", ["cap"])
    assert (cfg.segmenter.decoder, cfg.synthesis.augmenter) == ("wide", "draem")
    old = to_dict(cfg)
    old["segmenter"]["decoder"] = old["synthesis"]["augmenter"] = "n2n"
    assert from_dict(type(cfg), old) == cfg
    cfg, _ = resolve("decodiff", "smoke", "synthetic", ["cap"], {"model.network": "unet2d"})
    renamed = {"network": "unet2d", "shuffle": "next_image", "spacing": "from_start"}
    renamed["boundary"] = "torch"
    assert {k: getattr(cfg, k) for k in renamed} == renamed
    old = {**to_dict(cfg), **dict.fromkeys(renamed, "n2n")}
    assert from_dict(type(cfg), old) == cfg
    with pytest.raises(ValueError, match="spacing must be one of"):
        resolve("decodiff", "smoke", None, [], {"model.spacing": "n2n"})  # only old records


@pytest.mark.parametrize("method", ["diffusionad", "decodiff", "patchknn"])
def test_a_run_json_with_textures_in_train_reads_as_the_same_settings(tmp_path, method):
    """Older n2n kept DiffusionAD's texture folder in the training config, and wrote
    ``steps=0`` beside ``epochs``: such a run.json reads back as today's settings (DiffusionAD's
    texture settings moved to its model entry; at their defaults, dropped for the others)."""
    from n2n_core.run_folder import RunFolder, record

    cfg, tcfg = resolve(method, "paper", "mvtec", ["bottle"])
    data = DataSpec("mvtec", "data/mvtec", "bottle")
    textured = method == "diffusionad"
    if textured:
        cfg = replace(cfg, texture_dir="/data/dtd/images")
    old = record(cfg, tcfg, data)
    old["train"]["texture_dir"] = old["model"].pop("texture_dir", None)
    old["train"]["require_textures"] = old["model"].pop("require_textures", False)
    assert old["train"]["require_textures"] is textured
    if tcfg.epochs:
        assert tcfg.steps is None
        old["train"]["steps"] = 0
    (tmp_path / "run.json").write_text(json.dumps(old))
    run = RunFolder(tmp_path)
    assert run.configs == (cfg, tcfg, data)
    assert run.differs(record(cfg, tcfg, data)) == []
    assert run.differs(record(replace(cfg, image_size=128), tcfg, data)) == ["model.image_size"]


def test_paper_epochs_per_dataset_and_steps_clear_epochs():
    epochs = {d: resolve("decodiff", "paper", d, ["a", "b"])[1].epochs for d in ("mvtec", "visa")}
    assert epochs == {"mvtec": 800, "visa": 200}  # DeCo-Diff §5.1, for train and reproduce alike
    _, tcfg = resolve("decodiff", "paper", "visa", ["a"], {"train.steps": 5})
    assert (tcfg.steps, tcfg.epochs) == (5, None)


def test_unknown_settings_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"no setting 'lamdbas'.*valid: .*'lambdas'"):
        resolve("diffusionad", "smoke", None, [], {"model.lamdbas": [100]})
    with pytest.raises(ValueError, match="no setting 'pretrainde'"):
        resolve("decodiff", "smoke", None, [], {"model.vae.pretrainde": "x"})
    with pytest.raises(ValueError, match="must start with"):
        resolve("decodiff", "smoke", None, [], {"lr": 1})
    with pytest.raises(ValueError, match="no profile 'fast'"):
        resolve("decodiff", "fast")


def test_cli_set_reaches_the_run(tmp_path, mvtec):
    out = tmp_path / "r"
    args = ["train", "--method", "patchknn", "--data", "mvtec", "--root", str(mvtec)]
    args += ["--category", "bottle", "--out", str(out), "--set", "model.patch=3"]
    assert cli.main([*args, "--set", "model.stride=2"]) == 2  # unknown key: a one-line error
    assert cli.main(args) == 0
    assert json.loads((out / "run.json").read_text())["model"]["patch"] == 3


# ------------------------------------------------------------------ run.json over versions
def test_run_json_without_later_fields_stays_valid_and_other_settings_are_named(tmp_path, mvtec):
    from tiny import TINY_DIFFUSIONAD

    tcfg = TrainConfig(steps=2, batch_size=2, checkpoint_every=2)
    data = DataSpec("mvtec", str(mvtec), "bottle")
    run = ensure_trained(tmp_path / "run", TINY_DIFFUSIONAD, tcfg, data)
    stored = json.loads((run / "run.json").read_text())
    del stored["model"]["norm_guided"], stored["model"]["guide_t"]  # written before they existed
    (run / "run.json").write_text(json.dumps(stored))
    stamp = (run / "model.safetensors").stat().st_mtime
    assert ensure_trained(run, TINY_DIFFUSIONAD, tcfg, data) == run  # reused, not retrained
    assert (run / "model.safetensors").stat().st_mtime == stamp
    with pytest.raises(FileExistsError, match=r"other settings \(train.lr\)"):
        ensure_trained(run, TINY_DIFFUSIONAD, replace(tcfg, lr=1.0), data)


# ------------------------------------------------------------------ patchknn
def test_patch_distances_match_a_brute_force():
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(300, 12, generator=g), torch.randn(70, 12, generator=g)
    brute = torch.cdist(q.double(), bank.double()).amin(1)
    assert torch.allclose(patch_distances(q, bank, chunk=64).double(), brute, atol=1e-5)


def test_patchknn_map_is_zero_on_training_images_and_peaks_on_a_new_patch():
    g = torch.Generator().manual_seed(1)
    cfg = PatchKNNConfig(image_size=16, patch=3, train_stride=1, test_stride=1)
    model = PatchKNN(cfg)
    train_images = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    model.fit(_Images(((train_images + 1) * 127.5).round()), g)
    assert model.bank.shape == (2 * 16 * 16, 3 * 9)
    seen = (((train_images + 1) * 127.5).round() / 127.5 - 1)[:1]
    assert float(model.anomaly_map(seen).abs().max()) < 5e-3  # √ of float32 cancellation
    odd = seen.clone()
    odd[..., 6:9, 10:13] = 5.0  # far outside anything seen
    m = model.anomaly_map(odd)[0, 0]
    assert divmod(int(m.argmax()), 16) in {(r, c) for r in range(5, 10) for c in range(9, 14)}
    # the bank's size is the data's: a fresh model loads it from the state dict
    fresh = PatchKNN(cfg)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.anomaly_map(odd), model.anomaly_map(odd))


def test_patchknn_end_to_end_through_the_cli(tmp_path, mvtec):
    out = tmp_path / "pk"
    args = ["train", "--method", "patchknn", "--data", "mvtec", "--root", str(mvtec)]
    assert cli.main([*args, "--category", "bottle", "--out", str(out)]) == 0
    assert cli.main(["evaluate", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == set(METRIC_KEYS)
    assert (out / "scores.csv").read_text().startswith("category,image,label,defect,score")


def test_reproduce_a_method_without_a_report_notebook(tmp_path, mvtec):
    out = tmp_path / "runs"
    args = ["reproduce", "patchknn-mvtec", "--root", str(mvtec), "--runs", str(out)]
    assert cli.main(args) == 0
    assert {p.name for p in out.iterdir()} >= {"bottle", "report.md", "report.csv"}
    assert "| mean | image_auroc |" in (out / "report.md").read_text()


def test_patchknn_extractors_are_registered_names_never_imports(tmp_path, mvtec, monkeypatch):
    """run.json names an extractor; evaluating it imports nothing, even with a .py of that
    name in the run folder and the folder as the working directory."""
    from n2n_core.methods import patchknn

    patchknn.register_extractor("gray", lambda x: x.mean(1, keepdim=True))
    out = tmp_path / "pk"
    args = ["train", "--method", "patchknn", "--data", "mvtec", "--root", str(mvtec)]
    args += ["--category", "bottle", "--out", str(out), "--set", "model.extractor='gray'"]
    assert cli.main(args) == 0 and cli.main(["evaluate", str(out)]) == 0
    record = json.loads((out / "run.json").read_text())
    record["model"]["extractor"] = "evil:run"
    (out / "run.json").write_text(json.dumps(record))
    marker = tmp_path / "ran"
    (out / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nrun = print\n")
    monkeypatch.chdir(out)
    monkeypatch.syspath_prepend(str(out))
    with pytest.raises(ValueError, match=r"'evil:run' is not a registered feature extractor"):
        evaluate_run(out)
    assert not marker.exists()


# ------------------------------------------------------------------ the laptop profile
@pytest.mark.parametrize("name", ["diffusionad", "decodiff", "patchknn"])
def test_each_profile_trains_at_the_shared_profiles_resolution(name):
    """The notebooks size their images by ``n2n_core.profiles``; every built-in method's profile
    of the same name trains at that resolution (so the patchknn baseline stands beside the
    diffusion methods on the same pixels); the laptop one is taken from there, not retyped."""
    from n2n_core.profiles import PROFILES as SHARED

    sizes = {p: cfg.image_size for p, cfg in methods.get(name).profiles.items()}
    assert sizes == {p: SHARED[p].image_size for p in sizes}
    assert set(sizes) >= {"smoke", "paper", "laptop"}


def test_laptop_profile_is_the_smoke_networks_with_the_named_changes():
    """DiffusionAD's laptop profile is the smoke profile with exactly the five changes its
    comment names (a change to either profile that is not stated there fails here), and those
    changes keep what they claim at 96 px: the finest Perlin lattice still spans 6 pixels, and
    top-K covers the same share of the image as the smoke profile's top-4 of 64²."""
    changes = {"model.image_size": 96, "model.synthesis.perlin_scale": [0, 5]}
    changes |= {"model.top_k": 9, "train.steps": 1600, "train.min_lr": 1e-4}
    assert resolve("diffusionad", "laptop") == resolve("diffusionad", "smoke", None, [], changes)
    cfg, tcfg = resolve("diffusionad", "laptop")
    assert cfg.image_size // 2 ** (cfg.synthesis.perlin_scale[1] - 1) == 6
    assert cfg.top_k == round(resolve("diffusionad", "smoke")[0].top_k * (96 / 64) ** 2)
    # the baseline runs at the same resolution beside it
    assert resolve("patchknn", "laptop")[0].image_size == cfg.image_size
    # the lr ends a decade below where it starts (the smoke profile's constant lr)
    assert tcfg.lr == resolve("diffusionad", "smoke")[1].lr == 10 * tcfg.min_lr


def test_decodiff_laptop_profile_is_the_smoke_profile_at_96_px():
    """DeCo-Diff's laptop profile is its smoke profile with exactly the changes its comment
    names: 96 px (24² latents), the map blur scaled with the resolution, as the smoke profile
    scales it, and training shifts of ± 4 px (one latent pixel) in the reflected image, so the
    test view is the whole image; the same training schedule."""
    changes = {
        "model.image_size": 96, "model.sigma_p": 1.5, "model.translate": 4,
        "model.shift_fill": "reflect",
    }  # fmt: skip
    assert resolve("decodiff", "laptop") == resolve("decodiff", "smoke", None, [], changes)
    (cfg, tcfg), (smoke, smoke_train) = resolve("decodiff", "laptop"), resolve("decodiff", "smoke")
    assert cfg.latent_size == 24 and cfg.sigma_p / smoke.sigma_p == 96 / 64
    assert cfg.translate == 96 // cfg.latent_size and cfg.load_size is None
    assert cfg.translate_draw == "uniform"
    assert tcfg == smoke_train
    assert resolve("patchknn", "laptop")[0].image_size == cfg.image_size


@pytest.mark.parametrize(
    ("method", "stored"),
    [
        ("diffusionad", {"image_size": 96, "top_k": 9}),
        ("decodiff", {"image_size": 96, "sigma_p": 1.5, "translate": 4}),
    ],
)
def test_laptop_profile_trains_and_evaluates_at_its_resolution(tmp_path, mvtec, method, stored):
    """Two steps of the laptop profile through the CLI: the networks (and DiffusionAD's
    synthesis, DeCo-Diff's autoencoder) work at 96 px, and the run folder records the profile's
    settings."""
    out = tmp_path / "laptop"
    args = ["train", "--method", method, "--profile", "laptop", "--data", "mvtec"]
    args += ["--root", str(mvtec), "--category", "bottle", "--out", str(out)]
    args += ["--set", "train.steps=2", "--set", "train.batch_size=2"]
    if method == "decodiff":
        args += ["--set", "model.vae.steps=2", "--set", "model.vae.batch_size=2"]
    assert cli.main(args) == 0
    model = json.loads((out / "run.json").read_text())["model"]
    assert {k: model[k] for k in stored} == stored
    metrics = evaluate_run(out)
    assert 0 <= metrics["image_auroc"] <= 1
