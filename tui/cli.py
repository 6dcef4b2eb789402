"""The `charrnn-tui` console script: the app by default, the headless commands by name."""

from __future__ import annotations

import os
import sys

from charrnn_tui.engine.cli.main import check_train_corpus, dispatch, parse, report_errors


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.command == "train" and not args.headless and not args.detach and "WORLD_SIZE" in os.environ:
        sys.stderr.write("charrnn-tui: error: under torchrun, train runs headless: add --headless (and "
                         "`charrnn-tui attach` from another terminal to watch it)\n")
        return 2
    if args.command == "attach" or (args.command == "train" and not args.headless and not args.detach):
        from .app import run_app

        return report_errors(open_app, run_app, args)
    return report_errors(dispatch, args)


def open_app(run_app, args) -> int:
    """The app, once the corpus is known to be there (run_app checks the rest, the terminal last)."""
    check_train_corpus(args)
    return run_app(args)


if __name__ == "__main__":
    sys.exit(main())
