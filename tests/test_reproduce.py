"""`reproduce`: every real layout end to end on fixtures (tiny nets), report vs the paper."""

import csv
import json
from dataclasses import replace

import pytest
from tiny import TINY_DECODIFF, TINY_DIFFUSIONAD  # tests/tiny.py

from n2n_core import cli, viz
from n2n_core.data import fixtures
from n2n_core.evaluate import evaluate_run
from n2n_core.methods import resolve
from n2n_core.reproduce import TARGETS, _paper_numbers, reproduce

OVERRIDES = {
    "model": {k: getattr(TINY_DIFFUSIONAD, k) for k in ("image_size", "denoiser", "segmenter")},
    "train": {"steps": 2, "batch_size": 2, "checkpoint_every": 2},
}


def _report(path):
    with (path / "report.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("target", "write", "cats"),
    [
        (
            "diffusionad-mvtec",
            lambda r: fixtures.write_mvtec(r, n_train=4, n_test=2),
            ["bottle", "carpet"],
        ),
        ("diffusionad-visa", fixtures.write_visa_raw, ["candle", "pcb1"]),
        ("diffusionad-dagm", fixtures.write_dagm, ["Class1", "Class2"]),
    ],
)
def test_reproduce_end_to_end_on_each_layout(tmp_path, target, write, cats):
    root = write(tmp_path / "data")
    runs = tmp_path / "runs"
    table = reproduce(target, root=root, runs=runs, overrides=OVERRIDES)
    assert "mean" in table and all(set(v) >= {"image_auroc", "pixel_aupro"} for v in table.values())
    assert list(table)[:-1] == cats
    rows = _report(runs)
    assert {r["category"] for r in rows} == set(table)
    mean_rows = {r["metric"]: r for r in rows if r["category"] == "mean"}
    assert float(mean_rows["image_auroc"]["ours"]) == pytest.approx(
        table["mean"]["image_auroc"], abs=1e-4
    )
    paper = _paper_numbers(TARGETS[target])
    if paper:  # VisA / DAGM: the paper's mean and the difference
        p = float(mean_rows["image_auroc"]["paper"])
        assert p == pytest.approx(paper["mean"]["image_auroc"])
        assert float(mean_rows["image_auroc"]["delta"]) == pytest.approx(
            table["mean"]["image_auroc"] - p, abs=1e-4
        )
    # the official code's grid AUPRO beside the exact one, against the same published AUPRO
    grid = {r["category"]: r for r in rows if r["metric"] == "pixel_aupro_official_grid"}
    for cat in cats:
        info = json.loads((runs / cat / "eval_info.json").read_text())
        official = info["pixel_aupro_official_grid"]  # one name: reports, eval_info, metrics
        assert (official["thresholds"], official["fpr_rescale"]) == (1000, "minmax")
        value = official["categories"][cat]
        assert float(grid[cat]["ours"]) == pytest.approx(value, abs=1e-4)
        exact = next(r for r in rows if r["category"] == cat and r["metric"] == "pixel_aupro")
        assert grid[cat]["paper"] == exact["paper"]
    text = (runs / "report.md").read_text()
    assert "1000 thresholds" in text and "keeps the best" in text
    # what trained the numbers: each run's recorded versions, device and commit
    env = json.loads((runs / cats[0] / "train_info.json").read_text())["environment"]
    assert f"torch {env['versions']['torch']}, diffusers {env['versions']['diffusers']}" in text
    commit = (env.get("git") or {}).get("commit")
    assert (commit[:12] if commit else "no git") in text
    if "pixel_aupro" in paper.get("mean", {}):  # VisA (DAGM's table has no AUPRO)
        assert "| mean | pixel_aupro_official_grid |" in text
    fig = viz.report_bars(runs)  # notebooks 10/11's figure: a pair of bars per paper number
    compared = [r for r in rows if r["paper"] and r["category"] != "mean"]
    assert (fig is None) == (not compared)
    if fig is not None:
        assert len(fig.axes[0].patches) == 2 * len(compared)
        viz.plt.close(fig)
    # a second call reuses the finished runs: nothing is retrained or re-evaluated
    stamps = {p: p.stat().st_mtime for p in runs.rglob("metrics.json")}
    reproduce(target, root=root, runs=runs, overrides=OVERRIDES)
    assert stamps == {p: p.stat().st_mtime for p in runs.rglob("metrics.json")}


def test_paper_numbers_per_category_for_visa():
    paper = _paper_numbers(TARGETS["diffusionad-visa"])
    assert paper["pipe_fryum"] == pytest.approx({"image_auroc": 0.989, "pixel_aupro": 0.802})
    assert paper["mean"] == pytest.approx({"image_auroc": 0.978, "pixel_aupro": 0.932})


