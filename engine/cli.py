"""The command line: every command's arguments, and the commands that need no app: `train --headless`
and `train --detach`, `sample`, `eval`, `next`, `runs`, `stop` and `doctor`. `train` without those two
flags and `attach` open the app; the console script (tui/cli.py) parses with this module and sends
those to the app, the rest to `dispatch`."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from . import config as cfg
from .config import EVAL_BUDGET
from .corpus import corpus_spec
from .errors import CharRNNError, ConfigError
from .printable import printable, printable_line
from .printer import percent
from .schedule import LIMITS
from .suggest import unknown_first_word, unknown_option

DEFAULTS = cfg.TrainConfig()
MODEL_DEFAULTS = cfg.ModelConfig()


class Parser(argparse.ArgumentParser):
    """Bad arguments get one line on stderr (argparse's default adds a usage block). No abbreviated
    flags: `--deta` must not pass for `--detach` (or slip past code that looks for the full flag)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    help_argv: list[str] | None = None  # train's: the arguments whose defaults --help shows

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)

    def format_help(self) -> str:
        """Train's help gives the defaults that will run: those of the preset for this machine's
        device, fitted to the corpus on the command line (or the default corpus)."""
        if self.help_argv is not None:
            note, values = defaults_here(self.help_argv)
            for action in self._actions:
                if action.dest in values and action.help:
                    base = re.sub(r"\s*\(default[^)]*\)$", "", action.help)
                    action.help = f"{base} (default: {values[action.dest]})".strip()
            self.description = f"{self.description or ''}\n\n{note}".strip()
            self.help_argv = None  # once
        return super().format_help()


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)


def parse_duration(text: str) -> float:
    """'90s', '10m', '2h', '1h30m' or plain seconds -> seconds."""
    text = text.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    if not text or not parts or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 10m, 2h)")
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    return h * 3600 + m * 60 + s


