"""A sweep's trials as a table, best first (tui/sweep_board.py reads them): the trial, its settings,
the tokens it has trained on, its best validation loss by its highest rung, its state. The trials on the
chart carry a dot in their curve's colour; the one attached, a star."""

from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import DataTable

from charrnn_tui.engine.printable import printable_line

from ..formatting import short_count
from ..sweep_board import Board, TrialRow
from .loss_chart import COMPARE_COLOURS

STATE_STYLES = {"training": "bold green", "finished": "bold", "pruned": "dim", "diverged": "red", "failed": "red",
                "stopped": "yellow"}


class Leaderboard(DataTable):
    """Refilled by `show`; the highlighted trial stays highlighted as the order changes."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.add_columns("", "trial", "model", "dropout", "lr", "seq", "tokens", "val", "state")
        self.rows_shown: list[TrialRow] = []

    @property
    def highlighted(self) -> TrialRow | None:
        if not self.rows_shown:
            return None
        return self.rows_shown[min(max(self.cursor_row, 0), len(self.rows_shown) - 1)]

    def show(self, board: Board, charted: list[str], attached: str | None) -> None:
        """The board's rows; `charted`: the trials on the chart, in their colours' order."""
        was = self.highlighted
        self.clear()
        self.rows_shown = list(board.rows)
        for row in board.rows:
            mark = Text("*" if row.folder == attached else " ")
            if row.folder in charted and charted.index(row.folder) < len(COMPARE_COLOURS):
                mark.append("●", style=COMPARE_COLOURS[charted.index(row.folder)])
            # Text, not str: a DataTable parses a str cell as markup, and the names come from a file.
            self.add_row(mark, Text(printable_line(row.name)), Text(printable_line(row.model)),
                         Text(f"{row.dropout:.2f}"), Text(f"{row.lr:.2g}"), Text(str(row.seq_len)),
                         Text(short_count(row.tokens) if row.tokens else "-"), Text(val_text(row.val)),
                         Text(row.state, style=STATE_STYLES.get(row.state, "")), key=row.name)
        if was is not None:
            at = next((i for i, r in enumerate(self.rows_shown) if r.name == was.name), 0)
            self.move_cursor(row=at)


def val_text(val: float | None) -> str:
    return "-" if val is None else "diverged" if not math.isfinite(val) else f"{val:.4f}"
