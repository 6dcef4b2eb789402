"""The `charrnn-tui` console script: the app by default, the headless commands by name."""

from __future__ import annotations

import os
import sys

from charrnn_tui.engine.cli.main import check_train_corpus, dispatch, parse, report_errors, start_sweep


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.command == "train" and not args.headless and not args.detach and "WORLD_SIZE" in os.environ:
        sys.stderr.write("charrnn-tui: error: under torchrun, train runs headless: add --headless (and "
                         "`charrnn-tui attach` from another terminal to watch it)\n")
        return 2
    if args.command == "attach" or (args.command == "train" and not args.headless and not args.detach):
        from .app import run_app

        return report_errors(open_app, run_app, args)
    if args.command == "tune" and not args.headless and has_terminal():
        # Without a terminal (a script, a pipe) tune prints as with --headless: there is nothing to draw on.
        return report_errors(open_sweep_app, args)
    return report_errors(dispatch, args)


def open_sweep_app(args) -> int:
    """`tune` without --headless: the sweep starts in the background, the app watches it."""
    from .sweep_app import run_sweep_app

    return run_sweep_app(start_sweep(args))


def has_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def open_app(run_app, args) -> int:
    """The app, once the corpus is known to be there (run_app checks the rest, the terminal last)."""
    check_train_corpus(args)
    return run_app(args)


if __name__ == "__main__":
    sys.exit(main())
