"""benchmarks/photos_bench.py refuses a category outside its part before training anything."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "photos_bench.py"


def _bench():
    spec = importlib.util.spec_from_file_location("photos_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "argv, wrong",
    [
        (["--part", "confirmation", "--categories", "portrait", "espresso"], "portrait"),
        (["--categories", "galaxies"], "galaxies"),
    ],
)
def test_a_category_of_the_other_part_is_refused_up_front(argv, wrong, capsys, monkeypatch):
    bench = _bench()
    monkeypatch.setattr(bench, "bench", lambda *a, **k: pytest.fail("trained before checking"))
    with pytest.raises(SystemExit) as exc:
        bench.main(["--methods", "diffusionad", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--categories {wrong} not in" in err and "its categories:" in err
