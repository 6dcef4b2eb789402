"""What the status panel adds when it has room: the run's reports over its whole life as small charts
(speed, learning rate, the engine's CPU and memory, the GPU's utilisation and memory where NVML reads
them) and its latest validation points, the best marked. Rich text lines, drawn from the view alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text

from ..chart import format_step
from ..formatting import lr_text, si, size_bytes
from ..run_view import RunView
from ..sparkline import sparkline

LABEL = 9  # columns of a chart's name
MAX_SPARK_ROWS = 3  # braille rows under a chart's name, however tall the panel
BEST = "◆"  # as the loss chart marks the best validation point
CELL = 12  # columns of a validation point: "  1.2k 1.554◆"


@dataclass(frozen=True)
class Chart:
    name: str
    field: str  # of engine/report_history.py's FIELDS
    style: str
    text: Callable[[float], str]  # a value as the panel says it
    scale: tuple[float, float] | None = None  # the chart's bottom and top; None: the lowest and highest value


def _percent(value: float) -> str:
    return f"{value:.0f}%"


def _bytes(value: float) -> str:
    return size_bytes(int(value))


def charts(view: RunView) -> list[tuple[Chart, list[tuple[int, float]]]]:
    """The charts with something to show, in the panel's order, each with its points."""
    speed = Chart(f"{view.unit}/s", "tokens_per_s", "green", si)
    candidates = (speed, Chart("lr", "lr", "yellow", lr_text), Chart("cpu", "cpu_percent", "cyan", _percent),
                  Chart("memory", "rss_bytes", "magenta", _bytes),
                  Chart("gpu", "gpu_utilisation", "cyan", _percent, scale=(0.0, 100.0)),
                  Chart("gpu mem", "gpu_memory_used", "magenta", _bytes))
    shown = [(chart, view.reports.series(chart.field)) for chart in candidates]
    return [(chart, points) for chart, points in shown if points]


def chart_lines(shown: list[tuple[Chart, list[tuple[int, float]]]], width: int, rows: int) -> list[Text]:
    """The charts (as `charts` gives them) in `rows` lines of `width` columns: a line of name, value and
    range over a few braille rows each when there are rows enough, else one line each (name, braille,
    value), the first that fit."""
    if not shown or rows < 1:
        return []
    spark_rows = min(MAX_SPARK_ROWS, rows // len(shown) - 1)
    now_width = max(len(chart.text(points[-1][1])) for chart, points in shown)
    lines: list[Text] = []
    for chart, points in shown[:rows]:
        values = [v for _, v in points]
        now = chart.text(values[-1])
        bottom, top = chart.scale or (None, None)
        name = (f"{chart.name:<{LABEL}}", "dim")
        if spark_rows >= 1:
            span = range_text(chart.text(min(values)), chart.text(max(values)))
            lines.append(Text.assemble(name, (now, "bold"), (f"  {span}", "dim")))
            rows_drawn = sparkline(points, width, spark_rows, bottom=bottom, top=top)
            lines += [Text.assemble((row, chart.style)) for row in rows_drawn]  # a span: Text.render drops a base style
        else:
            cells = max(0, width - LABEL - now_width - 1)
            spark = sparkline(points, cells, 1, bottom=bottom, top=top)[0]
            lines.append(Text.assemble(name, (spark, chart.style), " ", (f"{now:>{now_width}}", "bold")))
    for line in lines:
        line.truncate(width)  # joined beside the text, a line keeps no overflow of its own
    return lines


def range_text(low: str, high: str) -> str:
    """"493.3–582.1 MiB" for "493.3 MiB" and "582.1 MiB": a unit the two share is written once, so the
    range fits beside the text at 160 columns (it was cut at "582.1 M")."""
    low_number, _, low_unit = low.rpartition(" ")
    high_number, _, high_unit = high.rpartition(" ")
    if low_number and high_number and low_unit == high_unit:
        return f"{low_number}–{high}"
    return f"{low}–{high}"


def validation_lines(view: RunView, width: int, rows: int) -> list[Text]:
    """The latest validation points that fit in `rows` lines of `width` columns, oldest first, under a
    line naming the best; nothing with fewer than 2 rows or no point yet."""
    points = view.val_losses
    if rows < 2 or not points:
        return []
    best = min(points, key=lambda p: p[1])  # thinning always keeps it (engine/history.py)
    lines = [Text(f"val loss · best {best[1]:.3f} at step {best[0]:,}", "dim")]
    per_line = max(1, width // CELL)
    shown = points[-per_line * (rows - 1):]
    for start in range(0, len(shown), per_line):
        line = Text()
        for point in shown[start:start + per_line]:
            step, nats = point
            line.append(f"{format_step(step):>5} ", "dim")
            line.append(f"{nats:.3f}", "bold yellow" if point == best else "")
            line.append(BEST if point == best else " ", "bold yellow")  # the mark's column parts the points
        lines.append(line)
    for line in lines:
        line.rstrip()
        line.truncate(width)
    return lines
