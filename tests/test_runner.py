"""The papermill runner on small fixture notebooks (real kernels, no network)."""

import json

import nbformat
import pytest

from n2n_core import cli, runner


def _notebook(path, params_src, body_src, tagged=True):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(params_src)
    if tagged:
        params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body_src)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


@pytest.fixture
def nb_dir(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    _notebook(
        d / "01_ok.ipynb",
        'profile = "smoke"\nscale = 2\ninteractive = True',
        "from n2n_core.runner import report\n"
        "assert interactive is False\n"
        "report(size={'smoke': 64, 'paper': 256}[profile] * scale, name=profile)",
    )
    _notebook(d / "02_broken.ipynb", 'profile = "smoke"\nscale = 1', "raise RuntimeError('boom')")
    (d / "notes.ipynb").write_text("{}")  # not NN_*: ignored
    return d


def test_discover_orders_and_filters(nb_dir):
    assert [p.name for p in runner.discover(nb_dir)] == ["01_ok.ipynb", "02_broken.ipynb"]
    assert [p.name for p in runner.discover(nb_dir, ["02"])] == ["02_broken.ipynb"]
    with pytest.raises(ValueError, match="starts with"):
        runner.discover(nb_dir, ["07"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        runner.discover(nb_dir / "missing")


def test_parse_param():
    assert runner.parse_param("scale=3") == ("scale", 3)
    assert runner.parse_param("root=/data/mvtec") == ("root", "/data/mvtec")
    assert runner.parse_param("cats=['a', 'b']") == ("cats", ["a", "b"])
    with pytest.raises(ValueError, match="name=value"):
        runner.parse_param("no-equals")


def test_run_collects_numbers_and_survives_a_failure(nb_dir, tmp_path):
    out = tmp_path / "runs"
    rows = runner.run_notebooks("paper", out, nb_dir, parameters={"scale": 3})
    ok, broken = rows
    assert ok["status"] == "ok" and ok["key_numbers"] == {"size": 768, "name": "paper"}
    assert broken["status"] == "failed" and "RuntimeError: boom" in broken["error"]
    assert (out / "02_broken.ipynb").exists()  # the executed copy shows the failing cell
    summary = json.loads((out / "summary.json").read_text())
    assert summary["profile"] == "paper" and [r["status"] for r in summary["notebooks"]] == [
        "ok",
        "failed",
    ]
    md = (out / "summary.md").read_text()
    assert "size=768" in md and "**failed**" in md
    # what ran them: versions, device and commit, in both summaries
    import torch

    env = summary["environment"]
    assert env["versions"]["torch"] == torch.__version__ and env["device"] == "cpu"
    assert set(env["versions"]) >= {"python", "torch", "diffusers", "numpy", "scikit-learn"}
    assert f"torch {torch.__version__}" in md and "device cpu" in md
    # the committed notebooks are never written to
    committed = json.loads((nb_dir / "01_ok.ipynb").read_text())
    assert committed["cells"][1]["outputs"] == []


def test_a_dead_kernel_fails_its_notebook_only_and_the_summary_is_written(nb_dir, tmp_path):
    _notebook(nb_dir / "03_dies.ipynb", 'profile = "smoke"\nscale = 1', "import os\nos._exit(9)")
    _notebook(nb_dir / "04_after.ipynb", 'profile = "smoke"\nscale = 1', "x = 1")
    out = tmp_path / "runs"
    rows = runner.run_notebooks("smoke", out, nb_dir, only=["03", "04"])
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert "DeadKernelError" in rows[0]["error"] or "died" in rows[0]["error"].lower()
    summary = json.loads((out / "summary.json").read_text())
    assert [r["notebook"] for r in summary["notebooks"]] == ["03_dies.ipynb", "04_after.ipynb"]


def test_unknown_parameter_and_missing_parameters_cell_are_refused(nb_dir, tmp_path):
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['scal'\]"):
        runner.run_notebooks("smoke", tmp_path / "o", nb_dir, only=["01"], parameters={"scal": 1})
    _notebook(nb_dir / "03_untagged.ipynb", 'profile = "smoke"', "pass", tagged=False)
    with pytest.raises(ValueError, match="tagged 'parameters'"):
        runner.run_notebooks("smoke", tmp_path / "o", nb_dir, only=["03"])
    with pytest.raises(ValueError, match="profile must be one of"):
        runner.run_notebooks("fast", tmp_path / "o", nb_dir)
    # the profile only through --profile; a value of the wrong type before any kernel starts
    with pytest.raises(ValueError, match="--profile, not --param"):
        runner.run_notebooks("smoke", tmp_path / "o", nb_dir, parameters={"profile": "fast"})
    with pytest.raises(ValueError, match=r"scale='abc' must be int like its default 2"):
        runner.run_notebooks(
            "smoke", tmp_path / "o", nb_dir, only=["01"], parameters={"scale": "abc"}
        )
    assert not (tmp_path / "o" / "01_ok.ipynb").exists()


def test_cli_exit_codes(nb_dir, tmp_path, capsys):
    base = ["notebooks", "--notebooks-dir", str(nb_dir), "--out", str(tmp_path / "o")]
    assert cli.main([*base, "--only", "01"]) == 0
    assert cli.main(base) == 1  # 02 fails
    assert "failed: 02_broken.ipynb" in capsys.readouterr().out
    assert cli.main([*base, "--param", "nope=1"]) == 2


def test_in_place_stores_static_figures_counted_from_one(tmp_path):
    """Stored outputs are read statically (GitHub, the book): ``execute_in_place`` runs with
    ``interactive = False`` and keeps the parameters cell as written, counts 1, 2, 3."""
    d = tmp_path / "notebooks"
    d.mkdir()
    _notebook(d / "01_slider.ipynb", 'profile = "smoke"\ninteractive = True', "print(interactive)")
    nb_path = d / "01_slider.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("1 + 1"))
    nbformat.write(nb, nb_path)
    runner.execute_in_place(d)
    done = nbformat.read(nb_path, as_version=4)
    assert done.cells[0].source == 'profile = "smoke"\ninteractive = True'
    assert len(done.cells) == 3 and done.cells[1].outputs[0]["text"] == "False\n"
    assert [c.execution_count for c in done.cells] == [1, 2, 3]
    assert done.cells[2].outputs[0]["execution_count"] == 3


def test_a_notebook_without_a_kernelspec_is_named(nb_dir, tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params]
    nbformat.write(nb, nb_dir / "05_nokernel.ipynb")
    with pytest.raises(ValueError, match=r"05_nokernel\.ipynb: .*kernelspec"):
        runner.run_notebooks("smoke", tmp_path / "runs", nb_dir, only=["05"])
