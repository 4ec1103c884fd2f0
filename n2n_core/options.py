"""Command-line options as data: each names the setting it sets. The CLI is generated from
these: ``TRAIN_OPTIONS`` (every method) and each method's ``Method.options`` and
``Method.import_options``, so that the generic parser names no method."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from n2n_core.config import PRECISIONS

__all__ = ["TRAIN_OPTIONS", "Option", "local_or_hub", "positive"]


def positive(kind: type) -> Callable[[str], Any]:
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


def local_or_hub(text: str) -> str:
    """A model reference: an existing local folder, stored absolute (a run folder is read from
    anywhere), else a Hugging Face hub id as given."""
    from pathlib import Path

    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


_UNSET: Any = object()


@dataclass(frozen=True)
class Option:
    """``flag`` (``--vae-steps``) sets ``setting``: a dotted ``model.*`` / ``train.*`` key for
    training options, a keyword of ``Method.import_official`` for import options. ``const``:
    a flag without a value that sets this value; ``nargs="+"``: several values (a tuple);
    ``reproduce``: ``reproduce`` takes the flag too (a path on this machine, not a setting that
    would make the runs another table's)."""

    flag: str
    setting: str
    help: str = ""
    type: Callable[[str], Any] | None = None
    choices: tuple[Any, ...] | None = None
    nargs: str | None = None
    const: Any = _UNSET
    default: Any = None  # import options only: training options leave the profile's value
    reproduce: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: Any) -> None:
        """Add the flag to an argparse parser or group; an absent flag parses as None."""
        kwargs: dict[str, Any] = {"help": self.help or None, "dest": self.dest}
        if self.const is not _UNSET:
            kwargs |= {"action": "store_const", "const": self.const}
        else:
            kwargs |= {"type": self.type, "choices": self.choices, "nargs": self.nargs}
        parser.add_argument(self.flag, default=self.default, **kwargs)

    def value(self, parsed: Any) -> Any:
        return tuple(parsed) if isinstance(parsed, list) else parsed


# every method's training settings (a method's own options come from Method.options)
TRAIN_OPTIONS = (
    Option("--steps", "train.steps", "optimiser updates", type=positive(int)),
    Option("--epochs", "train.epochs", "training length in images drawn / training images",
           type=positive(int)),
    Option("--image-size", "model.image_size", "pixels per side", type=positive(int)),
    Option("--seed", "train.seed", type=int),
    Option("--lr", "train.lr", type=positive(float)),
    Option("--batch-size", "train.batch_size", type=positive(int)),
    Option("--mixed-precision", "train.mixed_precision",
           "auto: bf16 on cards that have it, fp16 with loss scaling on older ones, no on CPU",
           choices=PRECISIONS),
    Option("--grad-accum", "train.grad_accum", type=positive(int)),
    Option("--gradient-checkpointing", "train.gradient_checkpointing", const=True),
    Option("--checkpoint-every", "train.checkpoint_every", type=positive(int)),
)  # fmt: skip