def finite_float(text: str, *, zero: bool) -> float:
    """A finite number above 0, or from 0 (`zero`: 0 means none, for a stop condition)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise argparse.ArgumentTypeError(f"must be {'0 or ' if zero else ''}a positive number, not {text}")
    return value


def temperature_arg(text: str) -> float:
    """A temperature in the range every run takes (engine/protocol.py says why)."""
    from .protocol import MAX_TEMPERATURE, MIN_TEMPERATURE

    value = finite_float(text, zero=False)
    if not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:
        raise argparse.ArgumentTypeError(f"must be from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}, not {text}")
    return value


def positive_float(text: str) -> float:
    return finite_float(text, zero=False)


def non_negative_float(text: str) -> float:
    return finite_float(text, zero=True)


def whole_number(text: str, minimum: int, also: str = "") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}{also}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {minimum} or more{also}, not {text}")
    return value


def non_negative_int(text: str) -> int:
    return whole_number(text, 0)


AUTO = "auto"


def eval_tokens_arg(text: str) -> int:
    """A token count, or `all` (0 in the config: the whole validation split)."""
    return 0 if text.strip().lower() == "all" else whole_number(text, 2, also=", or all")


def batch_size_arg(text: str) -> int | str:
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a batch size: {text!r} (a whole number, or auto)") from None


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    d, md = DEFAULTS, MODEL_DEFAULTS
    parser.add_argument("corpus", nargs="?", default=None, metavar="CORPUS",
                        help="text file, folder of .txt files, CSV file, or a bundled corpus: "
                             "shakespeare, timemachine, jokes (default: shakespeare)")
    data = parser.add_argument_group("data")
    data.add_argument("--csv-column", metavar="NAME", help="train on this column of a CSV file")
    data.add_argument("--as-text", action="store_true", help="read a .csv file as plain text, commas and all")
    data.add_argument("--ascii", action="store_true", help="fold the text to ASCII with unidecode")
    data.add_argument("--encoding", metavar="NAME", help="text encoding (default: UTF-8, or the file's BOM)")
    data.add_argument("--tokens", choices=cfg.TOKEN_KINDS, help=f"character or word model (default: {d.tokens})")
    data.add_argument("--min-freq", type=int, metavar="N",
                      help=f"word level: rarer words become <unk> (default: {d.min_freq})")
    data.add_argument("--val-fraction", type=float, metavar="F",
                      help=f"last fraction of the text held out for validation (default: {d.val_fraction})")

    model = parser.add_argument_group("model (a preset sets these; flags override it)")
    model.add_argument("--preset", choices=[*cfg.PRESETS, "auto"], default="auto",
                       help="tiny (tests, demos), small (CPU), large (GPU); auto picks by device (default: auto)")
    model.add_argument("--model", choices=cfg.MODEL_KINDS, help=f"cell type (default: {md.kind})")
    model.add_argument("--layers", type=int, metavar="N", help="recurrent layers")
    model.add_argument("--hidden", type=int, metavar="N", help="hidden units per layer")
    model.add_argument("--embedding", type=int, metavar="N", help="embedding size; 0 means one-hot input")
    model.add_argument("--one-hot", action="store_true", help="one-hot input, as the classic char-rnn")
    model.add_argument("--dropout", type=float, metavar="P", help="dropout between layers and before the head")

    train = parser.add_argument_group("training")
    train.add_argument("--seq-len", type=int, metavar="T", help="steps of backprop through time")
    train.add_argument("--batch-size", type=batch_size_arg, metavar="B",
                       help="parallel streams per batch, or auto: the largest that fits in GPU memory, found at "
                            "start (on a CPU, the preset's)")
    train.add_argument("--sampler", choices=cfg.SAMPLERS,
                       help=f"sequential streams carry the hidden state; random windows do not (default: {d.sampler})")
    train.add_argument("--optimizer", choices=cfg.OPTIMIZERS, help=f"(default: {d.optimizer})")
    train.add_argument("--lr", type=positive_float, metavar="LR", help="peak learning rate")
    train.add_argument("--weight-decay", type=float, metavar="W", help=f"(default: {d.weight_decay})")
    train.add_argument("--grad-clip", type=float, metavar="N",
                       help=f"clip the global gradient norm; 0 turns it off (default: {d.grad_clip})")
    train.add_argument("--warmup-steps", type=int, metavar="N", help="linear learning-rate warm-up")
    train.add_argument("--no-lr-decay", action="store_true",
                       help="keep the learning rate flat instead of a cosine down to the stop condition (or, "
                            "without one, a cut to a quarter at each evaluation without a new best)")
    train.add_argument("--seed", type=int, metavar="N", help=f"(default: {d.seed})")

    stop = parser.add_argument_group(
        "stop conditions (default: train until stopped; with --resume, how much more to train, replacing the run's "
        "own; 0: none)")
    stop.add_argument("--max-steps", type=non_negative_int, metavar="N")
    stop.add_argument("--max-epochs", type=non_negative_float, metavar="N")
    stop.add_argument("--max-time", type=parse_duration, metavar="DURATION", help="e.g. 90s, 10m, 2h")
    stop.add_argument("--keep-schedule", action="store_true",
                      help="with --resume and a new stop condition: hold the learning rate where the run's schedule "
                           "left it, instead of a new cosine over the new limit")
    stop.add_argument("--early-stop", type=int, metavar="N",
                      help="stop after N evaluations without a new best validation loss (best.pt keeps the best)")

    report = parser.add_argument_group("evaluation, checkpoints and samples")
    report.add_argument("--eval-interval", type=int, metavar="STEPS", help="validate every N steps")
    report.add_argument("--eval-tokens", type=eval_tokens_arg, metavar="N",
                        help="validate on the first N tokens of the split, or all of it (default: at most "
                             f"{EVAL_BUDGET:,}, the same ones at every evaluation)")
    report.add_argument("--checkpoint-interval", type=int, metavar="STEPS",
                        help=f"save every N steps; 0 only at the end (default: {d.checkpoint_interval})")
    report.add_argument("--keep-checkpoints", type=int, metavar="K",
                        help=f"older checkpoints kept as step-N.pt beside latest.pt (default: {d.keep_checkpoints})")
    report.add_argument("--sample-interval", type=parse_duration, metavar="DURATION",
                        help=f"live sample every so often; 0 turns them off (default: {d.sample_interval:g}s)")
    report.add_argument("--sample-length", type=int, metavar="N", help=f"(default: {d.sample_length})")
    report.add_argument("--temperature", type=temperature_arg, metavar="T",
                        help=f"0.05 to 10 (default: {d.temperature})")
    report.add_argument("--top-k", type=int, metavar="K")
    report.add_argument("--top-p", type=float, metavar="P")
    report.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard event files to RUN/tensorboard (needs the tensorboard extra: "
                             "pip install 'charrnn-tui[tensorboard]')")

    machine = parser.add_argument_group("machine and runs")
    machine.add_argument("--device", choices=cfg.DEVICES, help="(default: auto: CUDA, then MPS, then CPU)")
    machine.add_argument("--precision", choices=cfg.PRECISIONS,
                         help="(default: auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16 "
                              "or AMX), else fp32)")
    machine.add_argument("--threads", type=int, metavar="N",
                         help="CPU threads (default: its share of the cores; on a CPU, the fastest count within it)")
    machine.add_argument("--runs-dir", type=Path, metavar="DIR", help="where runs live (default: the user data dir)")
    machine.add_argument("--name", metavar="NAME", help="run name (default: corpus-model-time)")
    machine.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN",
                         help="continue the latest run, or the named run, run folder or checkpoint")


# Flag name -> (config field, whether it belongs to the model config).
_TRAIN_FLAGS = {
    "csv_column": ("csv_column", False), "encoding": ("encoding", False), "tokens": ("tokens", False),
    "min_freq": ("min_freq", False), "val_fraction": ("val_fraction", False), "model": ("kind", True),
    "layers": ("layers", True), "hidden": ("hidden", True), "embedding": ("embedding", True),
    "dropout": ("dropout", True), "seq_len": ("seq_len", False), "batch_size": ("batch_size", False),
    "sampler": ("sampler", False), "optimizer": ("optimizer", False), "lr": ("lr", False),
    "weight_decay": ("weight_decay", False), "grad_clip": ("grad_clip", False),
    "warmup_steps": ("warmup_steps", False), "seed": ("seed", False), "max_steps": ("max_steps", False),
    "max_epochs": ("max_epochs", False), "max_time": ("max_time", False), "early_stop": ("early_stop", False),
    "eval_interval": ("eval_interval", False), "eval_tokens": ("eval_tokens", False),
    "checkpoint_interval": ("checkpoint_interval", False), "keep_checkpoints": ("keep_checkpoints", False),
    "sample_interval": ("sample_interval", False),
    "sample_length": ("sample_length", False), "temperature": ("temperature", False), "top_k": ("top_k", False),
    "top_p": ("top_p", False), "device": ("device", False), "precision": ("precision", False),
    "threads": ("threads", False),
}


def config_from_args(args: argparse.Namespace, corpus: Any = None) -> cfg.TrainConfig:
    """Defaults, then the preset, then the flags the user gave. The default preset is fitted to the
    corpus's length in characters (`corpus`: the loaded engine.corpus.Corpus, else it is loaded)."""
    return configure(args, corpus)[0]


