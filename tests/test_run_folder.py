"""A run folder has one owner (``RunFolder``), one Accelerator trains it, and its checkpoints
load without running code."""

import json
import pickle
from dataclasses import replace
from pathlib import Path

import pytest

from n2n_core.config import DataSpec, TrainConfig
from n2n_core.data import fixtures
from n2n_core.run_folder import RunFolder, record
from n2n_core.train import train


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "mvtec"
    return fixtures.write_mvtec(root, categories=("bottle",), n_train=4, n_test=2, size=32)


def _tcfg(**kw):
    return TrainConfig(**{"steps": 4, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, **kw})


def test_status_moves_from_empty_to_finished(tmp_path, mvtec):
    from tiny import TINY_DIFFUSIONAD

    data, run = DataSpec("mvtec", str(mvtec), "bottle"), RunFolder(tmp_path / "run")
    assert run.status == "empty" and not run.started
    train(run.path, TINY_DIFFUSIONAD, _tcfg(), data, stop_after=2)
    assert run.status == "resumable" and run.checkpoint().is_dir()
    with pytest.raises(FileNotFoundError, match="resume it: train with the same options"):
        run.weights()
    cfg, tcfg, stored = run.configs  # run.json read once, as the configs
    assert (cfg, stored) == (TINY_DIFFUSIONAD, data) and tcfg.steps == 4
    assert run.differs(record(cfg, tcfg, data)) == []
    assert run.differs(record(cfg, replace(tcfg, lr=1.0), data)) == ["train.lr"]
    train(run.path, TINY_DIFFUSIONAD, _tcfg(), data, resume=True)
    assert run.status == "finished" and set(run.weights()) and run.method.name == "diffusionad"
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "run.json").write_text(run.record_path.read_text())
    assert RunFolder(tmp_path / "started").status == "started"  # nothing kept: starts over


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_checkpoint_holds_no_pickle_and_a_planted_one_is_never_run(tmp_path, mvtec):
    """Resuming from a shared run folder (Drive) must not execute what someone put there: the
    optimiser state loads with weights_only=True, and a checkpoint in accelerate's pickle
    format is refused, not unpickled."""
    from tiny import TINY_DIFFUSIONAD

    data, run = DataSpec("mvtec", str(mvtec), "bottle"), tmp_path / "run"
    train(run, TINY_DIFFUSIONAD, _tcfg(), data, stop_after=2)
    last = run / "checkpoints" / "last"
    assert sorted(p.name for p in last.iterdir()) == [
        "model.safetensors", "optimizer.pt", "rng_0.json", "scheduler.json", "state.json",
    ]  # fmt: skip
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (last / "optimizer.pt").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="cannot load the checkpoint"):
        train(run, TINY_DIFFUSIONAD, _tcfg(), data, resume=True)
    assert not marker.exists()
    for f in last.iterdir():  # the layout older n2n versions wrote (accelerate's save_state)
        f.unlink()
    (last / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="older versions wrote pickles"):
        train(run, TINY_DIFFUSIONAD, _tcfg(), data, resume=True)
    assert not marker.exists()


def test_one_accelerator_per_train_with_a_stage(tmp_path, mvtec, monkeypatch):
    """DeCo-Diff trains its autoencoder stage, then its model: one Accelerator for both
    (accelerate keeps one AcceleratorState per process, decided by the first)."""
    import accelerate
    from tiny import TINY_DECODIFF

    made = []
    init = accelerate.Accelerator.__init__

    def counting(self, *args, **kwargs):
        made.append(kwargs)
        init(self, *args, **kwargs)

    monkeypatch.setattr(accelerate.Accelerator, "__init__", counting)
    data = DataSpec("mvtec", str(mvtec), "bottle")
    train(tmp_path / "run", TINY_DECODIFF, _tcfg(steps=2, grad_accum=2), data)
    assert (tmp_path / "run" / "vae").is_dir() and (
        tmp_path / "run" / "model.safetensors"
    ).is_file()
    assert len(made) == 1, made


