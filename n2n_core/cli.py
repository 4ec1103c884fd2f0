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


def _download(args: argparse.Namespace) -> int:
    from n2n_core.data.download import DownloadError, download

    try:
        download(args.dataset, args.root, keep_archives=args.keep_archives)
    except DownloadError as exc:
        print(f"error: {exc}")
        return 1
    return 0


def _data(args: argparse.Namespace) -> int:
    from n2n_core.data import list_categories, load_samples
    from n2n_core.data.synthetic import ensure_synthetic

    if args.source == "synthetic":
        print(f"[n2n] embedded dataset at {ensure_synthetic(args.root)}")
    for cat in args.category or list_categories(args.source, args.root):
        train = load_samples(args.source, args.root, cat, "train")
        test = load_samples(args.source, args.root, cat, "test")
        defects = sorted({s.defect for s in test if s.label})
        print(f"{cat:<14} train {len(train):>4}   test {len(test):>4} "
              f"({sum(s.label for s in test)} anomalous: {', '.join(defects)})")  # fmt: skip
    return 0


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

    dl = sub.add_parser("download", help="download, verify and unpack a dataset")
    dl.add_argument("dataset", choices=["mvtec", "visa", "dagm", "dtd"])
    dl.add_argument("--root", default="data", help="datasets folder (default: data)")
    dl.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives")
    dl.set_defaults(func=_download)

    from n2n_core.data.readers import SOURCES

    da = sub.add_parser("data", help="list a dataset's categories and split sizes (checks it)")
    da.add_argument("source", choices=SOURCES)
    da.add_argument("--root", default="data/synthetic")
    da.add_argument("--category", nargs="*", default=[])
    da.set_defaults(func=_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # DatasetError is a ValueError
        print(f"error: {exc}")
        return 2