def configure(args: argparse.Namespace, corpus: Any = None) -> tuple[cfg.TrainConfig, str | None]:
    """config_from_args, and a line saying how the model was fitted to a small corpus (None if not)."""
    preset = args.preset
    if preset == "auto":
        from .device import pick_device

        preset = cfg.preset_for_device(pick_device(args.device or "auto").type)
    config = cfg.apply_preset(cfg.TrainConfig(corpus=corpus_spec(args.corpus), ascii=args.ascii), preset)
    preset_model = config.model
    note = None
    given = given_settings(args)
    top = {k: v for k, v in given.items() if not k.startswith("model.")}
    model = {k.removeprefix("model."): v for k, v in given.items() if k.startswith("model.")}
    for limit in LIMITS:
        if top.get(limit) == 0:  # 0: no limit
            top[limit] = None
    if args.keep_schedule:
        raise ConfigError("--keep-schedule goes with --resume")
    config = dataclasses.replace(config, **top, model=dataclasses.replace(config.model, **model))
    if args.preset == "auto":  # a preset asked for by name is kept as it is
        corpus = corpus if corpus is not None else load_train_corpus(args)
        fitted = cfg.fit_to_corpus(config, len(corpus.text), preset_model=preset_model,
                                   keep_hidden="hidden" in model, keep_dropout="dropout" in model)
        note = cfg.describe_fit(config.model, fitted.model, len(corpus.text), config.preset)
        config = fitted
    cfg.validate(config)
    return config, note


