"""Command line: ``python -m n2n_core <command> ...`` (also installed as ``n2n``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from n2n_core.paths import default_root
from n2n_core.profiles import PROFILES


class UsageError(ValueError):
    """A command line argparse refuses; :func:`main` prints it as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``main`` prints them), not usage + error."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} ({self.prog} --help lists the options)")


def _positive(kind: type) -> Callable[[str], float]:
    """An argparse type for numbers > 0: 0 and negatives are refused, never taken as 'unset'."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _folder(text: str) -> str:
    """A folder argument that names a folder: '' would silently mean the current one."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty name")
    return text


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

    root = args.root or str(default_root() / args.source)  # never another dataset's folder
    if args.source in GENERATED:
        print(f"[n2n] {args.source} dataset at {ensure_generated_source(args.source, root)}")
    for cat in args.category or list_categories(args.source, root):
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


# command-line shortcuts for common settings: option → dotted setting
_TRAIN_FLAGS = {
    "epochs": "train.epochs", "seed": "train.seed", "lr": "train.lr",
    "batch_size": "train.batch_size", "mixed_precision": "train.mixed_precision",
    "grad_accum": "train.grad_accum", "checkpoint_every": "train.checkpoint_every",
    "texture_dir": "train.texture_dir", "image_size": "model.image_size",
    "variant": "model.variant", "norm_guided": "model.norm_guided",
    "vae": "model.vae.pretrained", "vae_steps": "model.vae.steps",
    "strategy": "model.strategy", "reverse_steps": "model.reverse_steps",
    "anomaly_map": "model.anomaly_map",
}  # fmt: skip


def _train(args: argparse.Namespace) -> int:
    from n2n_core import methods
    from n2n_core.train import DataSpec, TrainingDiverged, categories_of, train

    method = methods.get(args.method)
    if args.category is None:
        if method.per_category:
            print(f"error: --category is required for {args.method} (one model per category)")
            return 2
        args.category = "all"
    # None and False mean "not given": the profile's value stands (0 cannot get here)
    overrides = {
        k: getattr(args, a)
        for a, k in _TRAIN_FLAGS.items()
        if getattr(args, a) not in (None, False)
    }
    if args.steps is not None:
        overrides["train.steps"] = args.steps
    if args.gradient_checkpointing:
        overrides["train.gradient_checkpointing"] = True
    if args.lambdas:
        overrides["model.lambdas"] = tuple(args.lambdas)
    if args.unconditional:
        overrides["model.classes"] = ()
    overrides |= _settings(args.set)
    root = args.root or str(default_root() / args.data)
    # stored absolute, so that evaluate works from any directory
    data = DataSpec(args.data, str(Path(root).resolve()), args.category, args.foreground_dir)
    model, tcfg = methods.resolve(
        args.method, args.profile, args.data, categories_of(data), overrides
    )
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


