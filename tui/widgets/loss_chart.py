"""The whole run's loss as a braille chart with axes, drawn line by line (Textual's render_line).

The frame is computed once per data change or resize (tui/chart.py) and kept as Strips, so a
repaint costs nothing and a redraw a few milliseconds.
"""

from __future__ import annotations

import bisect
import math

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

from charrnn_tui.engine.history import LossHistory

from ..chart import (
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
SMOOTHINGS = (0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.99)


class LossChart(Widget):
    DEFAULT_CSS = "LossChart { height: 1fr; min-height: 6; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.history = LossHistory()
        self.val: list[tuple[int, float]] = []
        self.timeline: list[tuple[int, float]] = []
        self.compared: list[ComparedRun] = []  # other runs' validation curves, overlaid
        self.log_scale = False
        self.by_time = False
        self.smoothing = 0.6
        self._lines: list[Strip] = []
        self._key: tuple | None = None

    # ---- data and settings ---------------------------------------------------------------------
    def set_data(self, history: LossHistory, val: list[tuple[int, float]], timeline: list[tuple[int, float]]) -> None:
        self.history, self.val, self.timeline = history, val, timeline
        self._key = None
        self.refresh()

    def set_compared(self, runs: list[ComparedRun]) -> None:
        self.compared = runs
        self._key = None
        self.refresh()

    def toggle_log(self) -> None:
        self.log_scale = not self.log_scale
        self._key = None
        self.refresh()

    def toggle_time(self) -> None:
        self.by_time = not self.by_time
        self._key = None
        self.refresh()

    def step_smoothing(self, direction: int) -> None:
        i = min(range(len(SMOOTHINGS)), key=lambda k: abs(SMOOTHINGS[k] - self.smoothing))
        self.smoothing = SMOOTHINGS[max(0, min(len(SMOOTHINGS) - 1, i + direction))]
        self._key = None
        self.refresh()

    def describe(self) -> str:
        return (f"smoothing {self.smoothing:g} · {'log' if self.log_scale else 'linear'} · "
                f"by {'time' if self.by_time else 'step'}")

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
        width, means, lows, highs = self.history.binned()
        steps = len(self.history)
        xs, widths = [], []
        for i in range(len(means)):
            start, end = i * width + 1, min((i + 1) * width, steps)
            xs.append((start + end) / 2)
            widths.append(end - start + 1)
        val = [(float(s), v) for s, v in self.val]
        best = min(val, key=lambda p: p[1]) if val else None
        others = [[(elapsed if self.by_time else float(step), v) for step, v, elapsed in run.points]
                  for run in self.compared[: len(COMPARE_COLOURS)]]
        if self.by_time:
            xs = [self._seconds(x) for x in xs]
            val = [(self._seconds(s), v) for s, v in val]
            best = (self._seconds(best[0]), best[1]) if best else None
        return Series(xs, means, lows, highs, widths, val, best, others)

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
        canvas, (x0, x1), (y0, y1) = plot(series, plot_w, plot_h, log_scale=self.log_scale,
                                           smoothing=self.smoothing)
        labels = self._y_labels(y0, y1, plot_h)
        lines = []
        for row in range(plot_h):
            segments = [Segment(labels.get(row, "").rjust(LABEL_W - 1)[: LABEL_W - 1] + "┤" if row in labels
                                else " " * (LABEL_W - 1) + "│", AXIS)]
            # A segment per run of cells in one style, not per cell: a segment per cell was a third
            # of a redraw (simplify then joins what has equal styles, as it always did).
            layers = canvas.layer[row]
            text: list[str] = []
            run_style: Style | None = None
            for col in range(plot_w):
                style = MARK if (row, col) in canvas.marks else STYLES[layers[col]]
                if style is not run_style and text:
                    segments.append(Segment("".join(text), run_style))
                    text = []
                run_style = style
                text.append(canvas.char(row, col))
            segments.append(Segment("".join(text), run_style))
            lines.append(Strip(Segment.simplify(segments), width))
        lines.append(Strip([Segment(self._x_axis(x0, x1, plot_w), AXIS)], width))
        return lines

    def _y_labels(self, y0: float, y1: float, rows: int) -> dict[int, str]:
        ticks = log_ticks(y0, y1) if self.log_scale else nice_ticks(y0, y1, max(1, rows // 2))
        labels: dict[int, str] = {}
        for value in ticks:
            f = height_fraction(value, y0, y1, self.log_scale)
            row = min(rows - 1, max(0, int(round((1 - f) * (rows * 4 - 1))) // 4))
            labels.setdefault(row, format_tick(value))
        return labels

    def _x_axis(self, x0: float, x1: float, cols: int) -> str:
        line = [" "] * (LABEL_W - 1) + ["└"] + ["─"] * cols
        fmt = format_seconds if self.by_time else format_step
        for value in nice_ticks(x0, x1, max(1, cols // 10)):
            col = LABEL_W + int((value - x0) / (x1 - x0) * (cols - 1)) if x1 > x0 else LABEL_W
            text = fmt(value)
            start = min(max(LABEL_W, col - len(text) // 2), len(line) - len(text))
            if all(c in "─" for c in line[start : start + len(text)]):
                line[start : start + len(text)] = list(text)
        return "".join(line)
