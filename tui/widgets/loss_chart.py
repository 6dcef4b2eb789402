"""The whole run's loss as a braille chart with axes, drawn line by line (Textual's render_line).

The frame is computed once per data change or resize (tui/chart.py) and kept as Strips, so a
repaint costs nothing and a redraw a few milliseconds.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

from charrnn_tui.engine.history import LossHistory

from ..chart import (
    BEST_MARK,
    BRAILLE,
    OTHER,
    RAW,
    SMOOTH,
    VAL,
    Series,
    format_seconds,
    format_step,
    format_tick,
    height_fraction,
    log_ticks,
    nice_ticks,
    plot,
)
from ..chart_view import ChartView
from ..compared_runs import ComparedRun

LABEL_W = 6  # the y axis: tick labels, then a rule
STYLES = {
    0: Style(),
    RAW: Style(color="bright_black"),
    SMOOTH: Style(color="cyan", bold=True),
    VAL: Style(color="yellow", bold=True),
}
COMPARE_COLOURS = ("magenta", "green", "bright_blue", "red")  # the runs compared, in order
STYLES.update({OTHER + i: Style(color=c) for i, c in enumerate(COMPARE_COLOURS)})
MARK = Style(color="bright_white", bold=True)
AXIS = Style(color="bright_black")


class LossChart(Widget):
    DEFAULT_CSS = "LossChart { height: 1fr; min-height: 6; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.history = LossHistory()
        self.val: list[tuple[int, float]] = []
        self.timeline: list[tuple[int, float]] = []
        # Tokens a step trains on (the batch's streams x its length), for the x axis by tokens; None
        # until the run says.
        self.tokens_per_step: int | None = None
        self.compared: list[ComparedRun] = []  # other runs' validation curves, overlaid
        self.view = ChartView()
        self._lines: list[Strip] = []
        self._key: tuple | None = None

    # ---- data and settings ---------------------------------------------------------------------
    def set_data(self, history: LossHistory, val: list[tuple[int, float]], timeline: list[tuple[int, float]],
                 tokens_per_step: int | None = None) -> None:
        self.history, self.val, self.timeline = history, val, timeline
        self.tokens_per_step = tokens_per_step
        self.changed()

    def set_compared(self, runs: list[ComparedRun]) -> None:
        self.compared = runs
        self.changed()

    def changed(self) -> None:
        """Draw again: the data or the view (self.view, which the app's keys change) is new."""
        self._key = None
        self.refresh()

    # ---- drawing ------------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        size = self.size
        key = (size.width, size.height, len(self.history), len(self.val),
               tuple(len(run.points) for run in self.compared))
        if key != self._key:
            self._lines = self._frame(size)
            self._key = key
        return self._lines[y] if y < len(self._lines) else Strip.blank(size.width)

    def _series(self) -> Series:
        steps = len(self.history)
        window = self.view.window_in(steps)
        if window is not None and window < len(self.history.recent):
            # The window's steps one by one, as the history keeps the latest exactly, and those before
            # it, so that the smoothed curve has warmed up where the window starts.
            recent = list(self.history.recent)
            means = lows = highs = recent
            first = steps - len(recent) + 1
            xs, widths = [float(first + i) for i in range(len(recent))], [1] * len(recent)
        else:
            width, means, lows, highs = self.history.binned()
            xs, widths = [], []
            for i in range(len(means)):
                start, end = i * width + 1, min((i + 1) * width, steps)
                xs.append((start + end) / 2)
                widths.append(end - start + 1)
        to_x = self._x_of_step()
        xs = [to_x(x) for x in xs]
        val = [(to_x(s), v) for s, v in self.val]
        best = min(val, key=lambda p: p[1]) if val else None
        others = [self._other_curve(run) for run in self.compared[: len(COMPARE_COLOURS)]]
        return Series(xs, means, lows, highs, widths, val, best, others)

    def _x_of_step(self) -> Callable[[float], float]:
        """This run's x for a step, in the view's unit."""
        if self.view.x_unit == "time":
            return self._seconds
        if self.view.x_unit == "tokens":
            # Derived from the step and the batch's shape: the events do not carry the tokens trained
            # on (a compared run's metrics do). Near enough: a batch cut short at an epoch's end
            # counts whole (0.7% over by step 60 on the pilot test's small corpus), and a run
            # resumed with another batch size or length counts its earlier steps at the new shape.
            per_step = float(self.tokens_per_step or 0)
            return lambda step: step * per_step
        return float

    def _other_curve(self, run: ComparedRun) -> list[tuple[float, float]]:
        """A compared run's validation curve in the view's unit: its own training time, or its own
        tokens (from its metrics, exact; a point without them is left out)."""
        if self.view.x_unit == "time":
            return [(elapsed, v) for _, v, elapsed, _ in run.points]
        if self.view.x_unit == "tokens":
            return [(float(tokens), v) for _, v, _, tokens in run.points if tokens is not None]
        return [(float(step), v) for step, v, _, _ in run.points]

    def _x_range(self) -> tuple[float, float] | None:
        """The window's x range; None for the whole run."""
        steps = len(self.history)
        window = self.view.window_in(steps)
        if window is None:
            return None
        to_x = self._x_of_step()
        return to_x(steps - window), to_x(steps)

    def _seconds(self, step: float) -> float:
        """Training seconds at a step, by interpolation over the (step, seconds) points known."""
        line = self.timeline
        if not line:
            return 0.0
        i = bisect.bisect_left(line, (step, -math.inf))
        if i == 0:
            s1, t1 = line[0]
            return t1 * step / s1 if s1 else t1
        if i >= len(line):
            return line[-1][1]
        (s0, t0), (s1, t1) = line[i - 1], line[i]
        return t0 + (t1 - t0) * (step - s0) / (s1 - s0) if s1 != s0 else t1

    def _frame(self, size: Size) -> list[Strip]:
        width, height = size.width, size.height
        plot_w, plot_h = width - LABEL_W, height - 1  # the last row is the x axis
        if plot_w < 4 or plot_h < 2:
            return [Strip.blank(width) for _ in range(height)]
        series = self._series()
        if not series.x and not series.val and not any(series.others):
            return [Strip([Segment("waiting for the first losses...".ljust(width)[:width], AXIS)])] + \
                [Strip.blank(width) for _ in range(height - 1)]
        view = self.view
        canvas, (x0, x1), (y0, y1) = plot(series, plot_w, plot_h, log_scale=view.log_scale,
                                           smoothing=view.smoothing, x_range=self._x_range(), fitted=view.fitted)
        labels = self._y_labels(y0, y1, plot_h)
        lines = []
        for row in range(plot_h):
            segments = [Segment(labels.get(row, "").rjust(LABEL_W - 1)[: LABEL_W - 1] + "┤" if row in labels
                                else " " * (LABEL_W - 1) + "│", AXIS)]
            # A segment per run of cells in one style, not per cell: a segment per cell was a third
            # of a redraw (simplify then joins what has equal styles, as it always did).
            # Canvas.char inlined, as the dots' loops are in Canvas: this runs for every cell.
            layers, bits, marks = canvas.layer[row], canvas.bits[row], canvas.marks
            text: list[str] = []
            run_style: Style | None = None
            for col in range(plot_w):
                mark = marks.get((row, col))
                style = MARK if mark == BEST_MARK else STYLES[layers[col]]
                if style is not run_style and text:
                    segments.append(Segment("".join(text), run_style))
                    text = []
                run_style = style
                text.append(mark or chr(BRAILLE + bits[col]))
            segments.append(Segment("".join(text), run_style))
            lines.append(Strip(Segment.simplify(segments), width))
        lines.append(Strip([Segment(self._x_axis(x0, x1, plot_w), AXIS)], width))
        return lines

    def _y_labels(self, y0: float, y1: float, rows: int) -> dict[int, str]:
        log_scale = self.view.log_scale
        ticks = log_ticks(y0, y1) if log_scale else nice_ticks(y0, y1, max(1, rows // 2))
        labels: dict[int, str] = {}
        for value in ticks:
            f = height_fraction(value, y0, y1, log_scale)
            row = min(rows - 1, max(0, int(round((1 - f) * (rows * 4 - 1))) // 4))
            labels.setdefault(row, format_tick(value))
        return labels

    def _x_axis(self, x0: float, x1: float, cols: int) -> str:
        """The rule, round values under it, and at its end what it counts (`steps`, `last 1k steps`)."""
        line = [" "] * (LABEL_W - 1) + ["└"] + ["─"] * cols
        # At most two thirds of the axis, so that ticks keep the rest: shorter on a narrow axis, or none.
        label = next((f" {text}" for text in self.view.x_labels(len(self.history)) if len(text) < cols * 2 // 3), "")
        line[len(line) - len(label):] = list(label)
        fmt = format_seconds if self.view.x_unit == "time" else format_step
        for value in nice_ticks(x0, x1, max(1, cols // 10)):
            col = LABEL_W + int((value - x0) / (x1 - x0) * (cols - 1)) if x1 > x0 else LABEL_W
            text = fmt(value)
            start = min(max(LABEL_W, col - len(text) // 2), len(line) - len(text))
            if all(c in "─" for c in line[start : start + len(text)]):
                line[start : start + len(text)] = list(text)
        return "".join(line)
