"""The commands that use a trained model: `sample`, `next` and `eval`."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
from typing import TYPE_CHECKING, Any, TextIO

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.cli.arguments import add_runs_dir_argument, temperature_arg
from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.printable import percent, printable, printable_line

if TYPE_CHECKING:  # torch: imported by the commands that need it
    import torch

    from charrnn_tui.engine.text.vocab import CharVocab, WordVocab

WORD_CHAR = re.compile(r"\w")

# ---- sample and eval ----------------------------------------------------------------------------
def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file, a run folder or a run name")
    parser.add_argument("--prime", default="", help="text that warms up the hidden state (default: none)")
    parser.add_argument("-n", "--length", type=int, default=500, help="tokens to generate (default: 500)")
    parser.add_argument("--temperature", type=temperature_arg, default=0.8, help="0.05 to 10 (default: 0.8)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest (default: off)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling (default: off)")
    parser.add_argument("--greedy", action="store_true", help="always the likeliest token")
    parser.add_argument("--seed", type=int, default=None, help="for a reproducible sample (default: random)")
    parser.add_argument("--allow-unk", action="store_true", help="let a word model write <unk> (default: never)")
    parser.add_argument("--device", choices=cfg.DEVICES, default="auto", help="(default: auto)")
    parser.add_argument("--json", action="store_true",
                        help='print {"prime", "text", "novelty": {"longest_copy", "spans", "min_span"}}: the '
                             "continuation and what of it was copied verbatim from the training corpus")
    add_runs_dir_argument(parser)


def run_sample(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from charrnn_tui.engine.model.inference import load_model
    from charrnn_tui.engine.model.sampling import Continuation, SampleSettings, TextGenerator
    from charrnn_tui.engine.runs import default_runs_dir, resolve_checkpoint

    settings = SampleSettings(length=args.length, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, greedy=args.greedy, seed=args.seed, allow_unk=args.allow_unk)
    path = resolve_checkpoint(args.checkpoint, args.runs_dir or default_runs_dir())
    loaded = load_model(path, args.device)
    settings.validate(len(loaded.vocab))
    generator = TextGenerator(loaded.model, loaded.vocab)
    result = Continuation(args.prime)
    pieces = generator.stream(args.prime, settings, result)
    first = next(pieces, "")
    for note in result.notes:
        sys.stderr.write(f"prompt: {printable_line(note)}\n")
    if args.json:  # JSON escapes every control character itself
        for _ in pieces:
            pass
        out.write(json.dumps({"prime": args.prime, "text": result.text,
                              "novelty": sample_novelty(loaded.config, result.text)}) + "\n")
        return 0
    # The model writes what its corpus held, escape sequences too (a corpus of terminal logs): a
    # terminal is shown them as visible stand-ins; a pipe or a file gets the model's exact text.
    shown = printable if out.isatty() else str
    out.write(shown(args.prime + first))
    out.flush()
    for piece in pieces:
        out.write(shown(piece))
        out.flush()
    out.write("\n")
    return 0


def add_next_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file, a run folder or a run name")
    parser.add_argument("--prime", default="", help="the text so far (default: none)")
    parser.add_argument("--top", type=int, default=5, metavar="K", help="how many tokens (default: 5)")
    parser.add_argument("--allow-unk", action="store_true", help="rank <unk> too, for a word model (default: never)")
    parser.add_argument("--device", choices=cfg.DEVICES, default="auto", help="(default: auto)")
    parser.add_argument("--json", action="store_true",
                        help='print {"prime", "top": [{"token", "prob"}, ...]}, most likely first')
    add_runs_dir_argument(parser)


def run_next(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """The likeliest next tokens after a prime, with their probabilities at temperature 1."""
    from charrnn_tui.engine.model.inference import load_model
    from charrnn_tui.engine.model.sampling import TextGenerator
    from charrnn_tui.engine.runs import default_runs_dir, resolve_checkpoint

    path = resolve_checkpoint(args.checkpoint, args.runs_dir or default_runs_dir())
    loaded = load_model(path, args.device)
    top = min(args.top, len(loaded.vocab)) if args.top >= 1 else args.top
    ranked, notes = TextGenerator(loaded.model, loaded.vocab).next_tokens(args.prime, top, args.allow_unk)
    for note in notes:
        sys.stderr.write(f"prompt: {printable_line(note)}\n")
    if args.json:
        out.write(json.dumps({"prime": args.prime, "top": [{"token": t, "prob": p} for t, p in ranked]}) + "\n")
        return 0
    width = max(len(repr(t)) for t, _ in ranked)  # repr writes a token's control characters as escapes
    for token, prob in ranked:
        out.write(f"{token!r:<{width}}  {prob:6.1%}\n")
    return 0


def sample_novelty(config: cfg.TrainConfig, text: str) -> dict[str, Any] | None:
    """What of `text` the run's corpus holds verbatim, or None (with a note) when it cannot be told."""
    from charrnn_tui.engine.text.corpus import load_corpus
    from charrnn_tui.engine.text.novelty import NoveltyIndex

    try:
        corpus = load_corpus(config.corpus, csv_column=config.csv_column, ascii_only=config.ascii,
                             encoding=config.encoding)
        return NoveltyIndex(corpus.text).novelty(text).to_dict()
    except (CharRNNError, MemoryError) as e:
        sys.stderr.write(f"note: no copy check ({printable_line(first_line_of(e))})\n")  # it may quote a file name
        return None