def load_train_corpus(args: argparse.Namespace) -> Any:  # -> engine.corpus.Corpus
    from .corpus import load_corpus

    return load_corpus(corpus_spec(args.corpus), csv_column=args.csv_column, ascii_only=args.ascii,
                       encoding=args.encoding, csv_as_text=args.as_text)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the user's flags set (`model.` keys for the model's), presets aside."""
    given = {("model." if is_model else "") + name: getattr(args, flag)
             for flag, (name, is_model) in _TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    if args.one_hot:
        given["model.embedding"] = 0
    if args.no_lr_decay:
        given["lr_decay"] = False
    if "eval_interval" in given:  # the user's interval, as given
        given["fit_eval_interval"] = False
    if getattr(args, "tensorboard", False):
        given["tensorboard"] = True
    if given.get("batch_size") == AUTO:
        del given["batch_size"]
        given["auto_batch_size"] = True
    elif "batch_size" in given:  # the user's batch, as given
        given["fit_batch_size"] = False
    return given


def resume_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given beside --resume; the trainer refuses those a run cannot change."""
    given = given_settings(args)
    if args.corpus is not None:
        given["corpus"] = args.corpus
    if args.ascii:
        given["ascii"] = True
    if args.preset != "auto":
        given["preset"] = args.preset
    if args.keep_schedule:
        given["keep_schedule"] = True
    return given


def make_trainer(args: argparse.Namespace, on_event, interactive: bool = False, world=None):  # -> Trainer
    """A Trainer for parsed train arguments: a new run, or `--resume`. `interactive`: for a UI;
    `world`: this process's place in a torchrun run (engine/distributed.py)."""
    from .distributed import SINGLE
    from .runs import default_runs_dir, resolve_checkpoint
    from .trainer import Trainer

    world = world or SINGLE
    runs_dir = args.runs_dir or default_runs_dir()
    if args.resume is not None:
        if args.name:
            raise ConfigError("--name names a new run; to continue one, give its name to --resume")
        path = resolve_checkpoint(args.resume or None, runs_dir)
        return Trainer(on_event=on_event, runs_dir=runs_dir, resume=path, overrides=resume_overrides(args),
                       pause_on_save_error=interactive, world=world)
    corpus = load_train_corpus(args)  # read once: the fit to its length and the run both need it
    config, fit_note = configure(args, corpus)
    return Trainer(config, on_event=on_event, runs_dir=runs_dir, run_name=args.name,
                   pause_on_save_error=interactive, world=world, corpus=corpus, notes=(fit_note,) if fit_note else ())


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
    from .inference import load_model
    from .runs import default_runs_dir, resolve_checkpoint
    from .sampling import Continuation, SampleSettings, TextGenerator

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
    from .inference import load_model
    from .runs import default_runs_dir, resolve_checkpoint
    from .sampling import TextGenerator

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
    from .corpus import load_corpus
    from .novelty import NoveltyIndex

    try:
        corpus = load_corpus(config.corpus, csv_column=config.csv_column, ascii_only=config.ascii,
                             encoding=config.encoding)
        return NoveltyIndex(corpus.text).novelty(text).to_dict()
    except (CharRNNError, MemoryError) as e:
        sys.stderr.write(f"note: no copy check ({printable_line(first_line_of(e))})\n")  # it may quote a file name
        return None


