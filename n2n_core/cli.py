"""Command line: ``python -m n2n_core <command> ...`` (also installed as ``n2n``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from n2n_core.options import TRAIN_OPTIONS, Option
from n2n_core.options import positive as _positive
from n2n_core.paths import default_root
from n2n_core.profiles import PROFILES


class UsageError(ValueError):
    """A command line argparse refuses; :func:`main` prints it as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``main`` prints them), not usage + error."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} ({self.prog} --help lists the options)")


def _folder(text: str) -> str:
    """A folder argument that names a folder: '' would silently mean the current one."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty name")
    return text


def _root(given: str | None, source: str) -> str:
    """A dataset's root: the one given, else ``<default root>/<source>`` (never another
    dataset's folder)."""
    return given or str(default_root() / source)


def _need_notebook_tools(command: str) -> None:
    """``notebooks``, ``reproduce`` and ``book`` run notebooks: without the extra, say so."""
    import importlib.util

    missing = [m for m in ("papermill", "nbformat", "nbconvert") if not importlib.util.find_spec(m)]
    if missing:
        raise ModuleNotFoundError(
            f"`{command}` needs the notebook tools ({', '.join(missing)} missing): "
            "pip install 'n2n_core[notebooks]' (in a checkout: pip install -e '.[notebooks]')"
        )


def _notebooks(args: argparse.Namespace) -> int:
    from n2n_core import runner

    _need_notebook_tools("notebooks")

    kwargs = {"notebooks_dir": args.notebooks_dir} if args.notebooks_dir else {}
    ignored = [f for f, on in (("--profile", args.profile != "smoke"), ("--param", args.param),
                               ("--out", args.out)) if on]  # fmt: skip
    if args.inplace and ignored:
        raise ValueError(
            f"--inplace re-executes the committed notebooks with the smoke profile into "
            f"themselves: {', '.join(ignored)} cannot apply (drop --inplace to run elsewhere)"
        )
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
    from n2n_core.data import is_texture, list_categories, load_samples
    from n2n_core.data.dataset import load_pair
    from n2n_core.data.readers import GENERATED, ensure_generated_source

    root = _root(args.root, args.source)
    if args.source in GENERATED:
        print(f"[n2n] {args.source} dataset at {ensure_generated_source(args.source, root)}")
    cats = args.category or list_categories(args.source, root)
    if not cats:
        raise ValueError(
            f"no {args.source} categories under {root}: is it the dataset's root folder "
            "(docs/data.md shows each layout)?"
        )
    for cat in cats:
        train = load_samples(args.source, root, cat, "train")
        test = load_samples(args.source, root, cat, "test")
        if not args.no_open:  # decode every image and mask: corrupt files, mismatched pairs
            for s in train + test:
                load_pair(s)
        defects = sorted({s.defect for s in test if s.label})
        kind = "texture" if is_texture(args.source, cat, root) else "object"
        print(
            f"{cat:<14} {kind:<8} train {len(train):>4}   test {len(test):>4} "
            f"({sum(s.label for s in test)} anomalous: {', '.join(defects)})"
            + ("" if args.no_open else "  every file opened")
        )
    return 0


def _settings(items: list[str]) -> dict[str, object]:
    """``--set KEY=VALUE`` items as a dict; values are Python literals where they parse."""
    from n2n_core.runner import parse_param

    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        out[key] = parse_param(f"x={raw}")[1]
    return out


def _given(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, object]:
    """setting → value of the options given on the command line (None: not given, the
    profile's or the method's default stands; 0 cannot get here)."""
    values = {o.setting: o.value(getattr(args, o.dest, None)) for o in options}
    return {k: v for k, v in values.items() if v is not None}


