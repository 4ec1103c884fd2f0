"""Faults a user meets (issue #18): bad settings, a first attempt that died before its first
checkpoint, Ctrl-C / SIGTERM mid-run, a crash between the two checkpoint renames, lossy or
16-bit or rotated image files, hidden files in a dataset, one-line CLI errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny import TINY_DIFFUSIONAD  # tests/tiny.py

from n2n_core import cli
from n2n_core.config import DataSpec, TrainConfig
from n2n_core.data import fixtures, load_image, load_mask, load_samples
from n2n_core.methods.diffusionad import DiffusionADConfig
from n2n_core.train import ensure_trained, train

# the tiny DiffusionAD networks of tests/tiny.py, as CLI settings
TINY_SET = [
    "model.denoiser.channels=(8, 16)", "model.denoiser.attention_resolutions=()",
    "model.denoiser.norm_num_groups=4", "model.segmenter.base=4",
    "model.segmenter.multipliers=(1, 2, 4)", "train.log_every=1", "train.checkpoint_every=50",
]  # fmt: skip


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "mvtec"
    return fixtures.write_mvtec(root, categories=("bottle",), n_train=6, n_test=2, size=32)


def _log(run):
    return [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]


def _args(root, run, steps, *extra):
    args = ["train", "--data", "mvtec", "--root", str(root), "--category", "bottle"]
    args += ["--out", str(run), "--steps", str(steps), "--image-size", "32", "--batch-size", "2"]
    for item in TINY_SET:
        args += ["--set", item]
    return args + list(extra)


def _tcfg(**kw):
    base = {"steps": 6, "batch_size": 2, "checkpoint_every": 2, "log_every": 1}
    return TrainConfig(**{**base, **kw})


# ------------------------------------------------------------------ 3. no silent wrong results
@pytest.mark.parametrize(
    "field, value",
    [("steps", 0), ("steps", -5), ("batch_size", 0), ("checkpoint_every", 0), ("log_every", 0),
     ("grad_accum", 0), ("epochs", 0), ("lr", 0.0), ("mixed_precision", "fp8")],
)  # fmt: skip
def test_non_positive_settings_are_errors(field, value):
    with pytest.raises(ValueError, match=f"train.{field} must be"):
        TrainConfig(**{field: value})
    assert TrainConfig(steps=None, epochs=3).total_steps(12) == 6  # 3 × 12 images / batch 6
    with pytest.raises(ValueError, match=r"train\.steps must be"):
        TrainConfig(steps=None)  # no length at all


def test_top_k_must_be_positive():
    for k in (0, -3):
        with pytest.raises(ValueError, match="top_k must be a positive"):
            DiffusionADConfig(top_k=k)


def test_cli_refuses_zero_steps_in_one_line_and_writes_nothing(tmp_path, mvtec, capsys):
    run = tmp_path / "run"
    assert cli.main(_args(mvtec, run, 0)) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        "error: argument --steps: must be > 0, got 0 "
        "(python -m n2n_core train --help lists the options)"
    ]
    assert not run.exists()


@pytest.mark.parametrize(
    "flag, value",
    [("--batch-size", "0"), ("--lr", "0"), ("--lr", "-0.001"), ("--checkpoint-every", "0"),
     ("--epochs", "0"), ("--image-size", "0"), ("--grad-accum", "0"), ("--vae-steps", "0")],
)  # fmt: skip
def test_cli_zero_or_negative_values_are_one_line_errors_not_defaults(
    tmp_path, mvtec, capsys, flag, value
):
    """A 0 used to be dropped as 'not given', and the profile's value ran instead."""
    run = tmp_path / "run"
    assert cli.main([*_args(mvtec, run, 2), flag, value]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"error: argument {flag}: must be > 0, got {value} "
                   "(python -m n2n_core train --help lists the options)"]  # fmt: skip
    assert not run.exists()


def test_reproduce_steps_zero_and_unknown_flags_are_one_line_errors(tmp_path, capsys):
    assert cli.main(["reproduce", "patchknn-synthetic", "--steps", "0"]) == 2
    assert capsys.readouterr().out.strip().splitlines() == [
        "error: argument --steps: must be > 0, got 0 "
        "(python -m n2n_core reproduce --help lists the options)"
    ]
    assert cli.main(["evaluate", str(tmp_path), "--top-k", "0"]) == 2
    assert "argument --top-k: must be > 0" in capsys.readouterr().out
    assert cli.main(["train", "--out", ""]) == 2  # not the current folder
    assert "argument --out: expected a folder, got an empty name" in capsys.readouterr().out
    assert cli.main(["train", "--out", str(tmp_path), "--bogus"]) == 2
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("error: unrecognized arguments: --bogus")