def test_cli_reproduce_on_a_fixture(tmp_path, capsys):
    root = fixtures.write_mvtec(
        tmp_path / "mvtec", categories=("bottle",), n_train=4, n_test=2, size=32
    )
    args = ["reproduce", "diffusionad-mvtec", "--root", str(root), "--runs", str(tmp_path / "r")]
    assert cli.main([*args, "--steps", "1", "--categories", "bottle", "--seed", "3"]) == 0
    # reproduce ran in this process into the target folder: the runs and the report
    assert json.loads((tmp_path / "r" / "bottle" / "metrics.json").read_text())
    run = json.loads((tmp_path / "r" / "bottle" / "run.json").read_text())
    assert run["train"]["seed"] == 3  # --seed reached the training
    env = run["environment"]  # a new run's run.json says what ran it
    assert set(env["versions"]) == {"python", "torch", "diffusers", "numpy", "scikit-learn",
                                    "accelerate"} and all(env["versions"].values())  # fmt: skip
    assert env["device"] == "cpu" and (env["git"] is None or set(env["git"]) == {"commit", "dirty"})
    assert not list((tmp_path / "r").glob("*.ipynb"))  # one path: no notebook kernel
    assert "| mean | image_auroc |" in (tmp_path / "r" / "report.md").read_text()
    assert "report.md" in capsys.readouterr().out


def test_missing_dataset_is_downloaded_first_when_asked(tmp_path, monkeypatch):
    from n2n_core.data import download as dl

    calls = []

    def fake(name, root):
        calls.append((name, root))
        return fixtures.write_dagm(root / "dagm", classes=(1,))

    monkeypatch.setattr(dl, "download", fake)
    runs = tmp_path / "runs"
    table = reproduce(
        "diffusionad-dagm", root=tmp_path / "data" / "dagm", runs=runs, overrides=OVERRIDES,
        download=True,
    )  # fmt: skip
    assert calls == [("dagm", tmp_path / "data")] and list(table) == ["Class1", "mean"]
    with pytest.raises(ValueError, match="named"):
        reproduce(
            "diffusionad-dagm", root=tmp_path / "elsewhere", runs=runs, overrides=OVERRIDES,
            download=True,
        )  # fmt: skip


def _configs(name, profile, overrides):
    return resolve(TARGETS[name].method, profile, TARGETS[name].dataset, ["a"], overrides)


def test_paper_profile_trains_as_long_as_the_paper_did_per_dataset():
    epochs = {
        name: _configs(name, "paper", {})[1].epochs
        for name in ("decodiff-mvtec", "decodiff-visa", "diffusionad-visa")
    }
    assert epochs == {"decodiff-mvtec": 800, "decodiff-visa": 200, "diffusionad-visa": 500}
    assert _configs("decodiff-visa", "smoke", {})[1].epochs is None
    quick = {"train": {"steps": 5, "epochs": None}}
    assert _configs("decodiff-visa", "paper", quick)[1].epochs is None


def _rows(table, name):
    return {k: round(v, 6) for k, v in table[name].items()}


def test_diffusionad_ablations_tables_3_and_4(tmp_path):
    """Table 3 trains each sub-network variant; Table 4 re-evaluates the full model at each
    λ. Rows that are the same setting agree, and each row equals evaluate_run with that
    setting (an independent path)."""
    root = fixtures.write_visa_raw(tmp_path / "data")
    runs = tmp_path / "runs"
    table = reproduce(
        "diffusionad-ablations", root=root, runs=runs, categories=["candle"], overrides=OVERRIDES
    )
    rows = ["SegmentationAD", "DenoisingAD", "DiffusionAD"]
    rows += ["DiffusionAD λ=100", "DiffusionAD λ=200", "DiffusionAD λ=100,200"]
    assert list(table) == rows
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == [
        "denoising_only", "full", "segmentation_only",
    ]  # fmt: skip
    assert _rows(table, "DiffusionAD") == _rows(table, "DiffusionAD λ=100,200")  # the default
    full = runs / "full" / "candle"
    for lams, row in [((100,), "DiffusionAD λ=100"), ((200,), "DiffusionAD λ=200")]:
        ours = evaluate_run(full, write=False, overrides={"lambdas": lams})
        assert {k: round(v, 6) for k, v in ours.items()} == _rows(table, row)
    seg = evaluate_run(runs / "segmentation_only" / "candle", write=False)
    assert {k: round(v, 6) for k, v in seg.items()} == _rows(table, "SegmentationAD")
    report = _report(runs)
    assert {r["table"] for r in report} == {"diffusionad_table3", "diffusionad_table4"}
    paper = {(r["row"], r["metric"]): r["paper"] for r in report}
    assert paper[("DenoisingAD", "image_auroc")] == "0.7620"  # Table 3 as transcribed
    assert paper[("DiffusionAD", "pixel_ap")] == ""  # the paper reports no pixel AP there
    assert "| DiffusionAD λ=200 | pixel_aupro |" in (runs / "report.md").read_text()


