"""The app's view of a sweep (`charrnn-tui tune`): a line on the sweep, the leaderboard, the leading
trials' validation curves by tokens, and the latest sample of the trial attached.

The sweep's loop runs in a process of its own (engine/cli/tune_command.py start_sweep_driver); this
screen only reads: sweep.json every REFRESH seconds (tui/sweep_board.py), the charted trials'
metrics.jsonl (tui/compared_runs.py). The app stays attached to one trial as to any run: the one
chosen with Enter, else the best that trains, and, once the sweep ends with `--continue`, the winner
training on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from charrnn_tui.engine.durations import duration
from charrnn_tui.engine.printable import printable_line
from charrnn_tui.engine.runs import command_hint, is_live, run_hint

from ..compared_runs import MAX_COMPARED, ComparedRun
from ..formatting import short_count
from ..run_view import RunView
from ..sweep_board import Board, TrialRow, read_board
from .leaderboard import Leaderboard
from .loss_chart import COMPARE_COLOURS, LossChart
from .samples_panel import render_sample

REFRESH = 2.0  # seconds between reads of sweep.json and the charted trials' metrics
ATTACH_AGAIN = 10.0  # seconds before the screen asks again to attach the trial it asked for


class TrialWatcher(Protocol):
    """What the screen needs of the app (CharRNNApp): the attached run's view, and attaching."""

    view: RunView

    @property
    def running(self) -> bool: ...

    def attach_run(self, run_dir: str) -> None: ...

    def action_detach(self) -> None: ...


