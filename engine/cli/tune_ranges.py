"""`tune`'s range flags: `--model lstm,gru --layers 1:2 --hidden 128:512 --dropout 0:0.4 --lr 1e-3:1e-2
--seq-len 64,128`. Each one given replaces the range tune would derive from the corpus and the budget
(engine/tune/space.py). A value that is not one is argparse's one line and exit 2, as any flag's."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.tune.space import Limits

T = TypeVar("T", int, float)

MOST_VALUES = 8  # a list flag's values: each is a dimension of the search, and a long list only thins it
MOST_LAYERS = 8
MOST_HIDDEN = 16_384  # wider than any preset by 16x; bounds the search for the widest width that fits
MOST_SEQ_LEN = 65_536
RANGE_FLAGS = ("model", "layers", "hidden", "dropout", "lr", "seq_len")


def add_range_arguments(parser: argparse.ArgumentParser) -> None:
    ranges = parser.add_argument_group(
        "ranges (each replaces the one derived from the corpus and the budget; LOW:HIGH or one value)")
    ranges.add_argument("--model", type=kinds, metavar="KIND[,KIND]",
                        help=f"model kinds to try, of {', '.join(cfg.MODEL_KINDS)} (default: the preset's)")
    ranges.add_argument("--layers", type=layer_counts, metavar="N[,N]",
                        help="layer counts to try, or LOW:HIGH (default: 1, and 2 for a text the preset's model suits)")
    ranges.add_argument("--hidden", type=lambda t: span(t, int, "--hidden", 1, MOST_HIDDEN), metavar="LOW:HIGH",
                        help="hidden widths (default: half to twice the width fitted to the corpus, no wider than "
                             "the budget trains)")
    ranges.add_argument("--dropout", type=lambda t: span(t, float, "--dropout", 0.0, 1.0, high_open=True),
                        metavar="LOW:HIGH", help="dropout (default: by the epochs the longest trial makes)")
    ranges.add_argument("--lr", type=lambda t: span(t, float, "--lr", 0.0, 10.0, low_open=True), metavar="LOW:HIGH",
                        help="learning rates, drawn log-uniform (default: a quarter to twice the preset's)")
    ranges.add_argument("--seq-len", type=seq_lens, metavar="N[,N]",
                        help="windows to try (default: the preset's, and twice it where the budget has updates "
                             "to spare)")


def limits_from(args: argparse.Namespace) -> Limits:
    return Limits(kinds=args.model or (), layers=args.layers or (), hidden=args.hidden, dropout=args.dropout,
                  lr=args.lr, seq_len=args.seq_len or ())


def ranges_given(args: argparse.Namespace) -> list[str]:
    """The range flags given, as typed (`--seq-len`), for a message refusing them."""
    return [f"--{name.replace('_', '-')}" for name in RANGE_FLAGS if getattr(args, name, None) is not None]


def kinds(text: str) -> tuple[str, ...]:
    words = values(text, "--model")
    unknown = [w for w in words if w not in cfg.MODEL_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown model kind {unknown[0]!r}: use {', '.join(cfg.MODEL_KINDS)}")
    return tuple(dict.fromkeys(words))  # `values` has lowered them


def layer_counts(text: str) -> tuple[int, ...]:
    if ":" in text:
        low, high = span(text, int, "--layers", 1, MOST_LAYERS)
        if low > high:
            raise argparse.ArgumentTypeError(f"--layers {text} is empty: its low end is above its high end")
        return tuple(range(low, high + 1))
    return tuple(sorted(set(numbers(text, "--layers", 1, MOST_LAYERS))))


def seq_lens(text: str) -> tuple[int, ...]:
    return tuple(sorted(set(numbers(text, "--seq-len", 1, MOST_SEQ_LEN))))


def values(text: str, flag: str) -> list[str]:
    words = [w.strip().lower() for w in text.split(",")]
    if not all(words):
        raise argparse.ArgumentTypeError(f"{flag} takes values separated by commas, not {text!r}")
    if len(words) > MOST_VALUES:
        raise argparse.ArgumentTypeError(f"{flag} takes at most {MOST_VALUES} values, not {len(words)}")
    return words


def numbers(text: str, flag: str, least: int, most: int) -> list[int]:
    return [bounded(word, int, flag, least, most) for word in values(text, flag)]


def span(text: str, kind: Callable[[str], T], flag: str, least: T, most: T, *, low_open: bool = False,
         high_open: bool = False) -> tuple[T, T]:
    """`LOW:HIGH` or one value (a range of one), each checked against [least, most] (open where
    said). A range whose ends are the wrong way round is left for `empty_reason` to name."""
    parts = text.split(":")
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"{flag} takes LOW:HIGH or one value, not {text!r}")
    ends = [bounded(p, kind, flag, least, most, low_open=low_open, high_open=high_open) for p in parts]
    return (ends[0], ends[-1])


def bounded(word: str, kind: Callable[[str], T], flag: str, least: T, most: T, *, low_open: bool = False,
            high_open: bool = False) -> T:
    try:
        value = kind(word.strip())
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{flag}: not {what}: {word.strip()!r}") from None
    below = value <= least if low_open else value < least
    above = value >= most if high_open else value > most
    if below or above or (isinstance(value, float) and not math.isfinite(value)):
        bounds = f"{'(' if low_open else '['}{least:g}, {most:g}{')' if high_open else ']'}"
        raise argparse.ArgumentTypeError(f"{flag} must be in {bounds}, not {word.strip()}")
    return value