def first_line_of(e: BaseException) -> str:
    from .checkpoint import first_line

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
    from .corpus import fold_to_ascii, load_corpus
    from .data import split_tokens, validation_ids
    from .evaluate import evaluate
    from .inference import encode_for_eval, load_model
    from .runs import default_runs_dir, resolve_checkpoint

    path = resolve_checkpoint(args.checkpoint, args.runs_dir or default_runs_dir())
    loaded = load_model(path, args.device)
    config = loaded.config
    unknown = 0
    notes: list[str] = []  # what was changed in the text scored: said beside the score
    if args.file is None:
        # The text training validated on, cut the same way, so the figures match its own: the split
        # the run kept (engine/run_text.py), which outlives a corpus file changed or deleted since.
        from .errors import CorpusError
        from .run_text import corpus_change, load_validation

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
        out.write(f"{source}: {result.tokens:,} chars predicted; {result.bits:.4f} bits/char "
                  f"({result.nats:.4f} nats/char, perplexity {result.perplexity:.3f} per char)\n")
    else:  # perplexity per word: spaces and punctuation are counted into the words they go with
        words = word_count(loaded.vocab, ids[1:])
        per_word = math.exp(min(result.nats * result.tokens / max(words, 1), 700))
        out.write(f"{source}: {result.tokens:,} tokens predicted ({words:,} of them words); perplexity "
                  f"{per_word:.2f} per word ({result.nats:.4f} nats/token, perplexity {result.perplexity:.2f} "
                  "per token)\n")
    if unknown:
        share = unknown / max(len(ids), 1)
        notes.append(f"{unknown:,} characters the model never saw (about {share:.2%} of the text) were folded with "
                     "unidecode or skipped: the score is of the text without them")
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


def word_count(vocab: Any, ids: Any) -> int:
    """How many of the tokens `ids` are words (hold a letter or digit), not spaces or punctuation."""
    import torch

    is_word = torch.tensor([bool(WORD_CHAR.search(t)) for t in vocab.tokens])
    return int(is_word[ids.long()].sum())


# ---- runs and stop ------------------------------------------------------------------------------
def add_runs_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", type=Path, metavar="DIR", help="where runs live (default: the user data dir)")


# ---- entry point --------------------------------------------------------------------------------
WORD_CHAR = re.compile(r"\w")
COMMANDS = ("train", "sample", "eval", "next", "attach", "runs", "stop", "doctor")


TRAIN_ARGV: list[str] = []  # the train arguments being parsed (parse() sets them), for train --help