# ------------------------------------------------------------------ 1. dead-end run folders
def test_a_bad_first_attempt_leaves_no_run_folder(tmp_path, mvtec, capsys):
    run = tmp_path / "run"
    args = _args(mvtec, run, 2)
    bad = [a if a != "bottle" else "botle" for a in args]
    assert cli.main(bad) == 2 and "unknown category 'botle'" in capsys.readouterr().out
    assert not run.exists()
    assert cli.main(args) == 0 and (run / "model.safetensors").is_file()


def test_a_folder_without_a_checkpoint_starts_over_with_or_without_resume(tmp_path, mvtec):
    data = DataSpec("mvtec", str(mvtec), "bottle")
    cfg = TINY_DIFFUSIONAD
    train(tmp_path / "straight", cfg, _tcfg(), data)
    for resume in (False, True):
        run = tmp_path / f"dead-{resume}"
        train(run, cfg, _tcfg(), data, stop_after=1)  # as if killed before its first checkpoint:
        shutil.rmtree(run / "checkpoints")  # run.json and a log line, no work kept
        assert (run / "run.json").is_file() and not (run / "model.safetensors").exists()
        train(run, cfg, _tcfg(), data, resume=resume)
        assert _log(run) == _log(tmp_path / "straight")
    dead = tmp_path / "dead-ensure"  # notebooks and reproduce go through ensure_trained
    train(dead, cfg, _tcfg(), data, stop_after=1)
    shutil.rmtree(dead / "checkpoints")
    assert ensure_trained(dead, cfg, _tcfg(), data) == dead
    assert _log(dead) == _log(tmp_path / "straight")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tmp_path / "never", cfg, _tcfg(), data, resume=True)
    with pytest.raises(FileExistsError, match="--resume"):  # a finished run is kept
        train(tmp_path / "straight", cfg, _tcfg(), data)


# ------------------------------------------------------------------ 4. between the renames
@pytest.mark.parametrize("with_tmp", [True, False])
def test_a_crash_between_the_checkpoint_renames_resumes(tmp_path, mvtec, with_tmp):
    """``last → last.old`` happened, ``last.tmp → last`` did not: resume takes the complete
    ``last.tmp`` (step 4) or, without it, ``last.old`` (step 2); either way the losses are
    those of an uninterrupted run."""
    data, cfg = DataSpec("mvtec", str(mvtec), "bottle"), TINY_DIFFUSIONAD
    train(tmp_path / "straight", cfg, _tcfg(), data)
    run = tmp_path / "run"
    train(run, cfg, _tcfg(), data, stop_after=2)
    ckpts = run / "checkpoints"
    shutil.copytree(ckpts / "last", tmp_path / "step2")
    train(run, cfg, _tcfg(), data, resume=True, stop_after=4)
    (ckpts / "last").rename(ckpts / "last.tmp")
    shutil.copytree(tmp_path / "step2", ckpts / "last.old")
    if not with_tmp:
        shutil.rmtree(ckpts / "last.tmp")
    train(run, cfg, _tcfg(), data, resume=True)
    assert _log(run) == _log(tmp_path / "straight")
    assert sorted(p.name for p in ckpts.iterdir()) == ["last"]