def test_decodiff_ablations_predict_once_per_setting(tmp_path):
    root = fixtures.write_mvtec(tmp_path / "data", n_train=4, n_test=2, size=32)
    runs = tmp_path / "runs"
    keys = ("image_size", "vae", "network", "unet", "patch_sizes")
    overrides = {
        "model": {k: getattr(TINY_DECODIFF, k) for k in keys},
        "train": {"steps": 2, "batch_size": 2, "checkpoint_every": 2},
    }
    table = reproduce("decodiff-ablations", root=root, runs=runs, overrides=overrides)
    assert len(table) == 7 + 4 and (runs / "full" / "model.safetensors").is_file()
    # Table 3's default row (z_t-1, 5 steps) is Table 4's geometric map; both are evaluate_run's
    assert _rows(table, "DeCo-Diff (z_t-1, 5 steps)") == _rows(table, "DeCo-Diff (geometric)")
    ours = evaluate_run(runs / "full", write=False)
    assert {k: round(v, 6) for k, v in ours.items()} == _rows(table, "DeCo-Diff (geometric)")
    z0 = evaluate_run(runs / "full", write=False, overrides={"strategy": "z_0", "reverse_steps": 2})
    assert {k: round(v, 6) for k, v in z0.items()} == _rows(table, "DeCo-Diff (z_0, 2 steps)")
    with pytest.raises(ValueError, match="no ablation table"):
        reproduce("decodiff-ablations", root=root, runs=runs, overrides=overrides, tables=["x"])