def _method_flags(
    args: argparse.Namespace, method: str, offered: Callable[[Option], bool] = lambda o: True
) -> dict[str, object]:
    """The settings ``method``'s own options (those ``offered``) were given on the command
    line; a flag of another method is an error naming whose it is."""
    from n2n_core import methods

    own = [o for o in methods.get(method).options if offered(o)]
    dests = {o.dest for o in own}
    for name in methods.names():
        for o in methods.get(name).options:
            if o.dest not in dests and getattr(args, o.dest, None) is not None:
                raise ValueError(f"{o.flag} is an option of {name}, not of {method}")
    return _given(args, own)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings given on the command line (``train``)."""
    return _given(args, TRAIN_OPTIONS) | _method_flags(args, args.method) | _settings(args.set)


def _train(args: argparse.Namespace) -> int:
    from n2n_core import methods
    from n2n_core.train import DataSpec, TrainingDiverged, categories_of, train

    method = methods.get(args.method)
    if args.category is None:
        if method.per_category:
            print(f"error: --category is required for {args.method} (one model per category)")
            return 2
        args.category = "all"
    overrides = _overrides(args)
    root = _root(args.root, args.data)
    # stored absolute, so that evaluate works from any directory
    data = DataSpec(args.data, str(Path(root).resolve()), args.category, args.foreground_dir)
    model, tcfg = methods.resolve(
        args.method, args.profile, args.data, categories_of(data), overrides
    )
    if args.plan:
        return _train_plan(args, model, tcfg, data)
    if args.dry_run is not None:
        return _dry_run(args, model, tcfg, data)
    if args.out is None:
        raise ValueError("train needs --out (a run folder), except with --dry-run or --plan")
    try:
        summary = train(args.out, model, tcfg, data, resume=args.resume)
    except TrainingDiverged as exc:
        print(f"error: {exc}")
        return 3
    info = Path(args.out) / "train_info.json"
    if "seconds" in summary and info.is_file():  # over every resumed segment
        seconds = json.loads(info.read_text())["seconds"]
        print(f"[n2n] trained {summary['steps']} steps in {seconds:.0f} s -> {args.out}")
    return 0


def _dry_run(args: argparse.Namespace, model: Any, tcfg: Any, data: Any) -> int:
    from n2n_core.dry_run import dry_run, format_dry_run

    if args.keep and args.out is None:
        raise ValueError("--keep needs --out: the folder to keep the dry run in")
    result = dry_run(model, tcfg, data, args.dry_run, keep=args.out if args.keep else None)
    print(format_dry_run(result))
    return 0


def _train_plan(args: argparse.Namespace, model: Any, tcfg: Any, data: Any) -> int:
    """``train … --plan``: ``plan`` for this configuration and the data's own image counts."""
    from n2n_core.data import load_samples
    from n2n_core.plan import format_plan, plan_config
    from n2n_core.train import categories_of

    cats = tuple(categories_of(data))
    n_train, n_test = (
        sum(len(load_samples(data.source, data.root, c, split)) for c in cats)
        for split in ("train", "test")
    )
    label = f"{args.method} on {data.source} {data.category}"
    print(format_plan(plan_config(args.method, model, tcfg, cats, n_train, n_test, None, label,
                                  args.profile)))  # fmt: skip
    return 0


def _plan(args: argparse.Namespace) -> int:
    from n2n_core.plan import format_plan, plan

    for target in args.targets:
        print(format_plan(plan(target, args.profile, tuple(args.gpu or ()) or None)) + "\n")
    return 0