def defaults_here(argv: list[str]) -> tuple[str, dict[str, str]]:
    """What the flags default to for these arguments (the corpus, --preset, --device...): a line
    saying for what, and flag dest -> value in words."""
    lenient = Parser(add_help=False)
    add_train_arguments(lenient)
    given = [a for a in argv if a not in ("-h", "--help")]
    try:
        args, _ = lenient.parse_known_args(given)
    except SystemExit:  # a bad value: the defaults of the default corpus instead
        args, _ = lenient.parse_known_args([])
    if args.resume is not None:
        return "With --resume, a flag not given keeps the run's own value.", {}
    try:
        corpus = load_train_corpus(args)
        config = config_from_args(args, corpus)
    except CharRNNError as e:
        return f"(Defaults not fitted to the corpus: {e}.)", {}
    from .device import pick_device

    device = pick_device(args.device or "auto").type
    m = config.model
    fitted = f", fitted to {corpus.name} ({len(corpus.text):,} characters)" if args.preset == "auto" else ""
    values = {
        "tokens": config.tokens, "min_freq": config.min_freq, "val_fraction": config.val_fraction,
        "model": m.kind, "layers": m.layers, "hidden": m.hidden, "embedding": m.embedding or "one-hot",
        "dropout": m.dropout, "seq_len": config.seq_len, "batch_size": config.batch_size,
        "sampler": config.sampler, "optimizer": config.optimizer, "lr": config.lr,
        "weight_decay": config.weight_decay, "grad_clip": config.grad_clip, "warmup_steps": config.warmup_steps,
        "seed": config.seed, "checkpoint_interval": config.checkpoint_interval,
        "keep_checkpoints": config.keep_checkpoints, "sample_interval": f"{config.sample_interval:g}s",
        "sample_length": config.sample_length, "temperature": config.temperature,
        "eval_interval": config.eval_interval,
    }
    train_chars = int(len(corpus.text) * (1 - config.val_fraction))  # char tokens: known before the vocabulary
    if config.fit_batch_size:
        values["batch_size"] = (f"{config.batch_size}, or less on a text too short for {cfg.EPOCH_STEPS} steps an "
                                f"epoch (to no fewer than {cfg.MIN_STEP_TOKENS:,} tokens a step)")
        if config.tokens == "char":
            fitted_batch = cfg.fitted_batch_size(config.batch_size, config.seq_len, train_chars)
            if fitted_batch < config.batch_size:
                values["batch_size"] = (f"{fitted_batch}: the preset's {config.batch_size} would make an epoch "
                                        f"under {cfg.EPOCH_STEPS} steps")
            config = dataclasses.replace(config, batch_size=fitted_batch)
    if config.fit_eval_interval:
        values["eval_interval"] = f"{config.eval_interval}, or one epoch where that is shorter"
        if config.tokens == "char":
            epoch = cfg.fitted_eval_interval(config, train_chars)
            if epoch < config.eval_interval:
                values["eval_interval"] = f"{epoch}: one epoch, shorter than the preset's {config.eval_interval}"
    note = (f"The defaults shown are those that will run here: preset {config.preset} on this "
            f"{device.upper() if device != 'cpu' else 'CPU'}{fitted}.")
    return note, {dest: str(value) for dest, value in values.items()}


def preset_table() -> str:
    """The presets' values, so `--help` shows the defaults of the flags a preset sets."""
    lines = ["presets (the defaults of the model and batch flags):"]
    for name, p in cfg.PRESETS.items():
        m = p["model"]
        lines.append(
            f"  {name:<6} {m['kind']} {m['layers']}x{m['hidden']}, embedding {m['embedding']}, dropout {m['dropout']}, "
            f"seq-len {p['seq_len']}, batch-size {p['batch_size']}, lr {p['lr']}, warmup-steps {p['warmup_steps']}, "
            f"eval-interval {p['eval_interval']}"
        )
    return "\n".join(lines)