def _import_official(args: argparse.Namespace) -> int:

    from n2n_core.train import DataSpec, import_official

    root = args.root or str(default_root() / args.data)
    data = DataSpec(args.data, str(Path(root).resolve()), "all")
    import_official(
        args.out, args.method, args.checkpoint, args.config, args.classes, args.vae, data
    )
    print(f"[n2n] imported {args.checkpoint} -> {args.out}; next: python -m n2n_core evaluate RUN")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from n2n_core.evaluate import evaluate_run

    overrides = _settings(args.set)
    if args.lambdas:
        overrides["lambdas"] = tuple(args.lambdas)
    if args.top_k is not None:
        overrides["top_k"] = args.top_k
    metrics = evaluate_run(args.run_dir, args.seed, overrides=overrides or None)
    for k, v in metrics.items():
        print(f"{k:<13} {v:.4f}")
    print(
        f"[n2n] wrote {args.run_dir}/metrics.json, metrics_per_category.csv, scores.csv, "
        "figures/samples.png"
    )
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    """Execute notebook 10 (DiffusionAD) or 11 (DeCo-Diff) for the target with papermill."""

    from n2n_core import methods, runner
    from n2n_core.reproduce import TARGETS, check, released_folder, reproduce, run_folder

    t = TARGETS[args.target]
    folder = released_folder if args.weights else run_folder
    out = Path(args.runs or folder(args.target, args.profile)).resolve()
    notebook = methods.get(t.method).reproduce_notebook
    steps = {"train.steps": args.steps} if args.steps is not None else None
    if notebook is None or t.ablations or args.weights:  # the same steps in-process
        table = reproduce(
            args.target, args.profile, args.root, out, args.categories or None, steps,
            args.download, args.seed, args.tables, args.weights, args.config, args.vae,
            args.texture_dir, args.foreground_dir,
        )  # fmt: skip
        for row, m in table.items():
            print(f"[n2n] {row}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
        print(f"[n2n] report: {out / 'report.md'}")
        return 0
    if args.tables:
        raise ValueError(f"--tables is for the ablation targets, not {args.target}")
    _need_notebook_tools("reproduce")
    texture_dir = str(Path(args.texture_dir).resolve()) if args.texture_dir else None
    # what the notebook would find missing after a kernel start, found in seconds here
    check(
        args.target, args.profile, args.root, args.categories or None,
        {**(steps or {}), **({"train.texture_dir": texture_dir} if texture_dir else {})},
        args.download, out,
    )  # fmt: skip
    params = {
        "target": args.target,
        "seed": args.seed,
        "data_root": str(Path(args.root).resolve()) if args.root else None,
        "run_root": str(out),
        "categories": args.categories or None,
        "steps": args.steps,
        "download": args.download,
    }
    if texture_dir:  # only notebook 10 declares these two
        params["texture_dir"] = texture_dir
    if args.foreground_dir:
        params["foreground_dir"] = str(Path(args.foreground_dir).resolve())
    rows = runner.run_notebooks(args.profile, out, only=[notebook], parameters=params)
    if rows[0]["status"] != "ok":
        print(f"error: {rows[0]['error']} (see {rows[0]['executed']})")
        return 1
    print(f"[n2n] report: {out / 'report.md'}; executed notebook: {rows[0]['executed']}")
    return 0


def _book(args: argparse.Namespace) -> int:
    from n2n_core.book import build_book

    _need_notebook_tools("book")
    index = build_book(args.out)
    print(f"[n2n] book: {index}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m n2n_core", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="show an error's full traceback (anywhere on the line)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
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

    bk = sub.add_parser("book", help="render the committed notebooks to a static HTML book")
    bk.add_argument("--out", default="book", help="output folder (default: book)")
    bk.set_defaults(func=_book)

    dl = sub.add_parser("download", help="download, verify and unpack a dataset")
    dl.add_argument("dataset", choices=["mvtec", "visa", "dagm", "dtd"])
    dl.add_argument("--root", default="data", help="datasets folder (default: data)")
    dl.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives")
    dl.set_defaults(func=_download)

    from n2n_core.data.readers import SOURCES

    tr = sub.add_parser("train", help="train a method into a run folder")
    from n2n_core import methods

    tr.add_argument("--method", choices=methods.names(), default=methods.DEFAULT)
    tr.add_argument("--data", choices=SOURCES, default="synthetic")
    tr.add_argument(
        "--root", help="dataset root (default: data/<data>, data/synthetic for synthetic)"
    )
    tr.add_argument(
        "--category",
        help="a category, or 'all' (one model for every category: decodiff's default)",
    )
    tr.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    tr.add_argument("--out", required=True, type=_folder, help="run folder")
    tr.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last")
    tr.add_argument("--variant", choices=["full", "segmentation_only", "denoising_only"])
    tr.add_argument("--steps", type=_positive(int))
    tr.add_argument("--epochs", type=_positive(int))
    tr.add_argument("--image-size", type=_positive(int))
    tr.add_argument("--seed", type=int)
    tr.add_argument("--lr", type=_positive(float))
    tr.add_argument("--batch-size", type=_positive(int))
    tr.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"])
    tr.add_argument("--grad-accum", type=_positive(int))
    tr.add_argument("--gradient-checkpointing", action="store_true")
    tr.add_argument("--checkpoint-every", type=_positive(int))
    tr.add_argument(
        "--lambdas", type=_positive(int), nargs="+", help="inference steps λ (default 100 200)"
    )
    tr.add_argument(
        "--norm-guided",
        action="store_true",
        help="the official code's norm-guided two-timestep variant (not the paper)",
    )
    tr.add_argument("--texture-dir", help="DTD images for anomaly appearances")
    tr.add_argument("--foreground-dir", help="precomputed foreground masks <stem>.png")
    tr.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting, e.g. train.lr=3e-4 or model.vae.steps=300 (unknown keys are refused "
        "with the valid ones)",
    )
    dc = tr.add_argument_group("decodiff")
    dc.add_argument("--vae", help="pretrained AutoencoderKL: hub id or local folder")
    dc.add_argument(
        "--vae-steps", type=_positive(int), help="training steps of the small autoencoder"
    )
    dc.add_argument("--strategy", choices=["z_t-1", "z_0"], help="correction strategy (Table 3)")
    dc.add_argument("--reverse-steps", type=_positive(int), help="correction steps (default 5)")
    dc.add_argument(
        "--anomaly-map", choices=["pixel", "latent", "arithmetic", "geometric"], help="Table 4"
    )
    dc.add_argument(
        "--unconditional", action="store_true", help="no class conditioning for --category all"
    )
    tr.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="a run on its test split -> RUN_DIR/metrics.json")
    ev.add_argument("run_dir")
    ev.add_argument("--lambdas", type=_positive(int), nargs="+")
    ev.add_argument("--top-k", type=_positive(int))
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an inference setting of the run's model config, e.g. reverse_steps=10",
    )
    ev.set_defaults(func=_evaluate)

    im = sub.add_parser(
        "import-official", help="a run folder from a checkpoint released by a paper's authors"
    )
    im.add_argument("method", choices=methods.names())
    im.add_argument("checkpoint", help="the released file, e.g. DeCo-Diff's {'model': state_dict}")
    im.add_argument(
        "--config", default="UNet_L", help="UNet_XS..UNet_XL or a JSON file of its arguments"
    )
    im.add_argument(
        "--classes",
        default="mvtec",
        help="mvtec | visa (the official class order) or NAME,NAME,...",
    )
    im.add_argument("--vae", help="the autoencoder: a folder or hub id (default: the paper's)")
    im.add_argument("--data", default="mvtec", choices=SOURCES, help="the dataset to evaluate on")
    im.add_argument("--root", help="dataset root (default: data/<data>)")
    im.add_argument("--out", required=True, type=_folder, help="the run folder to write")
    im.set_defaults(func=_import_official)

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
        "--texture-dir", help="anomaly textures (DiffusionAD paper profile: required; default "
        "<root>/../dtd/images)",
    )  # fmt: skip
    rp.add_argument(
        "--foreground-dir", help="precomputed foreground masks: <dir>/<category>/<stem>.png"
    )
    rp.add_argument(
        "--download", action="store_true", help="download the dataset first if it is missing"
    )
    rp.add_argument(
        "--weights", help="evaluate the authors' released checkpoint instead of training "
        "(decodiff-mvtec, decodiff-visa); with --config and --vae as import-official",
    )  # fmt: skip
    rp.add_argument("--config", default="UNet_L", help="with --weights: the official UNet")
    rp.add_argument("--vae", help="with --weights: the autoencoder folder or hub id")
    rp.add_argument(
        "--tables", nargs="*", help="ablation targets: a subset of the paper tables, e.g. "
        "diffusionad_table4 (default: all of the method's)",
    )  # fmt: skip
    rp.set_defaults(func=_reproduce)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from n2n_core.train import TrainingInterrupted

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line
    try:
        args = build_parser().parse_args([a for a in argv if a != "--debug"])
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
