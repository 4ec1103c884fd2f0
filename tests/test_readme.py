"""Every command quoted in the README, CONTRIBUTING.md and docs/ works as written: each line of
their ``bash`` code blocks is parsed by the real argument parser of what it runs (the CLI's,
a benchmark script's, make's targets, pyproject's extras) without executing it, so a renamed
or removed flag fails here instead of on a reader's machine."""

from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

from n2n_core import cli

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
# commands that are the reader's own tools, not n2n's: checked only for what n2n promises
PLAIN = {"git", "cd", "source", "jupyter", "conda", "accelerate-config", "apt-get", "sudo"}


def commands(text: str) -> list[str]:
    """The command lines of a markdown text's ```bash blocks: continuation lines joined,
    comments and blank lines dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                out.append(line)
    return out


class _Parsed(Exception):
    pass


def _parse_script(path: Path, argv: list[str]) -> None:
    """Run a script's argparse on ``argv`` and stop before it does any work."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)  # exits 2 on a bad flag
        raise _Parsed

    old_argv, sys.argv = sys.argv, [str(path), *argv]
    argparse.ArgumentParser.parse_args = parse_then_stop  # type: ignore[method-assign]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except _Parsed:
        return
    except SystemExit as exc:
        raise AssertionError(f"{path.name} refuses {argv}") from exc
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
        sys.argv = old_argv
    raise AssertionError(f"{path.name} parsed no arguments")


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, re.M))


def _extras() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(meta["optional-dependencies"])


def check(line: str) -> None:
    """Raise AssertionError if ``line`` would not be accepted as written."""
    words = shlex.split(line.replace("\\", "/"))
    while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
        words = words[1:]
    head = Path(words[0]).name
    if head in {"python", "python3", "n2n"} and (
        words[0] == "n2n" or words[1:3] == ["-m", "n2n_core"]
    ):
        argv = words[1:] if words[0] == "n2n" else words[3:]
        try:
            cli.build_parser().parse_args(argv)
        except cli.UsageError as exc:
            raise AssertionError(f"{line!r}: {exc}") from None
    elif head == "accelerate":  # accelerate launch [its options] -m n2n_core ARGS
        check("python " + " ".join(words[words.index("-m") :]))
    elif head in {"python", "python3"} and words[1] == "-m" and words[2] in {"venv", "pytest"}:
        pass
    elif head in {"python", "python3"} and words[1].endswith(".py"):
        script = ROOT / words[1]
        assert script.is_file(), f"{line!r}: no {words[1]}"
        _parse_script(script, words[2:])
    elif head == "bash":
        assert (ROOT / words[1]).is_file(), f"{line!r}: no {words[1]}"
    elif head == "make":
        targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
        unknown = set(targets) - _make_targets()
        assert not unknown, f"{line!r}: the Makefile has no target(s) {sorted(unknown)}"
    elif head in {"pip", "pip3"} or words[1:3] == ["-m", "pip"]:
        for extra in re.findall(r"\.\[([a-z,]+)\]", line):
            unknown = set(extra.split(",")) - _extras()
            assert not unknown, f"{line!r}: pyproject.toml has no extra(s) {sorted(unknown)}"
    elif head in PLAIN:
        pass
    else:
        raise AssertionError(f"{line!r}: not a command this test knows how to check")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_quoted_command_parses(doc):
    lines = commands(doc.read_text(encoding="utf-8"))
    assert lines or doc.name != "README.md", "the README quotes no command"
    for line in lines:
        check(line)


def test_a_renamed_flag_fails():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    good = [c for c in commands(readme) if "n2n_core reproduce" in c and "--profile" in c]
    assert good, "the README quotes a reproduce command with --profile"
    check(good[0])
    for bad in (good[0].replace("--profile", "--profiles"), good[0].replace("reproduce", "reprod")):
        with pytest.raises(AssertionError, match="--help lists the options"):
            check(bad)
    with pytest.raises(AssertionError, match="no target"):
        check("make test-fastest")
    with pytest.raises(AssertionError, match="no extra"):
        check('pip install -e ".[notebook]"')
    with pytest.raises(AssertionError, match="refuses"):
        check("python benchmarks/photos_bench.py --methodz diffusionad")


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    first_screen = "\n".join(text.splitlines()[:60])
    for needed in ("## Prerequisites", "## Quick start", "make test-fast", "min"):
        assert needed in first_screen, needed
    # measurements live in benchmarks/RESULTS.md, not here
    assert not re.search(r"issue #\d+|AVX|seed 0 with|this round", text, re.I)
