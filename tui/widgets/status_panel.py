"""Run, model, device and progress at a glance, with a clear TRAINING / PAUSED / FINISHED state."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.css.scalar import Scalar
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from charrnn_tui.engine.durations import duration

from ..formatting import lr_text, si, size_bytes
from ..run_view import RunView
from .status_history import Chart, chart_lines, charts, validation_lines

STATE_STYLES = {
    "starting": ("STARTING", "bold yellow"),
    "training": ("TRAINING", "bold green"),
    "paused": ("PAUSED", "bold black on yellow"),
    "finished": ("FINISHED", "bold black on green"),
    "stopped": ("STOPPED", "bold"),
    "error": ("ERROR", "bold white on red"),
    "detached": ("DISCONNECTED", "bold white on red"),
}


# The text is laid out for the 36 columns the panel has at 80x24; with a column of charts beside it
# at least SIDE_MIN wide (from 63 columns of panel: a terminal of 134), the history goes there.
TEXT_WIDTH = 36
GAP = 3
SIDE_MIN = 24
# Seconds between redraws of the charts for new reports. A history over the whole run moves slowly
# (the text gives the speed and rate of the moment), and a redraw that falls on a key delays its answer.
CHART_INTERVAL = 5.0


class StatusPanel(Static):
    """The status text, with the run's history where there is room: the validation points in the text,
    under it, and the charts in a child of their own (StatusCharts), docked right of the text or under it,
    so that a key's redraw of the text does not draw the charts again."""

    clock = staticmethod(time.time)  # replaceable, for deterministic snapshots

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.view: RunView | None = None  # the last shown: drawn again to a new size
        self.charts = StatusCharts()

    def compose(self) -> ComposeResult:
        yield self.charts

    def on_mount(self) -> None:
        self.border_title = "Status"

    def show(self, view: RunView) -> None:
        self.view = view
        width, height = self.content_size
        text, layout, shown = render_panel(view, width, height, self.clock())
        # its size is the layout's, not its text's: no layout pass
        self.update(text, layout=False)
        self.charts.show(view, shown, layout)

    def on_resize(self) -> None:
        if self.view is not None:
            self.show(self.view)


class StatusCharts(Widget):
    """The charts, drawn into strips when the reports or their room change, and only then: for new
    reports at most every CHART_INTERVAL seconds, for a new history (a welcome) or a new size at once."""

    DEFAULT_CSS = "StatusCharts { display: none; }"
    clock = staticmethod(time.monotonic)  # replaceable, for tests

    def __init__(self) -> None:
        super().__init__()
        self._strips: list[Strip] = []
        self._key: tuple[object, ...] | None = None
        self._drawn_at = -math.inf

    def show(self, view: RunView, shown: list[tuple[Chart, list[tuple[int, float]]]], layout: PanelLayout) -> None:
        width, rows = layout.chart_width, layout.chart_rows
        self._place(rows > 0, "right" if layout.beside else "bottom", width, rows)
        key = (view.reports, view.reports.added, view.unit, width, rows)  # the object itself: a welcome's is new
        if rows <= 0 or key == self._key:
            return
        anew = self._key is None or self._key[0] is not key[0] or self._key[2:] != key[2:]
        if anew or self.clock() - self._drawn_at >= CHART_INTERVAL:
            self._key, self._drawn_at = key, self.clock()
            console = self.app.console
            self._strips = [Strip(list(line.render(console)), line.cell_len).adjust_cell_length(width)
                            for line in chart_lines(shown, width, rows)]
            self.refresh()

    def _place(self, shown: bool, dock: str, width: int, height: int) -> None:
        """Docked right of the text or under it; styles set only when they change (each is a layout)."""
        if self.display != shown:
            self.display = shown
        if shown and (self.styles.dock, self.styles.width, self.styles.height) != (dock, Scalar.from_number(width),
                                                                                    Scalar.from_number(height)):
            self.styles.dock, self.styles.width, self.styles.height = dock, width, height

    def render_line(self, y: int) -> Strip:
        return self._strips[y] if y < len(self._strips) else Strip.blank(self.size.width)


@dataclass(frozen=True)
class PanelLayout:
    """Where the history goes in a panel of a given size; rows 0: not shown."""

    beside: bool  # the charts in a column right of the text; else under it, one line each
    chart_width: int
    chart_rows: int
    val_width: int  # the validation points: under the text, in the rows left
    val_rows: int


def panel_layout(width: int, height: int, text_rows: int, charts: int) -> PanelLayout:
    """Charts beside the text when the column left is SIDE_MIN wide, else a line each under it."""
    below = max(0, height - text_rows)
    side = width - TEXT_WIDTH - GAP
    if side >= SIDE_MIN:
        return PanelLayout(True, side, height if charts else 0, TEXT_WIDTH, below)
    chart_rows = min(below, charts)
    return PanelLayout(False, width, chart_rows, width, below - chart_rows)