def first_line_of(e: BaseException) -> str:
    from charrnn_tui.engine.checkpoint import first_line

    return first_line(e)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file, a run folder or a run name")
    parser.add_argument("file", nargs="?", metavar="FILE",
                        help="text file (or folder, or bundled corpus name) to score (default: the run's own "
                             "validation text, as training measured it)")
    parser.add_argument("--csv-column", metavar="NAME", help="score this column of a CSV file")
    parser.add_argument("--as-text", action="store_true", help="read a .csv file as plain text, commas and all")
    parser.add_argument("--encoding", metavar="NAME", help="text encoding (default: UTF-8, or the file's BOM)")
    parser.add_argument("--device", choices=cfg.DEVICES, default="auto", help="(default: auto)")
    add_runs_dir_argument(parser)


def run_eval(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from charrnn_tui.engine.model.evaluate import evaluate
    from charrnn_tui.engine.model.inference import encode_for_eval, load_model
    from charrnn_tui.engine.runs import default_runs_dir, resolve_checkpoint
    from charrnn_tui.engine.text.corpus import fold_to_ascii, load_corpus
    from charrnn_tui.engine.text.data import split_tokens, validation_ids

    path = resolve_checkpoint(args.checkpoint, args.runs_dir or default_runs_dir())
    loaded = load_model(path, args.device)
    config = loaded.config
    unknown = 0
    notes: list[str] = []  # what was changed in the text scored: said beside the score
    if args.file is None:
        # The text training validated on, cut the same way, so the figures match its own: the split
        # the run kept (engine/text/run_text.py), which outlives a corpus file changed or deleted since.
        from charrnn_tui.engine.errors import CorpusError
        from charrnn_tui.engine.text.run_text import corpus_change, load_validation

        kept = load_validation(path.parent, len(loaded.vocab))
        if kept is not None:
            ids, name = kept.ids, kept.source
            change = corpus_change(config, kept.fingerprint)
            if change is not None:
                sys.stderr.write(printable_line(f"note: corpus {name} {change} since training; scoring the "
                                                "validation text the run kept") + "\n")
        else:  # a run from before validation text was kept: its corpus, cut again
            try:
                corpus = load_corpus(config.corpus, csv_column=config.csv_column, ascii_only=config.ascii,
                                     encoding=config.encoding)
            except CorpusError as e:
                raise CorpusError(f"{e}; run {path.parent.name} predates kept validation text, so `eval` needs "
                                  "its corpus: put the file back, or give a FILE to score") from None
            ids, unknown = encode_for_eval(loaded.vocab, corpus.text)
            ids, name = split_tokens(ids, config.val_fraction)[1], corpus.source
        ids = validation_ids(ids, config.eval_tokens)
        source = f"{name}, validation split (the last {percent(config.val_fraction)})"
    else:
        corpus = load_corpus(args.file, csv_column=args.csv_column, encoding=args.encoding, csv_as_text=args.as_text)
        text = fold_to_ascii(corpus.text) if config.ascii else corpus.text  # as the model's training text was
        ids, unknown = encode_for_eval(loaded.vocab, text)
        source = corpus.source
        if text != corpus.text:
            notes.append(f"the text was folded to ASCII, as the model's training text was ({len(corpus.text):,} "
                         f"characters read, {len(text):,} once folded): the score is of the folded text")
    source = printable_line(source)  # a file's name, or the source the run kept: shown on a terminal
    result = evaluate(loaded.model, ids, progress=EvalProgress(len(ids), sys.stderr))
    if loaded.vocab.kind == "char":  # bits per character: the figure char models are compared by
        out.write(f"{source}: {plural(result.tokens, 'char')} predicted; {result.bits:.4f} bits/char "
                  f"({result.nats:.4f} nats/char, perplexity {result.perplexity:.3f} per char)\n")
    else:  # perplexity per word: spaces and punctuation are counted into the words they go with
        words = word_count(loaded.vocab, ids[1:])
        per_word = math.exp(min(result.nats * result.tokens / max(words, 1), 700))
        out.write(f"{source}: {plural(result.tokens, 'token')} predicted ({words:,} of them words); perplexity "
                  f"{per_word:.2f} per word ({result.nats:.4f} nats/token, perplexity {result.perplexity:.2f} "
                  "per token)\n")
    if unknown:
        share = unknown / max(len(ids), 1)
        notes.append(f"{plural(unknown, 'character')} the model never saw (about {share:.2%} of the text) were "
                     "folded with unidecode or skipped: the score is of the text without them")
    if loaded.vocab.kind == "word":
        unk = int((ids[1:] == 0).sum())
        if unk:
            notes.append(f"{unk:,} of the tokens ({unk / max(len(ids) - 1, 1):.1%}) are <unk>, words the model's "
                         "vocabulary does not hold: the score counts predicting <unk> for them as right")
    for note in notes:
        out.write(f"note: {note}\n")  # made of numbers and our words only
    return 0


class EvalProgress:
    """`eval`'s progress on stderr once it has taken a second: rewritten in place on a terminal,
    a line every few seconds otherwise; a quick evaluation prints nothing."""

    def __init__(self, tokens: int, err: TextIO, after: float = 1.0):
        import time

        self.clock = time.monotonic
        self.tokens, self.err, self.after = tokens, err, after
        self.started = self.last = self.clock()
        self.tty = err.isatty()

    def __call__(self, done: float) -> None:
        now = self.clock()
        if now - self.started < self.after or now - self.last < (0.5 if self.tty else 5.0):
            return
        self.last = now
        with contextlib.suppress(OSError):
            text = f"eval: {done:.0%} of {self.tokens:,} tokens, {now - self.started:.0f}s"
            self.err.write(("\r\x1b[2K" + text) if self.tty else text + "\n")
            if self.tty and done >= 1.0:
                self.err.write("\r\x1b[2K")
            self.err.flush()


def word_count(vocab: CharVocab | WordVocab, ids: torch.Tensor) -> int:
    """How many of the tokens `ids` are words (hold a letter or digit), not spaces or punctuation."""
    import torch

    is_word = torch.tensor([bool(WORD_CHAR.search(t)) for t in vocab.tokens])
    return int(is_word[ids.long()].sum())