def build_parser(prog: str = "charrnn-tui", *, headless_only: bool = False) -> argparse.ArgumentParser:
    tui_lines = (
        f"  {prog} [CORPUS] [options]            open the app and train (options as for train)\n"
        f"  {prog} attach [RUN]                  open the app on a live run (default: the latest)\n"
    )
    epilog = (
        "commands:\n"
        + ("" if headless_only else tui_lines)
        + f"  {prog} train [CORPUS] [options]      train; --headless for a plain progress line, --detach "
        "to run in the background\n"
        f"  {prog} runs [--json]                 list runs and their state\n"
        f"  {prog} stop RUN                      save and end a live run\n"
        f"  {prog} sample CHECKPOINT [options]   generate text\n"
        f"  {prog} eval CHECKPOINT [FILE]        loss, bits/char and perplexity (default: the run's validation text)\n"
        f"  {prog} next CHECKPOINT --prime TEXT  the likeliest next tokens and their probabilities\n"
        f"  {prog} doctor [--json]               versions, device, precision, threads and a 15 s speed probe, "
        "for a bug report\n"
        f"run '{prog} COMMAND --help' for a command's options"
    )
    parser = Parser(
        prog=prog, formatter_class=HelpFormatter, epilog=epilog,
        description="Train a character-level RNN on any text and watch it learn.",
    )
    from .doctor import PROBE_SECONDS, version_line

    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    parser.commands = sub.choices  # name -> its parser, for messages about its flags
    train = sub.add_parser("train", help="train a model", formatter_class=HelpFormatter,
                           description="Train a model. Opens the app unless --headless or --detach is given. "
                                       "On several GPUs or machines: torchrun --nproc-per-node N --no-python "
                                       "charrnn-tui train ... --headless (--batch-size is the global number of "
                                       "streams; see the README).",
                           epilog=preset_table())
    add_train_arguments(train)
    train.help_argv = TRAIN_ARGV  # its --help gives the defaults for the corpus and device given
    out = train.add_argument_group("output")
    out.add_argument("--headless", action="store_true", default=headless_only,
                     help="no app: print a progress line; Ctrl+C saves and stops, a closed terminal detaches")
    out.add_argument("--detach", action="store_true",
                     help="train in the background and return once the run is listening; see `attach` and `stop`")
    out.add_argument("--jsonl", metavar="FILE", help="also append every event as one JSON object per line")
    # Set by `launch_engine` for the detached engine it starts: the pipe to say "ready", and whether
    # the app asked (a UI pauses rather than fails when a checkpoint cannot be written).
    out.add_argument("--serve-fd", type=int, default=None, help=argparse.SUPPRESS)
    out.add_argument("--serve-for-app", action="store_true", help=argparse.SUPPRESS)
    add_sample_arguments(sub.add_parser("sample", help="generate text from a checkpoint",
                                        formatter_class=HelpFormatter))
    add_eval_arguments(sub.add_parser("eval", help="score a text file with a checkpoint",
                                      formatter_class=HelpFormatter))
    add_next_arguments(sub.add_parser("next", help="the likeliest next tokens after a prime",
                                      formatter_class=HelpFormatter,
                                      description="The K likeliest tokens to follow --prime and their probabilities "
                                                  "(temperature 1); the first is what `sample --greedy -n 1` writes."))
    attach = sub.add_parser("attach", help="open the app on a live run", formatter_class=HelpFormatter,
                            description="Open the app on a live run: its whole history, then live. "
                                        "`d` detaches again; `q` stops the run.")
    attach.add_argument("run", nargs="?", metavar="RUN", help="run name or folder (default: the latest live run)")
    add_runs_dir_argument(attach)
    runs = sub.add_parser("runs", help="list runs and their state", formatter_class=HelpFormatter)
    runs.add_argument("--json", action="store_true", help="a JSON list of objects")
    add_runs_dir_argument(runs)
    stop = sub.add_parser("stop", help="save and end a live run", formatter_class=HelpFormatter)
    stop.add_argument("run", metavar="RUN", help="run name or folder")
    stop.add_argument("--no-save", action="store_true", help="end without saving the steps since the last checkpoint")
    add_runs_dir_argument(stop)
    doctor = sub.add_parser("doctor", help="what this machine is and how fast the default run is on it",
                            formatter_class=HelpFormatter,
                            description="Versions, the device the default picks and its memory, the precision of "
                                        "each part of the model, CPU threads, NVML, and a probe: the default run's "
                                        "model trained for a while (tokens/s), then sampled from (chars/s). Nothing "
                                        "is written. Paste its output into a bug report.")
    doctor.add_argument("--json", action="store_true", help="one JSON object with the same fields")
    doctor.add_argument("--seconds", type=non_negative_float, default=PROBE_SECONDS, metavar="N",
                        help=f"how long the probe runs, set-up included; 0 skips it (default: {PROBE_SECONDS:g})")
    doctor.add_argument("--device", choices=cfg.DEVICES, default="auto", help="(default: auto, as a run picks)")
    return parser


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "sample":
        return run_sample(args)
    if args.command == "eval":
        return run_eval(args)
    if args.command == "next":
        return run_next(args)
    if args.command == "doctor":
        from .doctor import run_doctor

        return run_doctor(args)
    if args.command in ("runs", "stop"):
        from .run_commands import run_runs, run_stop

        return run_runs(args) if args.command == "runs" else run_stop(args)
    if args.command == "attach":
        raise ConfigError("attach opens the app: run it as `charrnn-tui attach`")
    if args.detach and "WORLD_SIZE" in os.environ:
        raise ConfigError("--detach does not work under torchrun: run torchrun itself in the background "
                          "(nohup, or a tmux session) with --headless; the app can attach to rank 0's run")
    if args.detach and args.serve_fd is None:
        from .run_commands import run_detached

        return run_detached(args)
    from .serve import serve

    return serve(args)