# ------------------------------------------------------------------ 2. Ctrl-C and SIGTERM
def _cli(*args):
    """``python -m n2n_core ARGS`` as a process (the same threads for every run compared)."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "n2n_core", *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_resume_reproduces_the_losses(tmp_path, mvtec, sig):
    steps = 300
    straight, run = tmp_path / "straight", tmp_path / "run"
    proc = _cli(*_args(mvtec, run, steps))
    log = run / "train_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, out
    assert f"{signal.Signals(sig).name} at step" in out and "--resume" in out
    assert "Traceback" not in out
    stopped = len(_log(run))
    assert 3 <= stopped < steps and not (run / "model.safetensors").exists()
    for args in ([*_args(mvtec, run, steps), "--resume"], _args(mvtec, straight, steps)):
        out, _ = (p := _cli(*args)).communicate(timeout=300)
        assert p.returncode == 0, out
    assert _log(run) == _log(straight)


# ------------------------------------------------------------------ 3. image files
def test_sixteen_bit_images_are_scaled_by_their_bit_depth(tmp_path):
    dark = np.full((8, 8), 200 * 257 // 10, dtype=np.uint16)  # 5140: at most 255 · 257
    dim = np.full((8, 8), 200, dtype=np.uint16)  # a dark 16-bit frame, values ≤ 255
    for name, a in (("a.png", dark), ("b.png", dim)):
        Image.fromarray(a).save(tmp_path / name)
    assert int(load_image(tmp_path / "a.png")[0, 0, 0]) == 20
    assert int(load_image(tmp_path / "b.png")[0, 0, 0]) == 1  # 200 / 257, not 200


def test_jpeg_masks_are_thresholded_at_half_and_warned_about(tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[20:27, 30:36] = 255  # 42 pixels
    Image.fromarray(mask).save(tmp_path / "m.jpg", quality=75)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = load_mask(tmp_path / "m.jpg")
    assert any("JPEG" in str(w.message) for w in caught)
    assert abs(int(got.sum()) - 42) <= 4  # > 0 would give far more (ringing around the edges)
    assert int((np.asarray(Image.open(tmp_path / "m.jpg")) > 0).sum()) > 60


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((4, 6, 3), np.uint8)
    a[0, :, 0] = 255  # a red top row
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    im.save(tmp_path / "r.jpg", exif=exif, quality=100)
    got = load_image(tmp_path / "r.jpg")
    assert got.shape == (6, 4, 3)  # turned upright
    red = got[..., 0].astype(float)  # JPEG blurs the red a little: compare, do not threshold
    assert red[:, -1].mean() > red[:, 0].mean() + 100  # the top row is now the right column
    assert red[:, -1].mean() > red[0, :-1].mean() + 100


def test_hidden_files_and_folders_are_not_data(tmp_path):
    root = fixtures.write_mvtec(tmp_path / "m", categories=("bottle",), n_train=2, n_test=1)
    shutil.copy(root / "bottle/train/good/000.png", root / "bottle/train/good/._000.png")
    (root / "bottle/test/.ipynb_checkpoints").mkdir()
    shutil.copy(root / "bottle/test/good/000.png", root / "bottle/test/.ipynb_checkpoints/x.png")
    assert len(load_samples("mvtec", root, "bottle", "train")) == 2
    defects = {s.defect for s in load_samples("mvtec", root, "bottle", "test")}
    assert ".ipynb_checkpoints" not in defects


# ------------------------------------------------------------------ 7. one line, or --debug
def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, mvtec, capsys):
    run = tmp_path / "run"
    assert cli.main(_args(mvtec, run, 2)) == 0
    (run / "model.safetensors").write_bytes(b"truncated")
    capsys.readouterr()
    code = cli.main(["evaluate", str(run)])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 2 and len(out) == 1 and out[0].startswith("error: cannot read")
    assert "model.safetensors" in out[0] and "damaged" in out[0]
    with pytest.raises(Exception):  # noqa: B017 - whatever safetensors raises, unwrapped
        cli.main(["evaluate", str(run), "--debug"])


def test_relative_roots_are_stored_absolute(tmp_path, mvtec, monkeypatch):
    monkeypatch.chdir(mvtec.parent)
    run = tmp_path / "run"
    assert cli.main(_args("mvtec", run, 2)) == 0  # --root mvtec, relative to the cwd
    stored = json.loads((run / "run.json").read_text())["data"]["root"]
    assert stored == str(mvtec.resolve())


def test_a_defect_lost_to_resizing_is_named_not_fatal(tmp_path, capsys):
    """A one-pixel defect at even coordinates disappears when a 32 px mask is resized to
    16 px (nearest neighbour reads the odd pixels): evaluate names the image and goes on."""
    root = fixtures.write_mvtec(tmp_path / "m", categories=("bottle",), n_train=4, n_test=2)
    mask = root / "bottle/ground_truth/broken/001_mask.png"
    tiny = np.zeros((32, 32), np.uint8)
    tiny[2, 2] = 255
    Image.fromarray(tiny).save(mask)
    run = tmp_path / "run"
    args = _args(root, run, 2)
    args[args.index("--image-size") + 1] = "16"
    assert cli.main(args) == 0
    with pytest.warns(UserWarning, match=r"vanished.*broken/001\.png"):
        assert cli.main(["evaluate", str(run)]) == 0
    assert json.loads((run / "metrics.json").read_text())["image_auroc"] >= 0


def test_an_empty_mask_file_is_named_as_such_not_blamed_on_resizing(tmp_path):
    root = fixtures.write_mvtec(tmp_path / "m", categories=("bottle",), n_train=4, n_test=2)
    mask = root / "bottle/ground_truth/broken/001_mask.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(mask)
    run = tmp_path / "run"
    assert cli.main(_args(root, run, 2)) == 0
    with pytest.warns(UserWarning, match=r"empty mask file.*broken/001_mask\.png") as seen:
        assert cli.main(["evaluate", str(run)]) == 0
    assert not any("vanished" in str(w.message) for w in seen)


def test_a_log_line_cut_off_by_a_crash_does_not_block_resume(tmp_path, mvtec):
    data, cfg = DataSpec("mvtec", str(mvtec), "bottle"), TINY_DIFFUSIONAD
    train(tmp_path / "straight", cfg, _tcfg(), data)
    run = tmp_path / "run"
    train(run, cfg, _tcfg(), data, stop_after=2)
    with (run / "train_log.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 0.1')  # the crash came mid-write
    train(run, cfg, _tcfg(), data, resume=True)
    assert _log(run) == _log(tmp_path / "straight")


def test_run_files_are_readable_by_others(tmp_path, mvtec):
    from n2n_core.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "x.json", "{}")
        assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o027)  # the umask of the moment, as open() would apply it
        atomic_write_text(tmp_path / "y.json", "{}")
        assert (tmp_path / "y.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_misleading_messages_now_say_what_is_wrong(tmp_path, capsys):
    from n2n_core.data.samples import DatasetError
    from n2n_core.methods import load_run
    from n2n_core.models.vae import load_pretrained_vae

    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        load_samples("mvtec", tmp_path / "file", "bottle", "train")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"run\.json is not a valid run record"):
        load_run(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="does not exist: expected a diffusers"):
        load_pretrained_vae(str(tmp_path / "no" / "such" / "dir"))  # not tried as a hub id
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        load_pretrained_vae(str(tmp_path))
    # `data folder` without --root looks in data/folder, never in the embedded set
    assert cli.main(["data", "folder"]) == 2
    assert "folder" in capsys.readouterr().out


def test_half_precision_maps_are_scored_as_float32():
    import torch

    from n2n_core import metrics

    rng = np.random.default_rng(3)
    masks = np.zeros((4, 8, 8), bool)
    masks[0, 2:4, 2:4] = masks[2, 5:7, 1:3] = True
    maps = torch.from_numpy(rng.random((4, 8, 8)).astype(np.float32) + masks)
    want = metrics.compute(maps.bfloat16().float(), masks)
    got = metrics.compute(maps.bfloat16(), masks)
    assert got == want


def test_evaluate_keeps_scores_and_returns_metrics_when_the_disk_is_full(
    tmp_path, mvtec, monkeypatch
):
    from n2n_core import evaluate

    run = tmp_path / "run"
    assert cli.main(_args(mvtec, run, 2)) == 0

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluate, "_write", full)
    with pytest.warns(UserWarning, match="No space left"):
        got = evaluate.evaluate_run(run)
    assert set(got) >= {"image_auroc", "pixel_aupro"}
    rows = (run / "scores.csv").read_text().splitlines()  # written as it went
    assert len(rows) == 1 + len(load_samples("mvtec", mvtec, "bottle", "test"))
    assert not (run / "metrics_per_category.csv").exists()


def test_the_data_command_opens_every_file(tmp_path, capsys):
    root = fixtures.write_mvtec(tmp_path / "m", categories=("bottle",), n_train=2, n_test=1)
    assert cli.main(["data", "mvtec", "--root", str(root)]) == 0
    assert "every file opened" in capsys.readouterr().out
    (root / "bottle/test/broken/000.png").write_bytes(b"not a png")
    assert cli.main(["data", "mvtec", "--root", str(root), "--no-open"]) == 0  # listing only
    capsys.readouterr()
    assert cli.main(["data", "mvtec", "--root", str(root)]) == 2
    out = capsys.readouterr().out
    assert "cannot read image" in out and "broken/000.png" in out


# ------------------------------------------------------------------ 6/7. full or read-only disks
def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint(
    tmp_path, mvtec, monkeypatch, capsys
):
    """The second checkpoint fails half-written, as torch fails on a full disk ("unexpected
    pos"): one line that names the disk, no ``last.tmp`` left, the first checkpoint kept, and
    ``--resume`` then ends with the losses of an uninterrupted run."""
    from n2n_core import checkpoint

    extra = ["--set", "train.checkpoint_every=2"]
    assert cli.main(_args(mvtec, tmp_path / "straight", 6, *extra)) == 0
    save, calls = checkpoint._write, []

    def full_on_second(folder, *args, **kwargs):
        calls.append(folder)
        if len(calls) < 2:
            return save(folder, *args, **kwargs)
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64")

    monkeypatch.setattr(checkpoint, "_write", full_on_second)
    run = tmp_path / "run"
    capsys.readouterr()
    assert cli.main(_args(mvtec, run, 6, *extra)) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "is the disk full or read-only?" in out[0], out
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last"]
    assert (ckpts / "last" / "model.safetensors").stat().st_size > len(b"half")
    monkeypatch.setattr(checkpoint, "_write", save)
    assert cli.main([*_args(mvtec, run, 6, *extra), "--resume"]) == 0
    assert _log(run) == _log(tmp_path / "straight")


def test_a_read_only_out_folder_is_one_line_naming_it(tmp_path, mvtec, monkeypatch, capsys):
    """Root ignores permission bits (CI runs as root), so the refusal a read-only mount gives
    is raised where the run folder is created."""
    ro = tmp_path / "ro"
    mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self == ro or ro in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert cli.main(_args(mvtec, ro / "run", 2)) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "Permission denied" in out[0] and str(ro / "run") in out[0]
    assert "Traceback" not in out[0]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("train.lr=abc", "setting 'train.lr' must be float, got 'abc'"),
        ("train.lr=nan", "setting 'train.lr' must be float, got 'nan'"),
        ("model.image_size=abc", "setting 'model.image_size' must be int, got 'abc'"),
        ("model.norm_guided=1", "setting 'model.norm_guided' must be bool, got 1"),
    ],
)
def test_a_setting_of_the_wrong_type_is_one_line_naming_it(
    tmp_path, mvtec, capsys, setting, message
):
    assert cli.main(_args(mvtec, tmp_path / "run", 2, "--set", setting)) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"error: {message}"]
    assert not (tmp_path / "run").exists()


def test_evaluate_never_generates_a_dataset_where_a_run_json_points(tmp_path):
    from n2n_core.data import synthetic as S
    from n2n_core.data.samples import DatasetError
    from n2n_core.evaluate import evaluate_run
    from n2n_core.methods import resolve

    spec = S.SyntheticSpec(size=32, n_train=2, n_test_good=1, n_per_defect=1)
    root = S.ensure_synthetic(tmp_path / "syn", spec)
    cfg, tcfg = resolve("patchknn", "smoke", "synthetic", ["cap"], {"model.image_size": 32})
    run = tmp_path / "run"
    train(run, cfg, tcfg, DataSpec("synthetic", str(root), "cap"))
    record = json.loads((run / "run.json").read_text())
    record["data"]["root"] = str(tmp_path / "elsewhere" / "synthetic")
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(DatasetError, match=r"not at .*elsewhere/synthetic .*data synthetic --root"):
        evaluate_run(run)
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("source", ["folder", "dagm", "visa"])
def test_data_on_an_empty_root_says_so(tmp_path, capsys, source):
    (tmp_path / "empty").mkdir()
    assert cli.main(["data", source, "--root", str(tmp_path / "empty")]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("error: ") and str(tmp_path / "empty") in out[0]


def test_inplace_refuses_the_options_it_would_ignore(capsys):
    for extra in (["--profile", "paper"], ["--param", "seed=1"], ["--out", "x"]):
        assert cli.main(["notebooks", "--inplace", *extra]) == 2
        assert "--inplace" in capsys.readouterr().out


def test_a_local_vae_folder_is_stored_absolute(tmp_path, monkeypatch):
    (tmp_path / "myvae").mkdir()
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(
        ["train", "--method", "decodiff", "--out", "r", "--vae", "myvae"]
    )
    assert args.vae == str(tmp_path / "myvae")
    hub = cli.build_parser().parse_args(["train", "--method", "decodiff", "--out", "r",
                                         "--vae", "stabilityai/sd-vae-ft-mse"])  # fmt: skip
    assert hub.vae == "stabilityai/sd-vae-ft-mse"  # not a folder here: a hub id, as given


def test_weights_that_do_not_fit_their_run_json_are_one_line(tmp_path, mvtec, capsys):
    run = tmp_path / "run"
    assert cli.main(_args(mvtec, run, 2)) == 0
    record = json.loads((run / "run.json").read_text())
    record["model"]["segmenter"]["base"] = 8  # edited: the weights were trained with 4
    (run / "run.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert cli.main(["evaluate", str(run)]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "model.safetensors does not fit the diffusionad model" in out[0]
    assert "was run.json edited" in out[0]
