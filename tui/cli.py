"""The `charrnn-tui` console script: the TUI by default, the headless commands by name."""

from __future__ import annotations

import sys

from charrnn_tui.engine.cli import COMMANDS, build_parser, dispatch, report_errors


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `charrnn-tui [CORPUS] [options]` is `train` in the TUI.
    bare = not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"))
    args = build_parser().parse_args(["train", *argv] if bare else argv)
    if args.command == "train" and not args.headless:
        from .app import run_app

        return report_errors(run_app, args)
    return report_errors(dispatch, args)


if __name__ == "__main__":
    sys.exit(main())