class SweepScreen(Screen[str | None]):
    """Dismisses with the folder of a trial to watch, or None (back to the trial attached)."""

    BINDING_GROUP_TITLE = "The sweep"
    BINDINGS = [
        Binding("enter", "watch", "Watch trial", priority=True,
                tooltip="Attach to the highlighted trial, training, and show its whole view"),
        Binding("escape", "dismiss(None)", "Trial view", tooltip="The attached trial's whole view (v comes back)"),
        Binding("l", "chart_log", "Chart: log scale, or not", show=False),
        Binding("f", "chart_fit", "Chart: loss range fitted, or full", show=False),
        Binding("q,d", "leave", "Leave",
                tooltip="Close the app; the sweep goes on (`tune --resume` watches it again)"),
    ]

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.board = Board(folder.name)
        self.curves: dict[str, ComparedRun] = {}  # by trial name: read incrementally, kept while charted
        self.asked: tuple[str, float] | None = None  # (trial folder, when) the screen last asked to attach

    @property
    def charrnn(self) -> TrialWatcher:
        return cast(TrialWatcher, self.app)  # pushed by CharRNNApp only

    def compose(self) -> ComposeResult:
        yield Static(id="sweep-title", markup=False)
        yield Leaderboard(id="leaderboard")
        with Vertical(id="sweep-chart-panel"):
            yield LossChart(id="sweep-chart")
        yield Static(id="sweep-sample", markup=False)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#sweep-chart", LossChart).view.x_unit = "tokens"  # trials compare at equal tokens
        self.refresh_board()
        self.set_interval(REFRESH, self.refresh_board)
        self.query_one(Leaderboard).focus()

    # ---- what it shows ---------------------------------------------------------------------------
    def refresh_board(self) -> None:
        self.board = read_board(self.folder)
        self.show_board()
        self.follow()

    def show_board(self) -> None:
        board, table = self.board, self.query_one(Leaderboard)
        self.query_one("#sweep-title", Static).update(self.title_line())
        if board.problem is not None:
            table.clear()
            table.rows_shown = []
            return
        charted = self.charted(table.highlighted)
        table.show(board, charted, self.attached_name())
        self.show_curves(charted)
        self.show_sample()

    def title_line(self) -> Text:
        board = self.board
        text = Text(printable_line(board.name), style="bold")
        if board.problem is not None:
            text.append(f" · unreadable: {printable_line(board.problem)}", style="red")
            return text
        # the state first: at 80 columns the rungs may not fit, the winner must
        if is_live(self.folder):
            text.append(" · running", style="green")
        elif board.winner is not None:
            text.append(f" · ended: {printable_line(board.winner)} won", style="bold")
            if board.continued:
                text.append(", trains on")
        else:
            text.append(f" · stopped: `{command_hint(f'tune --resume {board.name}', self.folder.parent)}`",
                        style="yellow")
        started = len(board.rows)
        text.append(f" · {duration(board.spent_s)}/{duration(board.budget_s)} · {started}/{board.planned} trials"
                    f" · rungs {' '.join(short_count(r) for r in board.rungs)}")
        return text

    def charted(self, highlighted: TrialRow | None) -> list[str]:
        """The trials whose curves are drawn: the leading ones, and the highlighted one in the last
        colour if it is not among them (so any trial's curve is a cursor move away)."""
        names = [r.folder for r in self.board.rows if r.rung is not None or r.live][:MAX_COMPARED]
        if highlighted is not None and highlighted.folder not in names:
            names = names[:MAX_COMPARED - 1] + [highlighted.folder]
        return names

    def show_curves(self, names: list[str]) -> None:
        self.curves = {n: self.curves.get(n) or ComparedRun(n, self.folder / n) for n in names}
        changed = [curve.refresh() for curve in self.curves.values()]  # each reads only what was appended
        chart = self.query_one("#sweep-chart", LossChart)
        runs = [self.curves[n] for n in names]
        if any(changed) or [r.name for r in chart.compared] != names:
            chart.set_compared(runs)
        title = Text("Validation loss by tokens:")
        for name, colour in zip(names, COMPARE_COLOURS, strict=False):
            title.append(f" {printable_line(name)}", style=colour)
        title.append(f" · {chart.view.y_label()}", style="dim")
        self.query_one("#sweep-chart-panel").border_title = title

    def show_sample(self) -> None:
        view, name = self.charrnn.view, self.attached_name()
        widget = self.query_one("#sweep-sample", Static)
        if name is None:
            widget.update(Text("no trial attached: Enter attaches the highlighted one", style="dim"))
            return
        text = Text(f"{printable_line(name)} ({view.state}) · ", style="bold")
        if not view.samples:
            text.append("no sample yet", style="dim")
        else:
            text.append_text(render_sample(view.samples[max(view.samples)]))
        widget.update(text)

    def attached_name(self) -> str | None:
        info = self.charrnn.view.info
        if info is None or Path(info.run_dir).parent != self.folder:
            return None
        return Path(info.run_dir).name

    # ---- the trial attached ------------------------------------------------------------------------
    def follow(self) -> None:
        """Attach the trial worth watching when the one attached no longer trains: the winner once it
        trains on (`--continue`), else the best trial training."""
        app, board = self.charrnn, self.board
        if board.problem is not None or (app.running and not board.continued):
            return
        live = [r for r in board.rows if r.live]
        if board.continued:
            live = [r for r in live if r.name == board.winner]
        if not live or (app.running and self.attached_name() == live[0].folder):
            return
        self.attach(live[0].folder)

    def attach(self, name: str) -> None:
        path = str(self.folder / name)
        if self.asked is not None and self.asked[0] == path and time.monotonic() - self.asked[1] < ATTACH_AGAIN:
            return  # asked already: the engine's welcome is on its way
        self.asked = (path, time.monotonic())
        self.charrnn.attach_run(path)

    # ---- keys ------------------------------------------------------------------------------------
    def action_watch(self) -> None:
        row = self.query_one(Leaderboard).highlighted
        if row is None:
            return
        if not row.live:
            hint = run_hint("sample", self.folder / row.folder)
            self.notify(printable_line(f"{row.name} is {row.state}, not training: `{hint}` samples from it"),
                        severity="warning", markup=False)
            return
        self.attach(row.folder)
        self.dismiss(str(self.folder / row.folder))

    def action_chart_log(self) -> None:
        self.query_one("#sweep-chart", LossChart).view.toggle_log()
        self._chart_changed()

    def action_chart_fit(self) -> None:
        self.query_one("#sweep-chart", LossChart).view.toggle_fit()
        self._chart_changed()

    def _chart_changed(self) -> None:
        self.query_one("#sweep-chart", LossChart).changed()
        self.show_curves([r.name for r in self.query_one("#sweep-chart", LossChart).compared])

    def action_leave(self) -> None:
        self.charrnn.action_detach()

    def on_data_table_row_highlighted(self) -> None:
        if self.board.problem is None and self.board.rows:
            self.show_curves(self.charted(self.query_one(Leaderboard).highlighted))
