"""The runs in the runs folder, with their state; Enter attaches to a live one."""

from __future__ import annotations

import time
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from charrnn_tui.engine.run_commands import format_age
from charrnn_tui.engine.runs import RunEntry, list_runs

REFRESH = 2.0  # seconds


class RunsScreen(ModalScreen[str | None]):
    """Dismisses with the folder of the live run to attach to, or None."""

    BINDINGS = [
        Binding("escape,r,q", "dismiss(None)", "Close"),
        Binding("enter", "attach", "Attach", priority=True),
    ]

    def __init__(self, runs_dir: Path | None, current: str | None = None) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.current = current
        self.entries: list[RunEntry] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="runs-dialog"):
            yield Static("Runs: enter attaches to a live one, escape closes", id="runs-title", markup=False)
            yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("", "name", "state", "corpus", "model", "step", "best val", "viewers", "active")
        self.refresh_runs()
        self.set_interval(REFRESH, self.refresh_runs)
        table.focus()

    def refresh_runs(self) -> None:
        from charrnn_tui.engine.runs import default_runs_dir

        self.entries = list_runs(Path(self.runs_dir) if self.runs_dir else default_runs_dir())
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        now = time.time()
        for e in self.entries:
            best = "-" if e.best_val is None else f"{e.best_val:.4f}"
            table.add_row("*" if str(e.path) == self.current else "", e.name, e.state, e.corpus or "-",
                          e.model or "-", "-" if e.step is None else f"{e.step:,}", best,
                          str(e.viewers) if e.live else "-", format_age(now - e.updated), key=str(e.path))
        if self.entries:
            table.move_cursor(row=min(row, len(self.entries) - 1))

    def action_attach(self) -> None:
        table = self.query_one(DataTable)
        if not self.entries:
            return
        entry = self.entries[min(table.cursor_row, len(self.entries) - 1)]
        if not entry.live:
            self.notify(f"{entry.name} is {entry.state}, not running: `charrnn-tui train --resume {entry.name}` "
                        "continues it", severity="warning", markup=False)
            return
        self.dismiss(str(entry.path))