# ------------------------------------------------- the paper profile's DTD, foregrounds, seed
def _dtd(datasets, n=3):
    """A DTD-like folder: ``datasets/dtd/images/<class>/*.jpg``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        path = datasets / "dtd" / "images" / f"class{i % 2}" / f"t{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return datasets / "dtd" / "images"


def test_paper_profile_without_dtd_exits_at_once_naming_the_download(tmp_path):
    import subprocess
    import sys
    import time

    root = fixtures.write_visa_raw(tmp_path / "data" / "visa")
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "n2n_core", "reproduce", "diffusionad-visa", "--profile",
           "paper", "--root", str(root), "--runs", str(runs)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    print(f"failed after {time.perf_counter() - start:.1f} s")  # seconds: no kernel started
    out = done.stdout.strip().splitlines()
    assert done.returncode == 2 and len(out) == 1, done.stdout + done.stderr
    assert f"python -m n2n_core download dtd --root {tmp_path / 'data'}" in out[0]
    assert str(tmp_path / "data" / "dtd" / "images") in out[0]
    assert not runs.exists()  # no notebook executed, no run folder written


def test_paper_profile_draws_its_textures_from_the_dtd_folder(tmp_path, monkeypatch):
    from n2n_core.data import download as dl
    from n2n_core.methods import get
    from n2n_core.methods.diffusionad import DiffusionADFeed
    from n2n_core.reproduce import _runs, check
    from n2n_core.train import DataSpec, train

    root = fixtures.write_visa_raw(tmp_path / "data" / "visa", categories=("candle",))
    quick = {**OVERRIDES, "train": {**OVERRIDES["train"], "epochs": None}}
    method, t = get("diffusionad"), TARGETS["diffusionad-visa"]
    [(_, cfg, tcfg, data)] = _runs(t, "paper", root, tmp_path / "r", ["candle"], True, quick)
    assert cfg.require_textures and cfg.texture_dir is None
    assert method.downloads(cfg) == ("dtd",)
    with pytest.raises(ValueError, match="download dtd"):  # train() checks it too
        train(tmp_path / "run", cfg, tcfg, data)
    assert not (tmp_path / "run").exists()
    calls = []  # --download fetches DTD beside the dataset

    def fake(name, datasets):
        calls.append((name, datasets))
        _dtd(datasets)

    monkeypatch.setattr(dl, "download", fake)
    check(
        "diffusionad-visa", profile="paper", root=root, categories=["candle"], overrides=quick,
        download=True,
    )  # fmt: skip
    assert calls == [("dtd", tmp_path / "data")]
    dtd = tmp_path / "data" / "dtd" / "images"
    prepared, ptcfg = method.prepare(cfg, tcfg, data)
    assert prepared.texture_dir == str(dtd.resolve()) and ptcfg == tcfg
    assert method.downloads(prepared) == ()  # a folder given: nothing to fetch
    feed = DiffusionADFeed(prepared, tcfg, data, tmp_path / "feed")
    source = feed.synthesizer.textures
    assert not source.procedural and len(source.files) == 3
    assert all(dtd in f.parents for f in source.files)
    other = _dtd(tmp_path / "mine", n=2)  # --texture-dir wins over the default
    given, _ = method.prepare(replace(cfg, texture_dir=str(other)), tcfg, data)
    assert given.texture_dir == str(other.resolve())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no texture images in .*empty \(--texture-dir\)"):
        method.prepare(replace(cfg, texture_dir=str(empty)), tcfg, data)
    # smoke: procedural textures, nothing required
    [(_, scfg, stcfg, _)] = _runs(t, "smoke", root, tmp_path / "r", ["candle"], True, {})
    assert method.prepare(scfg, stcfg, data) == (scfg, stcfg) and scfg.texture_dir is None
    assert method.downloads(scfg) == ()
    assert DataSpec("visa", str(root), "candle") == data


def test_a_finished_paper_run_is_reused_where_its_textures_are_gone(tmp_path):
    """DTD is read only while training: a finished run (e.g. copied from the GPU machine) is
    reused without it, with the texture folder it recorded; other settings still differ."""
    from n2n_core.reproduce import _runs
    from n2n_core.run_folder import RunFolder, record
    from n2n_core.train import ensure_trained

    root = fixtures.write_visa_raw(tmp_path / "data" / "visa", categories=("candle",))
    t = TARGETS["diffusionad-visa"]
    [(_, cfg, tcfg, data)] = _runs(t, "paper", root, tmp_path / "r", ["candle"], True, {})
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    trained = replace(tcfg, mixed_precision="bf16")  # as a GPU recorded "auto"
    run.write_record(record(replace(cfg, texture_dir="/gone/dtd/images"), trained, data))
    run.weights_path.write_bytes(b"")  # finished: ensure_trained does not read the weights
    assert ensure_trained(run.path, cfg, tcfg, data) == run.path
    with pytest.raises(FileExistsError, match=r"train\.seed"):
        ensure_trained(run.path, cfg, replace(tcfg, seed=1), data)
    (tmp_path / "fresh").mkdir()
    with pytest.raises(ValueError, match="download dtd"):  # not finished: DTD is needed
        ensure_trained(tmp_path / "fresh", cfg, tcfg, data)


def test_reproduce_takes_the_methods_path_options_only():
    """``reproduce`` offers the options a method marks for it (DiffusionAD's --texture-dir, a
    model setting); given for another method's target, the flag is refused naming its owner."""
    parser = cli.build_parser()
    args = parser.parse_args(["reproduce", "diffusionad-visa", "--texture-dir", "t"])
    got = cli._method_flags(args, "diffusionad", lambda o: o.reproduce)
    assert got == {"model.texture_dir": "t"}
    with pytest.raises(ValueError, match="--texture-dir is an option of diffusionad"):
        cli._method_flags(args, "decodiff", lambda o: o.reproduce)
    with pytest.raises(cli.UsageError, match="unrecognized arguments: --variant"):
        parser.parse_args(["reproduce", "diffusionad-visa", "--variant", "full"])  # no path


def test_foreground_dir_holds_one_folder_per_category(tmp_path):
    import numpy as np
    from PIL import Image

    from n2n_core.data import load_samples
    from n2n_core.data.samples import DatasetError

    root = fixtures.write_visa_raw(tmp_path / "data", categories=("candle",))
    fg, runs = tmp_path / "fg", tmp_path / "runs"
    (fg / "candle").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"precomputed foreground mask .*fg/candle/"):
        reproduce("diffusionad-visa", root=root, runs=runs, overrides=OVERRIDES, foreground_dir=fg)
    for s in load_samples("visa", root, "candle", "train"):
        Image.fromarray(np.full((32, 32), 255, np.uint8)).save(
            fg / "candle" / f"{s.image.stem}.png"
        )
    reproduce("diffusionad-visa", root=root, runs=runs, overrides=OVERRIDES, foreground_dir=fg)
    run = json.loads((runs / "candle" / "run.json").read_text())
    assert run["data"]["foreground_dir"] == str(fg / "candle")
