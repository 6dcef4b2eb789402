"""The command line: the commands (train, sample, next, eval, attach, runs, stop, doctor), parsed
and dispatched. The console script (tui/cli.py) opens the app for `train` and `attach` and comes here
for the rest; `python -m charrnn_tui.engine` comes here for all of them, headless."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.cli.arguments import (
    TRAIN_ARGV,
    HelpFormatter,
    Parser,
    add_runs_dir_argument,
    add_train_arguments,
    non_negative_float,
    preset_table,
    train_plan,
)
from charrnn_tui.engine.cli.model_commands import (
    add_eval_arguments,
    add_next_arguments,
    add_sample_arguments,
    run_eval,
    run_next,
    run_sample,
)
from charrnn_tui.engine.cli.suggest import unknown_first_word, unknown_option
from charrnn_tui.engine.errors import CharRNNError, ConfigError
from charrnn_tui.engine.printable import printable_line

# ---- entry point --------------------------------------------------------------------------------
COMMANDS = ("train", "sample", "eval", "next", "attach", "runs", "stop", "doctor", "tune")


def build_parser(prog: str = "charrnn-tui", *, headless_only: bool = False) -> Parser:
    tui_lines = (
        f"  {prog} [CORPUS] [options]            open the app and train (options as for train)\n"
        f"  {prog} attach [RUN]                  open the app on a live run (default: the latest)\n"
    )
    epilog = (
        "commands:\n"
        + ("" if headless_only else tui_lines)
        + f"  {prog} train [CORPUS] [options]      train; --headless for a plain progress line, --detach "
        "to run in the background\n"
        f"  {prog} tune CORPUS --budget 20m      search model settings for a corpus within a time budget\n"
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
    from charrnn_tui.engine.cli.doctor import PROBE_SECONDS, version_line

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
    from charrnn_tui.engine.cli.tune_command import add_tune_arguments

    add_tune_arguments(sub.add_parser(
        "tune", help="search model settings for a corpus within a time budget", formatter_class=HelpFormatter,
        description="Search width, layers, dropout and learning rate (and the window where it matters) for a "
                    "corpus within a wall-clock budget, by successive halving: many short trials, the best third "
                    "of each rung trained on. Each trial is a run in a sweep folder under the runs folder; the "
                    "winner's best.pt and the `train` command that reproduces it come at the end."))
    return parser


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "sample":
        return run_sample(args)
    if args.command == "eval":
        return run_eval(args)
    if args.command == "next":
        return run_next(args)
    if args.command == "doctor":
        from charrnn_tui.engine.cli.doctor import run_doctor

        return run_doctor(args)
    if args.command == "tune":
        from charrnn_tui.engine.cli.tune_command import run_tune

        return run_tune(args)
    if args.command in ("runs", "stop"):
        from charrnn_tui.engine.cli.run_commands import run_runs, run_stop

        return run_runs(args) if args.command == "runs" else run_stop(args)
    if args.command == "attach":
        raise ConfigError("attach opens the app: run it as `charrnn-tui attach`")
    if args.detach and "WORLD_SIZE" in os.environ:
        raise ConfigError("--detach does not work under torchrun: run torchrun itself in the background "
                          "(nohup, or a tmux session) with --headless; the app can attach to rank 0's run")
    if args.detach and args.serve_fd is None:
        from charrnn_tui.engine.cli.run_commands import run_detached

        return run_detached(args)
    return serve_train(args)


def serve_train(args: argparse.Namespace) -> int:
    """`train`, in this process: the run the arguments plan, served (engine/serve/process.py). A
    detached engine's launcher is told why, when the run cannot even be planned."""
    from charrnn_tui.engine.serve.process import ServeOptions, serve, tell_launcher

    try:
        plan = train_plan(args)
    except CharRNNError as e:
        if args.serve_fd is not None:
            tell_launcher(args.serve_fd, f"error {e}")
        raise
    return serve(plan, ServeOptions(serve_fd=args.serve_fd, jsonl=args.jsonl, for_app=args.serve_for_app,
                                    balance_threads=args.threads is None))


def start_sweep(args: argparse.Namespace) -> Path:
    """`tune` for the app: the sweep made or found, its loop running detached; its folder."""
    from charrnn_tui.engine.cli.tune_command import start_sweep_driver

    return start_sweep_driver(args)


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
        from charrnn_tui.engine.text.corpus import refuse_csv_without_column

        refuse_csv_without_column(Path(args.corpus).expanduser(), args.encoding)


def main(argv: list[str] | None = None) -> int:
    """`python -m charrnn_tui.engine`: the headless commands only."""
    args = parse(sys.argv[1:] if argv is None else argv, "python -m charrnn_tui.engine", headless_only=True)
    return report_errors(dispatch, args)