def report_errors(fn, *a) -> int:
    """Run fn; a CharRNNError becomes one line on stderr and exit status 2."""
    try:
        return fn(*a)
    except CharRNNError as e:  # it may quote a file's name, a file's text or a run's words: printable
        sys.stderr.write(f"charrnn-tui: error: {printable_line(str(e))}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("charrnn-tui: interrupted\n")
        return 130
    except BrokenPipeError:  # `charrnn-tui runs | head`: the reader has all it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def parse(argv: list[str], prog: str = "charrnn-tui", *, headless_only: bool = False) -> argparse.Namespace:
    """Parsed arguments; a bare corpus and options mean `train`. `train_argv` keeps the train
    arguments as given, for starting the same run in a detached engine. A first word that is no
    command and no corpus, or a flag the command does not have, is one line and exit 2."""
    parser = build_parser(prog, headless_only=headless_only)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-") and not is_corpus(argv[0]):
        from charrnn_tui.corpora import BUNDLED

        parser.error(unknown_first_word(argv[0], COMMANDS, list(BUNDLED)))
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv = ["train", *argv]
    TRAIN_ARGV[:] = argv[1:] if argv[0] == "train" else []
    args, extras = parser.parse_known_args(argv)
    if extras:  # told by the command's own parser, which knows its flags and its --help
        command = parser.commands[args.command]
        command.error(unknown_option(extras[0], [o for a in command._actions for o in a.option_strings]))
    args.train_argv = argv[1:] if args.command == "train" else []
    return args


def is_corpus(word: str) -> bool:
    """Whether `word` names a bundled corpus or an existing file or folder."""
    from charrnn_tui.corpora import BUNDLED

    return word in BUNDLED or Path(word).expanduser().exists()


def check_train_corpus(args: argparse.Namespace) -> None:
    """The slips about the corpus that can be told before anything starts (the app's screen, an
    engine): a corpus that is not there, a CSV file without a column."""
    if args.command != "train" or args.resume is not None or args.corpus is None:
        return
    if not is_corpus(args.corpus):
        from charrnn_tui.corpora import BUNDLED

        raise ConfigError(unknown_first_word(args.corpus, (), list(BUNDLED), what="corpus"))
    if args.csv_column is None and not args.as_text:
        from .corpus import refuse_csv_without_column

        refuse_csv_without_column(Path(args.corpus).expanduser(), args.encoding)


def main(argv: list[str] | None = None) -> int:
    """`python -m charrnn_tui.engine`: the headless commands only."""
    args = parse(sys.argv[1:] if argv is None else argv, "python -m charrnn_tui.engine", headless_only=True)
    return report_errors(dispatch, args)