def _import_official(args: argparse.Namespace) -> int:

    from n2n_core import methods
    from n2n_core.train import DataSpec, import_official

    root = _root(args.root, args.data)
    data = DataSpec(args.data, str(Path(root).resolve()), "all")
    options = _given(args, methods.get(args.method).import_options)
    import_official(args.out, args.method, args.checkpoint, data, **options)
    print(f"[n2n] imported {args.checkpoint} -> {args.out}; next: python -m n2n_core evaluate RUN")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from n2n_core.evaluate import evaluate_run

    overrides = _settings(args.set)
    if args.lambdas:
        overrides["lambdas"] = tuple(args.lambdas)
    if args.top_k is not None:
        overrides["top_k"] = args.top_k
    metrics = evaluate_run(
        args.run_dir, args.seed, overrides=overrides or None, on_write_error="raise"
    )
    for k, v in metrics.items():
        print(f"{k:<13} {v:.4f}")
    print(
        f"[n2n] wrote {args.run_dir}/metrics.json, metrics_per_category.csv, scores.csv, "
        "figures/samples.png"
    )
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    """Train, evaluate and compare the target in this process (``reproduce.reproduce``, which
    notebooks 10 and 11 call too)."""
    from n2n_core import methods
    from n2n_core.reproduce import TARGETS, report_folder, reproduce

    method = TARGETS[args.target].method
    options = {}
    if args.weights:  # the method's import-official options, as given
        options = _given(args, methods.get(method).import_options)
    overrides = _method_flags(args, method, lambda o: o.reproduce)
    if args.steps is not None:
        overrides["train.steps"] = args.steps
    table = reproduce(
        args.target, profile=args.profile, root=args.root, runs=args.runs,
        categories=args.categories or None, overrides=overrides or None,
        download=args.download, seed=args.seed, tables=args.tables, weights=args.weights,
        weights_options=options, foreground_dir=args.foreground_dir,
    )  # fmt: skip
    for row, m in table.items():
        print(f"[n2n] {row}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    out = report_folder(args.target, args.profile, args.runs, bool(args.weights))
    print(f"[n2n] report: {out / 'report.md'}")
    return 0


def _book(args: argparse.Namespace) -> int:
    from n2n_core.book import build_book

    _need_notebook_tools("book")
    index = build_book(args.out)
    print(f"[n2n] book: {index}")
    return 0


def _add_set(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def _add_method_options(
    parser: argparse.ArgumentParser, attr: str, offered: Callable[[Option], bool] = lambda o: True
) -> None:
    """Each registered method's options (``Method.options`` / ``import_options``; those
    ``offered``) in a group named after it; a flag that two methods share is added once."""
    from n2n_core import methods

    seen = {a.dest for a in parser._actions}
    for name in methods.names():
        group = None
        for option in getattr(methods.get(name), attr):
            if option.dest not in seen and offered(option):
                group = group or parser.add_argument_group(name)
                option.add_to(group)
                seen.add(option.dest)


def _notebook_commands(sub: argparse._SubParsersAction) -> None:
    nb = sub.add_parser("notebooks", help="run notebooks/NN_*.ipynb headless via papermill")
    nb.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    nb.add_argument("--out", help="folder for executed copies + summary (runs/<profile>)")
    nb.add_argument("--only", nargs="*", default=[], help="notebook name prefixes, e.g. 01 04")
    nb.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="extra papermill parameter; must be declared by every notebook run",
    )  # fmt: skip
    nb.add_argument("--notebooks-dir", help="where the notebooks are (default: the repo's)")
    nb.add_argument(
        "--inplace", action="store_true",
        help="re-execute the committed notebooks in place (refresh stored outputs)",
    )  # fmt: skip
    nb.set_defaults(func=_notebooks)
    bk = sub.add_parser("book", help="render the committed notebooks to a static HTML book")
    bk.add_argument("--out", default="book", help="output folder (default: book)")
    bk.set_defaults(func=_book)


def _data_commands(sub: argparse._SubParsersAction) -> None:
    from n2n_core.data.readers import SOURCES

    dl = sub.add_parser("download", help="download, verify and unpack a dataset")
    dl.add_argument("dataset", choices=["mvtec", "visa", "dagm", "dtd"])
    dl.add_argument(
        "--root", default=str(default_root()), help=f"datasets folder (default: {default_root()})"
    )
    dl.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives")
    dl.set_defaults(func=_download)
    da = sub.add_parser(
        "data", help="list a dataset's categories and split sizes (checks it); builds the "
        "embedded ones (synthetic, photos) first",
    )  # fmt: skip
    da.add_argument("source", choices=SOURCES)
    da.add_argument("--root", help="dataset root (default: data/<source>)")
    da.add_argument("--category", nargs="*", default=[])
    da.add_argument(
        "--no-open", action="store_true", help="only list the files (default: decode each one)"
    )
    da.set_defaults(func=_data)


def _train_command(sub: argparse._SubParsersAction, with_methods: bool) -> None:
    from n2n_core import methods
    from n2n_core.data.readers import SOURCES

    tr = sub.add_parser("train", help="train a method into a run folder")
    tr.add_argument("--method", choices=methods.names(), default=methods.DEFAULT)
    tr.add_argument("--data", choices=SOURCES, default="synthetic")
    tr.add_argument(
        "--root", help="dataset root (default: data/<data>, data/synthetic for synthetic)"
    )
    tr.add_argument(
        "--category", help="a category, or 'all' (one model for every category; the default "
        "of methods that train one model for all)",
    )  # fmt: skip
    tr.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    tr.add_argument("--out", type=_folder, help="run folder")
    tr.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last")
    tr.add_argument(
        "--dry-run", type=_positive(int), nargs="?", const=2, metavar="N",
        help="N optimiser steps (default 2) of this configuration in a temporary folder: "
        "seconds per step, peak memory, activation bytes; nothing is kept (see --keep)",
    )  # fmt: skip
    tr.add_argument("--keep", action="store_true", help="with --dry-run: keep it in --out")
    tr.add_argument(
        "--plan", action="store_true", help="print the parameters, FLOPs, memory and hours "
        "per GPU of this configuration (as the plan command), and train nothing",
    )  # fmt: skip
    for option in TRAIN_OPTIONS:
        option.add_to(tr)
    tr.add_argument("--foreground-dir", help="precomputed foreground masks <stem>.png")
    _add_set(tr, "any setting, e.g. train.lr=3e-4 or model.vae.steps=300 (unknown keys are "
             "refused with the valid ones)")  # fmt: skip
    if with_methods:
        _add_method_options(tr, "options")
    tr.set_defaults(func=_train)


def _run_commands(sub: argparse._SubParsersAction, with_methods: bool) -> None:
    from n2n_core import methods
    from n2n_core.data.readers import SOURCES

    ev = sub.add_parser("evaluate", help="a run on its test split -> RUN_DIR/metrics.json")
    ev.add_argument("run_dir")
    ev.add_argument("--lambdas", type=_positive(int), nargs="+")
    ev.add_argument("--top-k", type=_positive(int))
    ev.add_argument("--seed", type=int, default=0)
    _add_set(ev, "an inference setting of the run's model config, e.g. reverse_steps=10")
    ev.set_defaults(func=_evaluate)
    im = sub.add_parser(
        "import-official", help="a run folder from a checkpoint released by a paper's authors"
    )
    im.add_argument("method", choices=methods.names())
    im.add_argument("checkpoint", help="the released file, e.g. DeCo-Diff's {'model': state_dict}")
    im.add_argument("--data", default="mvtec", choices=SOURCES, help="the dataset to evaluate on")
    im.add_argument("--root", help="dataset root (default: data/<data>)")
    im.add_argument("--out", required=True, type=_folder, help="the run folder to write")
    if with_methods:
        _add_method_options(im, "import_options")
    im.set_defaults(func=_import_official)


def _plan_command(sub: argparse._SubParsersAction) -> None:
    from n2n_core.plan import CARDS
    from n2n_core.reproduce import TARGETS

    pl = sub.add_parser(
        "plan", help="a target's parameters, FLOPs, memory and hours per GPU, before training"
    )
    pl.add_argument("targets", nargs="+", choices=sorted(TARGETS), metavar="TARGET")
    pl.add_argument("--profile", choices=("paper", "official"), default="paper")
    pl.add_argument("--gpu", nargs="*", choices=sorted(CARDS), help="cards (default: all)")
    pl.set_defaults(func=_plan)


def _reproduce_command(sub: argparse._SubParsersAction, with_methods: bool) -> None:
    from n2n_core.reproduce import TARGETS

    rp = sub.add_parser("reproduce", help="rerun a paper table: train, evaluate, compare")
    rp.add_argument("target", choices=sorted(TARGETS))
    rp.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    rp.add_argument("--root", help="dataset root (default: data/<dataset>)")
    rp.add_argument("--runs", help="output folder (default: runs/<profile>/<target>)")
    rp.add_argument("--categories", nargs="*", help="a subset (default: every category)")
    rp.add_argument(
        "--steps", type=_positive(int), help="override the training length (quick checks)"
    )
    rp.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    rp.add_argument(
        "--foreground-dir", help="precomputed foreground masks: <dir>/<category>/<stem>.png"
    )
    rp.add_argument(
        "--download", action="store_true", help="download the dataset first if it is missing"
    )
    rp.add_argument(
        "--weights", help="evaluate the authors' released checkpoint instead of training, "
        "with the method's import-official options",
    )  # fmt: skip
    rp.add_argument(
        "--tables", nargs="*", help="ablation targets: a subset of the paper tables, e.g. "
        "diffusionad_table4 (default: all of the method's)",
    )  # fmt: skip
    if with_methods:
        _add_method_options(rp, "import_options")
        _add_method_options(rp, "options", lambda o: o.reproduce)
    rp.set_defaults(func=_reproduce)


def build_parser(with_methods: bool = True) -> argparse.ArgumentParser:
    """The command line; ``with_methods``: add every registered method's own options (imports
    each method; commands that need none start faster without)."""
    parser = _Parser(prog="python -m n2n_core", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="show an error's full traceback (anywhere on the line)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _notebook_commands(sub)
    _data_commands(sub)
    _train_command(sub, with_methods)
    _run_commands(sub, with_methods)
    _reproduce_command(sub, with_methods)
    _plan_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from n2n_core.train import TrainingInterrupted

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line
    try:
        argv = [a for a in argv if a != "--debug"]
        command = next((a for a in argv if not a.startswith("-")), None)
        with_methods = command in (None, "train", "import-official", "reproduce", "plan")
        args = build_parser(with_methods).parse_args(argv)
        return args.func(args)
    except TrainingInterrupted as exc:  # Ctrl-C / SIGTERM: the checkpoint is saved
        print(f"[n2n] {exc}")
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("[n2n] interrupted")
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, ModuleNotFoundError) as exc:
        if debug:
            raise
        print(f"error: {exc}")
        return 2
    except Exception as exc:  # one line; the traceback with --debug
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (--debug shows the traceback)")
        return 1
