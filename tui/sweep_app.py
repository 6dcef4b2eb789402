"""The app opened on a sweep (`charrnn-tui tune` without --headless): the sweep's screen first, a
trial attached as any run is. The sweep's loop runs in a process of its own, so closing the app
leaves it going."""

from __future__ import annotations

import sys
from pathlib import Path

from charrnn_tui.engine.printable import printable
from charrnn_tui.engine.runs import command_hint, is_live

from .app import CharRNNApp
from .sweep_board import read_board


def run_sweep_app(folder: Path) -> int:
    app = CharRNNApp(autostart=False, runs_dir=folder.parent, sweep=folder)
    app.run()
    sys.stdout.write(printable(sweep_exit_message(folder)))
    return 0


def sweep_exit_message(folder: Path) -> str:
    """Where the sweep is, once the screen has gone."""
    watch = command_hint(f"tune --resume {folder.name}", folder.parent)
    board = read_board(folder)
    if not is_live(folder) and board.winner is not None:
        winner = board.row(board.winner)
        name = f"{folder.name}/{board.winner}"
        if board.continued and winner is not None and winner.live:
            return (f"sweep {folder.name} ended: {board.winner} won and trains on; "
                    f"`{command_hint(f'attach {name}', folder.parent)}` watches it, "
                    f"`{command_hint(f'stop {name}', folder.parent)}` ends it\n")
        return f"sweep {folder.name} ended: {board.winner} won (its best.pt: {folder / board.winner / 'best.pt'})\n"
    if is_live(folder):
        return (f"sweep {folder.name} goes on in the background (its output: {folder / 'tune.log'}); "
                f"`{watch}` watches it\n")
    return f"sweep {folder.name} is not running; `{watch}` continues it if it has budget left (--budget for more)\n"
