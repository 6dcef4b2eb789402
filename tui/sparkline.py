"""Small charts of a value over the run, in braille: the status panel's history of speed, learning rate,
CPU, memory and GPU. Plain Python, no widgets.

A chart is `cells` characters by `rows` lines, so 2 x cells dot columns by 4 x rows dot rows (as tui/chart.py
draws). The points are placed by step, from the first to the last; a dot column holds the mean of the
points in it, and one with none holds the value before it, as the run had it until the next report. Each
column is filled from the bottom up to its value, so a cell is one of 5 x 5 characters: how many of its
left and of its right column's 4 dots are lit, looked up rather than drawn dot by dot.
"""

from __future__ import annotations

from collections.abc import Sequence

from .chart import BRAILLE, DOT

FLAT = 0.05  # the least range a chart spans, as a fraction of its top
# The dots of a column filled n high from the bottom of its cell (DOT's rows count from the top).
_FILLED = [[sum(DOT[side][3 - i] for i in range(n)) for n in range(5)] for side in (0, 1)]
CELL = [[chr(BRAILLE + _FILLED[0][left] + _FILLED[1][right]) for right in range(5)] for left in range(5)]


def sparkline(points: Sequence[tuple[int, float]], cells: int, rows: int = 1, *, bottom: float | None = None,
              top: float | None = None) -> list[str]:
    """`rows` lines of `cells` braille characters: (step, value) points, oldest first, from `bottom` to `top`
    (by default the lowest and the highest value, as the range printed beside the chart says). A range
    under FLAT of its top is widened downwards: a steady value draws a steady line, not its noise."""
    if not points or cells < 1 or rows < 1:
        return [" " * max(cells, 0)] * max(rows, 0)
    columns = _columns(points, 2 * cells)
    values = [v for v in columns if v is not None]
    high = max(values) if top is None else top
    low = min(values) if bottom is None else bottom
    low = min(low, high - FLAT * abs(high))
    span = high - low if high > low else 1.0
    dots = 4 * rows - 1
    # dots lit in each column from the bottom: the lowest value one, so that it shows; none before the first point
    heights = [0 if v is None else 1 + round((min(max(v, low), high) - low) / span * dots) for v in columns]
    lines = []
    for row in range(rows):
        under = 4 * (rows - 1 - row)  # dots of this column in the rows below this one
        line = []
        for px in range(0, 2 * cells, 2):
            left, right = heights[px] - under, heights[px + 1] - under
            line.append(CELL[0 if left < 0 else 4 if left > 4 else left][0 if right < 0 else 4 if right > 4 else right])
        lines.append("".join(line))
    return lines


def _columns(points: Sequence[tuple[int, float]], width: int) -> list[float | None]:
    """The value of each of `width` dot columns: the mean of the points placed in it, else the last before."""
    first, last = points[0][0], points[-1][0]
    span = max(last - first, 1)
    sums, counts = [0.0] * width, [0] * width
    for step, value in points:
        px = min(width - 1, max(0, (step - first) * (width - 1) // span)) if len(points) > 1 else width - 1
        sums[px] += value
        counts[px] += 1
    columns: list[float | None] = []
    held: float | None = None
    for total, count in zip(sums, counts, strict=True):
        if count:
            held = total / count
        columns.append(held)
    return columns
