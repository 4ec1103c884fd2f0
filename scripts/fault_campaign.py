"""A fault campaign: misuse and damage a user meets, each run through ``python -m n2n_core`` in a
scratch folder, with a verdict per case.

    python scripts/fault_campaign.py            # prints one row per case and a tally

A case states what a good outcome is (exit code, one line naming something, files intact);
the verdict is ``OK`` when it holds, else ``unclear`` (an error, but not naming what it should),
``traceback`` (an unhandled error), ``silently wrong`` (exit 0 where it should fail, or a file
changed that must not be) or ``stuck`` (a second, correct attempt still fails). Needs no data
or network: the MVTec-layout fixture is written locally.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Case:
    name: str
    args: Callable[[Path], list[str]]  # the command line, given the scratch folder
    rc: int  # 0: it must work; else it must fail (any non-zero exit) in one line
    says: str = ""  # what its one line must contain (empty: exit code only)
    prepare: Callable[[Path], None] | None = None
    after: Callable[[Path], str] | None = None  # "" when the files are as they must be


def _n2n(args: list[str], cwd: Path) -> tuple[int, str]:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "n2n_core", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)  # fmt: skip
    return done.returncode, (done.stdout + done.stderr).strip()


def _base(tmp: Path) -> list[str]:
    return ["--data", "mvtec", "--root", str(tmp / "mvtec"), "--category", "bottle"]


def _pk(tmp: Path, out: str = "pk") -> list[str]:
    return [
        "train",
        "--method",
        "patchknn",
        *_base(tmp),
        "--image-size",
        "32",
        "--out",
        str(tmp / out),
    ]


def _edit_run(key: str, value: object) -> Callable[[Path], None]:
    def edit(tmp: Path) -> None:
        path = tmp / "pk" / "run.json"
        d = json.loads(path.read_text())
        part, _, field = key.partition(".")
        if field:
            d[part][field] = value
        else:
            d[part] = value
        path.write_text(json.dumps(d))

    return edit


def _write(rel: str, data: bytes) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)

    return write


CASES = [
    Case("run.json is a JSON list", lambda t: ["evaluate", str(t / "pk")], 2, "run.json",
         _write("pk/run.json", b"[1, 2]")),
    Case("run.json names an unknown method", lambda t: ["evaluate", str(t / "pk")], 2,
         "unknown method 'nosuch'", _edit_run("method", "nosuch")),
    Case("evaluate a file, not a folder",  # its run.json is looked for first
         lambda t: ["evaluate", str(t / "mvtec/bottle/train/good/000.png")], 2,
         "not a training run folder"),
    Case("--out is an existing file", lambda t: [*_pk(t, "afile")], 1, "afile is a file",
         _write("afile", b"x")),
    Case("a category the dataset lacks", lambda t: [*_pk(t, "x")[:-6], "--category", "nope",
         "--image-size", "32", "--out", str(t / "x")], 2, "nope"),
    Case("patchknn with an even patch", lambda t: [*_pk(t, "x"), "--set", "model.patch=4"], 2,
         "patch must be an odd number"),
    Case("evaluate --set an unknown inference setting", lambda t: ["evaluate", str(t / "pk"),
         "--set", "lambdas=(100,)"], 2, "no setting 'lambdas'"),
    Case("model.safetensors emptied", lambda t: ["evaluate", str(t / "pk")], 2,
         "model.safetensors", _write("pk/model.safetensors", b"")),
    Case("resume with another seed", lambda t: [*_pk(t), "--resume", "--seed", "5"], 2,
         "train.seed"),
    Case("the dataset moved after training", lambda t: ["evaluate", str(t / "pk")], 2,
         "does not exist", _edit_run("data.root", "/nonexistent/mvtec")),
    Case("reproduce an unknown target", lambda t: ["reproduce", "nosuch-target"], 2,
         "invalid choice"),
    Case("reproduce an unknown category", lambda t: ["reproduce", "patchknn-mvtec", "--root",
         str(t / "mvtec"), "--categories", "nope", "--runs", str(t / "rp")], 2, "nope"),
    Case("data for a category that does not exist", lambda t: ["data", "mvtec", "--root",
         str(t / "mvtec"), "--category", "nope"], 2, "nope"),
    Case("download into a file", lambda t: ["download", "dtd", "--root", str(t / "afile2")], 1,
         "afile2", _write("afile2", b"x")),
    Case("notebooks --only a prefix that matches none", lambda t: ["notebooks", "--only", "99"],
         2, "99"),
    Case("a lock left by a killed evaluate", lambda t: ["evaluate", str(t / "pk")], 0, "",
         _write("pk/.lock", json.dumps({"pid": 999_999_999, "host": os.uname().nodename,
                                        "purpose": "evaluate"}).encode())),
    Case("a lock left half-written a minute ago", lambda t: ["evaluate", str(t / "pk")], 0, "",
         lambda t: (_write("pk/.lock", b"")(t), os.utime(t / "pk/.lock", (time.time() - 60,) * 2))),
    Case("--batch-size larger than the training set", lambda t: [*_pk(t, "big"),
         "--batch-size", "64"], 0),
    Case("train --resume on an empty folder", lambda t: [*_pk(t, "empty"), "--resume"], 2,
         "nothing to resume", lambda t: (t / "empty").mkdir()),
    Case("evaluate keeps scores of an earlier run intact on refusal",
         lambda t: ["evaluate", str(t / "pk"), "--top-k", "0"], 2, "--top-k",
         after=lambda t: "" if (t / "pk" / "scores.csv").is_file() else "scores.csv lost"),
]  # fmt: skip


def _verdict(case: Case, rc: int, out: str, tmp: Path) -> str:
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("[n2n]")]
    if "Traceback" in out:
        return "traceback"
    if case.rc != 0 and rc == 0:
        return "silently wrong"
    if case.rc == 0 and rc != 0:
        return f"failed (exit {rc})"
    if case.after and (problem := case.after(tmp)):
        return f"silently wrong ({problem})"
    if case.rc != 0 and (len(lines) != 1 or case.says not in lines[0]):
        return "unclear"
    return "OK"


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from n2n_core.data import fixtures

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        fixtures.write_mvtec(base / "mvtec", categories=("bottle",), n_train=4, n_test=2, size=32)
        rc, out = _n2n(_pk(base), base)
        assert rc == 0, out
        assert _n2n(["evaluate", str(base / "pk")], base)[0] == 0
        for case in CASES:
            tmp = base / f"case{len(rows)}"
            shutil.copytree(base, tmp, ignore=shutil.ignore_patterns("case*"))
            if case.prepare:
                case.prepare(tmp)
            rc, out = _n2n(case.args(tmp), tmp)
            verdict = _verdict(case, rc, out, tmp)
            rows.append((case.name, verdict, out.splitlines()[-1] if out else ""))
            print(f"{verdict:<16} {case.name}: {rows[-1][2][:150]}", flush=True)
    tally: dict[str, int] = {}
    for _, v, _ in rows:
        tally[v.split(" (")[0]] = tally.get(v.split(" (")[0], 0) + 1
    print("tally:", ", ".join(f"{k} {n}" for k, n in sorted(tally.items())))
    return 0 if all(v == "OK" for _, v, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