# ------------------------------------------------------------------ one writer per run folder
def test_a_second_training_into_a_busy_folder_is_refused_and_the_first_log_stays_intact(
    tmp_path, mvtec
):
    import os
    import subprocess
    import sys
    import time

    from tiny import TINY_DIFFUSIONAD

    from n2n_core import cli
    from n2n_core.run_folder import RunFolderLocked

    run = tmp_path / "run"
    args = ["train", "--data", "mvtec", "--root", str(mvtec), "--category", "bottle"]
    args += ["--out", str(run), "--steps", "600", "--image-size", "32", "--batch-size", "2"]
    for item in (
        "model.denoiser.channels=(8, 16)",
        "model.denoiser.attention_resolutions=()",
        "model.denoiser.norm_num_groups=4",
        "model.segmenter.base=4",
        "model.segmenter.multipliers=(1, 2, 4)",
        "train.log_every=1",
    ):
        args += ["--set", item]  # fmt: skip
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "n2n_core", *args]
    first = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.time() + 120
        while not (run / "run.json").is_file() and time.time() < deadline:
            time.sleep(0.2)
        assert (run / ".lock").is_file(), "the first training holds the lock"
        with pytest.raises(RunFolderLocked, match=r"being written by another process \(train: pid"):
            train(run, TINY_DIFFUSIONAD, _tcfg(), DataSpec("mvtec", str(mvtec), "bottle"),
                  resume=True)  # fmt: skip
        assert cli.main([*args, "--resume"]) == 2  # one line on the command line
        assert cli.main(["evaluate", str(run)]) == 2  # evaluate waits its turn too
    finally:
        out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out
    steps = [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 601))  # one writer: no duplicated or out-of-order lines
    assert not (run / ".lock").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over_and_a_live_one_refused(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time

    from n2n_core import run_folder
    from n2n_core.run_folder import RunFolderLocked

    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    (tmp_path / "afile").write_text("x")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    lock = {"pid": int(dead), "host": socket.gethostname(), "purpose": "train"}
    run.lock_path.write_text(json.dumps(lock))  # kill -9 left it
    with run.lock("evaluate"):
        assert json.loads(run.lock_path.read_text())["pid"] == os.getpid()
    assert not run.lock_path.exists()
    # another host's lock: refused while it is fresh, taken over once its heartbeat stopped
    run.lock_path.write_text(json.dumps({"pid": 1, "host": "colab-vm-1", "purpose": "train"}))
    with pytest.raises(RunFolderLocked, match="colab-vm-1"), run.lock("train"):
        pass
    old = time.time() - run_folder.STALE_S - 5
    os.utime(run.lock_path, (old, old))
    with run.lock("train"):
        pass
    assert not run.lock_path.exists()
    # an empty lock (its writer died between creating and filling it): refused while a writer
    # could still be filling it, taken over after that
    run.lock_path.write_bytes(b"")
    with pytest.raises(RunFolderLocked), run.lock("train"):
        pass
    old = time.time() - run_folder.UNREADABLE_S - 5
    os.utime(run.lock_path, (old, old))
    with run.lock("train"):
        pass
    with pytest.raises(FileExistsError, match="is a file, not a run folder"):
        with RunFolder(tmp_path / "afile").lock("train"):
            pass


def test_evaluate_that_cannot_write_fails_in_one_line_and_leaves_no_stale_metrics(
    tmp_path, mvtec, monkeypatch, capsys
):
    from tiny import TINY_DIFFUSIONAD

    from n2n_core import cli, evaluate

    run = tmp_path / "run"
    train(run, TINY_DIFFUSIONAD, _tcfg(steps=2), DataSpec("mvtec", str(mvtec), "bottle"))
    assert cli.main(["evaluate", str(run)]) == 0 and (run / "metrics.json").is_file()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluate, "_write", full)
    capsys.readouterr()
    assert cli.main(["evaluate", str(run)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "could not write the results into" in out[0] and "wrote" not in out[0]
    assert not (run / "metrics.json").exists()  # the earlier one would pass for this one


def test_a_leftover_last_old_never_blocks_a_checkpoint(tmp_path, mvtec):
    """A crash after ``last → last.old`` and ``last.tmp → last`` but before ``last.old`` was
    removed leaves both; the next checkpoint must not fail on it ("Directory not empty")."""
    from tiny import TINY_DIFFUSIONAD

    data, run = DataSpec("mvtec", str(mvtec), "bottle"), tmp_path / "run"
    train(run, TINY_DIFFUSIONAD, _tcfg(), data, stop_after=2)
    old = run / "checkpoints" / "last.old"
    old.mkdir()
    (old / "state.json").write_text("{}")
    train(run, TINY_DIFFUSIONAD, _tcfg(), data, resume=True)
    assert RunFolder(run).finished and not old.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_planted_pickle_runs_neither_through_ensure_trained_nor_in_the_vae_stage(tmp_path, mvtec):
    """What notebooks and reproduce call (ensure_trained: resumes automatically, no flag) and
    DeCo-Diff's autoencoder stage load checkpoints the same safe way."""
    from tiny import TINY_DECODIFF, TINY_DIFFUSIONAD

    from n2n_core.train import ensure_trained

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    data = DataSpec("mvtec", str(mvtec), "bottle")
    run = tmp_path / "dad"
    train(run, TINY_DIFFUSIONAD, _tcfg(), data, stop_after=2)
    (run / "checkpoints" / "last" / "optimizer.pt").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="cannot load the checkpoint"):
        ensure_trained(run, TINY_DIFFUSIONAD, _tcfg(), data)
    deco = tmp_path / "deco"
    train(deco, TINY_DECODIFF, _tcfg(steps=2), data, stop_after=1)  # inside the VAE stage
    stage = deco / "checkpoints" / "vae"
    assert (stage / "state.json").is_file() and not (deco / "vae").exists()
    (stage / "optimizer.pt").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match=r"cannot load the checkpoint .*checkpoints/vae"):
        train(deco, TINY_DECODIFF, _tcfg(steps=2), data, resume=True)
    assert not marker.exists()


def test_a_text_file_given_as_an_official_checkpoint_is_one_line(tmp_path, capsys):
    from n2n_core import cli

    (tmp_path / "c.pt").write_text("not a checkpoint")
    args = ["import-official", "decodiff", str(tmp_path / "c.pt"), "--config", "UNet_XS"]
    assert cli.main([*args, "--out", str(tmp_path / "run")]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "is not a checkpoint torch can read safely" in out[0]
    assert not (tmp_path / "run").exists()


def test_pickles_planted_beside_a_valid_checkpoint_are_never_read(tmp_path, mvtec):
    """The stealthy variant: accelerate's file names added to a good checkpoint; the run
    resumes and finishes as if they were not there."""
    from tiny import TINY_DIFFUSIONAD

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    data, run = DataSpec("mvtec", str(mvtec), "bottle"), tmp_path / "run"
    train(tmp_path / "straight", TINY_DIFFUSIONAD, _tcfg(), data)
    train(run, TINY_DIFFUSIONAD, _tcfg(), data, stop_after=2)
    last = run / "checkpoints" / "last"
    for name in ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl"):
        (last / name).write_bytes(pickle.dumps(Payload()))
    train(run, TINY_DIFFUSIONAD, _tcfg(), data, resume=True)
    assert not marker.exists()
    log = (run / "train_log.jsonl").read_text()
    assert log == (tmp_path / "straight" / "train_log.jsonl").read_text()