def render_panel(view: RunView, width: int, height: int, now: float | None = None
                 ) -> tuple[Text, PanelLayout, list[tuple[Chart, list[tuple[int, float]]]]]:
    """The panel's text (the status, and the validation points under it where there is room), where
    the charts go (panel_layout), and the charts; at 80x24, the status text alone and no charts."""
    text = render_status(view, now).split("\n")
    shown = charts(view)
    # the rows the text takes: beside the charts a line each (cut to its column), else as it wraps
    beside = width - TEXT_WIDTH - GAP >= SIDE_MIN
    rows = len(text) if beside else sum(max(1, -(-line.cell_len // max(width, 1))) for line in text)
    layout = panel_layout(width, height, rows, len(shown))
    lines = [*text, *validation_lines(view, layout.val_width, layout.val_rows)]
    if layout.beside:  # the charts' column starts GAP columns right of the text: no line wraps into it
        for line in lines:
            line.truncate(TEXT_WIDTH, overflow="ellipsis")
    return Text("\n").join(lines), layout, shown


def render_status(view: RunView, now: float | None = None) -> Text:
    """Nine short lines: they fit the 36 columns the panel has in an 80-column terminal."""
    now = time.time() if now is None else now
    label, style = STATE_STYLES.get(view.state, (view.state.upper(), "bold"))
    info = view.info
    epoch = int(view.epoch)
    lines = [Text.assemble((f" {label} ", style), f" step {view.step:,} · epoch {epoch + 1} {view.epoch - epoch:.0%}")]
    if view.state in ("error", "detached") and view.reason:
        lines.append(Text(view.reason, "red"))
    if view.overfitting_since is not None:  # in the run name's place: the one thing to know now
        lines.append(Text(f"overfitting since step {view.overfitting_since:,}", "bold yellow"))
    elif info is None:
        lines.append(Text("loading corpus and model...", "dim"))
    else:
        stop = f" · early stop {view.early_stop}" if view.early_stop else ""
        lines.append(Text(info.run_name + stop, "dim", overflow="ellipsis", no_wrap=True))
    if info is not None:
        lines.append(_pair("corpus", f"{info.corpus_name}, {si(info.corpus_chars)} chars"))
        lines.append(_pair("model", f"{info.model_kind} {info.layers}x{info.hidden}, {si(info.parameters)} params"))
        lines.append(_pair("device", info.device_name + ("" if info.precision == "fp32" else f" {info.precision}")))
    if view.validating is not None and view.state == "training":
        v = view.validating
        lines.append(_pair("speed", (f"validating {v.done:.0%}", "bold cyan"), f" of {si(v.tokens)} {view.unit}"))
    elif view.learning:
        lines.append(_pair("speed", f"{si(view.tokens_per_s)} {view.unit}/s · lr {lr_text(view.lr)}"))
    else:  # steps at rate 0 change no weight: the losses printed are not learning
        lines.append(_pair("speed", f"{si(view.tokens_per_s)} {view.unit}/s · ", ("not learning: lr 0", "bold yellow")))
    if view.eta_seconds is not None:
        eta = f"ETA {duration(view.eta_seconds)}"
    else:
        eta = f"epoch ends {duration(view.epoch_eta_seconds)}"
    lines.append(_pair("time", f"{duration(view.train_seconds)} · {eta}"))
    lines.append(_pair("temp", f"{view.temperature:.2f} · {_memory(view)}"))
    if view.gpu is not None:  # only on a GPU with nvidia-ml-py installed
        lines.append(_pair("gpu", gpu_line(*view.gpu)))
    saved = "not yet"
    if view.saved_at is not None:
        saved = f"step {view.saved_step:,}, {duration(now - view.saved_at)} ago"
    if view.overfitting_since is not None and view.best_val is not None:
        lines.append(Text(f"best.pt is step {view.best_step:,}, val {view.best_val:.4f}", "bold yellow"))
    else:
        lines.append(_pair("saved", saved))
    return Text("\n").join(lines)


def _pair(name: str, *value: str | tuple[str, str]) -> Text:
    """A dim name, then its value: text, or (text, style) parts."""
    return Text.assemble((f"{name:<7}", "dim"), *value)


def gpu_line(utilisation: int, used: int, total: int | None) -> str:
    of = f" of {size_bytes(total)}" if total else ""
    return f"{utilisation}% busy · {size_bytes(used)}{of} in use"


def _memory(view: RunView) -> str:
    """The engine's memory, as it reports it: GPU memory on CUDA, else its peak RAM."""
    on_gpu = view.info is not None and view.info.device == "cuda"
    return f"{'GPU mem' if on_gpu else 'RAM peak'} {size_bytes(view.memory_bytes)}"
