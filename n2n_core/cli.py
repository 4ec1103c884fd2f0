"""Command line: ``python -m n2n_core <command> ...`` (also installed as ``n2n``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from n2n_core.profiles import PROFILES


def _notebooks(args: argparse.Namespace) -> int:
    from n2n_core import runner

    kwargs = {"notebooks_dir": args.notebooks_dir} if args.notebooks_dir else {}
    if args.inplace:
        runner.execute_in_place(only=args.only, **kwargs)
        return 0
    params = dict(runner.parse_param(p) for p in args.param)
    rows = runner.run_notebooks(args.profile, args.out, only=args.only, parameters=params, **kwargs)
    failed = [r["notebook"] for r in rows if r["status"] != "ok"]
    if failed:
        print(f"[n2n] failed: {', '.join(map(str, failed))}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m n2n_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    nb = sub.add_parser("notebooks", help="run notebooks/NN_*.ipynb headless via papermill")
    nb.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    nb.add_argument("--out", help="folder for executed copies + summary (runs/<profile>)")
    nb.add_argument("--only", nargs="*", default=[], help="notebook name prefixes, e.g. 01 04")
    nb.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra papermill parameter; must be declared by every notebook run",
    )
    nb.add_argument("--notebooks-dir", help="where the notebooks are (default: the repo's)")
    nb.add_argument(
        "--inplace",
        action="store_true",
        help="re-execute the committed notebooks in place (refresh stored outputs)",
    )
    nb.set_defaults(func=_notebooks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}")
        return 2
