"""`train`'s arguments: the flags, their types and help, and argv to a TrainConfig (presets,
the fit to the corpus, what a resume may change) or to the plan of a run (RunPlan)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import re
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.config import EVAL_BUDGET
from charrnn_tui.engine.errors import CharRNNError, ConfigError
from charrnn_tui.engine.run.schedule import LIMITS
from charrnn_tui.engine.text.corpus import Corpus, corpus_spec

if TYPE_CHECKING:  # torch: imported when a run is made, not to parse arguments
    from charrnn_tui.engine.run.trainer import RunPlan

DEFAULTS = cfg.TrainConfig()
MODEL_DEFAULTS = cfg.ModelConfig()


class Parser(argparse.ArgumentParser):
    """Bad arguments get one line on stderr (argparse's default adds a usage block). No abbreviated
    flags: `--deta` must not pass for `--detach` (or slip past code that looks for the full flag)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    help_argv: list[str] | None = None  # train's: the arguments whose defaults --help shows
    commands: dict[str, Parser]  # the top parser's: name -> its parser (main.build_parser)

    def error(self, message: str) -> NoReturn:
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
    """Descriptions and epilogs keep their lines and wrap only a paragraph written as one long
    string; an indented line (an example, a table's row) is kept whole, as a terminal shows it."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
                         if len(indent + line) > width and not line[:1].isspace() else indent + line
                         for line in text.splitlines())


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
    from charrnn_tui.engine.protocol import MAX_TEMPERATURE, MIN_TEMPERATURE

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


@functools.cache
def train_flags() -> dict[str, tuple[str, bool]]:
    """Each train flag that sets a config field -> (the field, whether it is the model's): the flags
    that take a value and default to None (not given), named as their field is, but for --model,
    ModelConfig.kind. Flags that are no field (--one-hot, --no-lr-decay, --keep-schedule, --name...)
    are read by name in given_settings and resume_overrides."""
    parser = Parser(add_help=False)
    add_train_arguments(parser)
    train_fields = {f.name for f in dataclasses.fields(cfg.TrainConfig)} - {"model"}
    model_fields = {f.name for f in dataclasses.fields(cfg.ModelConfig)}
    flags = {}
    for action in parser._actions:
        if not action.option_strings or action.default is not None:
            continue
        field = "kind" if action.dest == "model" else action.dest
        if field in model_fields:
            flags[action.dest] = (field, True)
        elif field in train_fields:
            flags[action.dest] = (field, False)
    return flags


def config_from_args(args: argparse.Namespace, corpus: Corpus | None = None) -> cfg.TrainConfig:
    """Defaults, then the preset, then the flags the user gave. The default preset is fitted to the
    corpus's length in characters (`corpus`: the loaded engine.corpus.Corpus, else it is loaded)."""
    return configure(args, corpus)[0]


def configure(args: argparse.Namespace, corpus: Corpus | None = None) -> tuple[cfg.TrainConfig, str | None]:
    """config_from_args, and a line saying how the model was fitted to a small corpus (None if not)."""
    preset = args.preset
    if preset == "auto":
        from charrnn_tui.engine.model.device import pick_device

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


def load_train_corpus(args: argparse.Namespace) -> Corpus:
    from charrnn_tui.engine.text.corpus import load_corpus

    return load_corpus(corpus_spec(args.corpus), csv_column=args.csv_column, ascii_only=args.ascii,
                       encoding=args.encoding, csv_as_text=args.as_text)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the user's flags set (`model.` keys for the model's), presets aside."""
    given = {("model." if is_model else "") + name: getattr(args, flag)
             for flag, (name, is_model) in train_flags().items() if getattr(args, flag) is not None}
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


def train_plan(args: argparse.Namespace) -> RunPlan:
    """The run parsed train arguments ask for: a new run (its TrainConfig, fitted to the corpus read
    here), or `--resume` (its checkpoint, and the settings given beside it)."""
    from charrnn_tui.engine.run.trainer import RunPlan
    from charrnn_tui.engine.runs import default_runs_dir, resolve_checkpoint

    runs_dir = args.runs_dir or default_runs_dir()
    if args.resume is not None:
        if args.name:
            raise ConfigError("--name names a new run; to continue one, give its name to --resume")
        path = resolve_checkpoint(args.resume or None, runs_dir)
        return RunPlan(None, runs_dir, resume=path, overrides=resume_overrides(args))
    corpus = load_train_corpus(args)  # read once: the fit to its length and the run both need it
    config, fit_note = configure(args, corpus)
    return RunPlan(config, runs_dir, run_name=args.name, corpus=corpus, notes=(fit_note,) if fit_note else ())


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
    from charrnn_tui.engine.model.device import pick_device

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


def add_runs_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", type=Path, metavar="DIR", help="where runs live (default: the user data dir)")
