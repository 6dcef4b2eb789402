"""The runs in the runs folder, with their state; Enter attaches to a live one; space marks runs
whose validation curves `c` overlays on this run's chart."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from charrnn_tui.engine.durations import age
from charrnn_tui.engine.printable import printable_line
from charrnn_tui.engine.runs import UNREADABLE, RunEntry, list_runs, run_hint

REFRESH = 2.0  # seconds
REASON_WIDTH = 60  # characters of why a run is unreadable, shown in its corpus column


@dataclass(frozen=True)
class RunsChoice:
    attach: str | None = None  # the folder of a live run to attach to
    compare: tuple[RunEntry, ...] | None = None  # runs to overlay on the chart (empty: stop comparing)


class RunsScreen(ModalScreen[RunsChoice | None]):
    """Dismisses with what the user chose, or None."""

    BINDING_GROUP_TITLE = "Runs"
    BINDINGS = [
        Binding("escape,r,q", "dismiss(None)", "Close", tooltip="Close the runs"),
        Binding("enter", "attach", "Attach", priority=True, tooltip="Attach to the highlighted run, a live one"),
        Binding("space", "mark", "Mark to compare", tooltip="Mark the highlighted run to compare, or unmark it"),
        Binding("c", "compare", "Compare marked",
                tooltip="Overlay the marked runs' validation curves on the chart (none marked: take them away)"),
    ]

    def __init__(self, runs_dir: Path | None, current: str | None = None, marked: set[str] | None = None) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.current = current
        self.marked: set[str] = set(marked or ())  # run folders
        self.entries: list[RunEntry] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="runs-dialog"):
            yield Static("Runs: enter attaches to a live one; space marks runs, c overlays their validation "
                         "curves on the chart; escape closes", id="runs-title", markup=False)
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
            mark = "*" if str(e.path) == self.current else "+" if str(e.path) in self.marked else ""
            corpus = (e.corpus or "-") if e.problem is None else e.problem[:REASON_WIDTH]
            cells = (mark, e.name, e.state, corpus, e.model_label, "-" if e.step is None else f"{e.step:,}", best,
                     str(e.viewers) if e.live else "-", age(now - e.updated))
            # Text, not str: a DataTable parses a str cell as markup, and names and fields come from
            # folders and files ("[/x]" raised MarkupError; "[draft] notes" showed as " notes").
            table.add_row(*(Text(printable_line(c)) for c in cells), key=str(e.path))
        if self.entries:
            table.move_cursor(row=min(row, len(self.entries) - 1))

    def action_mark(self) -> None:
        table = self.query_one(DataTable)
        if not self.entries:
            return
        entry = self.entries[min(table.cursor_row, len(self.entries) - 1)]
        if str(entry.path) == self.current:
            return  # this run is on the chart already
        self.marked.symmetric_difference_update({str(entry.path)})
        self.refresh_runs()

    def action_compare(self) -> None:
        """Overlay the marked runs (none marked: take the overlay away)."""
        self.dismiss(RunsChoice(compare=tuple(e for e in self.entries if str(e.path) in self.marked)))

    def action_attach(self) -> None:
        table = self.query_one(DataTable)
        if not self.entries:
            return
        entry = self.entries[min(table.cursor_row, len(self.entries) - 1)]
        if entry.state == UNREADABLE and not entry.live:
            self.notify(printable_line(f"{entry.name} is unreadable: {entry.problem}"), severity="warning",
                        markup=False)
            return
        if not entry.live:
            resume = run_hint("train --resume", entry.path)
            self.notify(printable_line(f"{entry.name} is {entry.state}, not running: `{resume}` continues it"),
                        severity="warning", markup=False)
            return
        self.dismiss(RunsChoice(attach=str(entry.path)))
