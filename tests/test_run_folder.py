"""A run folder has one owner (``RunFolder``), one Accelerator trains it, and its checkpoints
load without running code."""

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
