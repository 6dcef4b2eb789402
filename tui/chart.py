"""The loss chart's drawing, in plain Python (no widgets, no torch): series to braille cells.

A braille character is a 2x4 grid of dots, so a W x H cell plot has 2W x 4H dots. Each plotted
thing sets dots in a layer; a cell shows the dots of every layer and the colour of the most
important one in it (validation over the smoothed curve over the raw min/max band).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

BRAILLE = 0x2800
# Dot bits of a braille cell, by (column, row) in the cell.
DOT = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
RAW, SMOOTH, VAL = 1, 2, 3  # layers, in rising priority
OTHER = 4  # other runs' validation curves: layers OTHER, OTHER + 1, ...


def debiased_ema(values: Sequence[float], weight: float, widths: Sequence[int] | None = None) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average divided by its start-up bias.

    With `widths` (steps per value, for binned data), a value that stands for k steps decays the
    average as k single steps would (weight ** k)."""
    out: list[float] = []
    last, accumulated = 0.0, 0.0
    for i, value in enumerate(values):
        w = weight ** (widths[i] if widths else 1)
        last = last * w + (1 - w) * value
        accumulated = accumulated * w + (1 - w)
        out.append(last / accumulated if accumulated else value)
    return out


def nice_ticks(low: float, high: float, count: int) -> list[float]:
    """About `count` round values (1, 2, 2.5, 5 x 10^k apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low or count < 1:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def log_ticks(low: float, high: float) -> list[float]:
    """Round values for a log axis between low and high (both > 0): 1-2-5 per decade, thinned."""
    if low <= 0 or high <= low:
        return [low] if low > 0 else []
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for m in (1, 2, 5):
            value = m * 10 ** exponent
            if low <= value <= high:
                ticks.append(float(value))
    if len(ticks) < 2:  # a narrow range: linear ticks read better
        return nice_ticks(low, high, 3)
    return ticks


def format_tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) >= 0.1 else f"{value:.3g}"


def format_step(step: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if step >= size:
            text = f"{step / size:.1f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return f"{step:.0f}"


def format_seconds(seconds: float) -> str:
    """A tick of the time axis: 1:15, 1h02. Shorter than engine/durations.py's clock (01:15, 1:02:05),
    since ticks share a line, and rounded, since they sit at round values."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}" if h else f"{m}:{s:02d}"


@dataclass
class Series:
    """What the chart plots, in data coordinates (x: step, or seconds)."""

    x: list[float]  # training points (bin centres), increasing
    mean: list[float]
    low: list[float]
    high: list[float]
    widths: list[int]  # steps each point stands for
    val: list[tuple[float, float]]  # (x, loss)
    best: tuple[float, float] | None  # (x, loss) of the best validation
    others: list[list[tuple[float, float]]] = field(default_factory=list)  # other runs' validation (x, loss)


class Canvas:
    """Dots in layers over a cells_w x cells_h grid of braille cells."""

    def __init__(self, cells_w: int, cells_h: int):
        self.w, self.h = cells_w, cells_h
        self.bits = [[0] * cells_w for _ in range(cells_h)]
        self.layer = [[0] * cells_w for _ in range(cells_h)]
        self.marks: dict[tuple[int, int], str] = {}  # (row, col) -> a character drawn over the dots

    def dot(self, px: int, py: int, layer: int, force: bool = False) -> None:
        """Set the dot at pixel (px, py), py counted from the top; `force` gives the cell this
        layer's colour whatever was drawn there before."""
        if 0 <= px < 2 * self.w and 0 <= py < 4 * self.h:
            row, col = py // 4, px // 2
            self.bits[row][col] |= DOT[px % 2][py % 4]
            self.layer[row][col] = layer if force else max(self.layer[row][col], layer)

    def vline(self, px: int, py0: int, py1: int, layer: int) -> None:
        """The dots from py0 to py1 in pixel column px: `dot` for each, inlined (the chart's
        redraw is most of what an attached app costs the machine it shares with training)."""
        if not 0 <= px < 2 * self.w:
            return
        col, bits, layers, dots = px // 2, self.bits, self.layer, DOT[px % 2]
        for py in range(max(0, min(py0, py1)), min(4 * self.h - 1, max(py0, py1)) + 1):
            row = py // 4
            bits[row][col] |= dots[py % 4]
            if layers[row][col] < layer:
                layers[row][col] = layer

    def char(self, row: int, col: int) -> str:
        return self.marks.get((row, col)) or chr(BRAILLE + self.bits[row][col])


def plot(series: Series, cells_w: int, cells_h: int, *, log_scale: bool, smoothing: float,
         x_range: tuple[float, float] | None = None) -> tuple[Canvas, tuple[float, float], tuple[float, float]]:
    """Draw the series; returns the canvas and the x and y ranges it covers (y in data units)."""
    canvas = Canvas(cells_w, cells_h)
    smooth = debiased_ema(series.mean, smoothing, series.widths) if series.mean else []
    other_points = [p for curve in series.others for p in curve]
    ys = [*smooth, *(v for _, v in series.val), *(v for _, v in other_points)]
    if not ys or cells_w < 1 or cells_h < 1:
        return canvas, (0.0, 1.0), (0.0, 1.0)
    # From 0 (step 0, or the start of training): the whole run, and the whole of the runs compared.
    x0, x1 = x_range or (0.0, max([*series.x, *(x for x, _ in series.val), *(x for x, _ in other_points)],
                                  default=1.0))
    if x1 <= x0:
        x1 = x0 + 1.0
    # The range follows the smoothed curve, the validation points and the raw band without its
    # highest 2% (as TensorBoard ignores outliers): a lone spike is drawn to the top, not the scale.
    highs = sorted(series.high)
    typical_high = highs[int(0.98 * (len(highs) - 1))] if highs else -math.inf
    y0, y1 = min([*ys, *series.low]), max(*ys, typical_high)
    if log_scale:
        y0 = max(y0, 1e-3)
        y1 = max(y1, y0 * 1.01)
    elif y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pw, ph = 2 * cells_w, 4 * cells_h

    # As height_fraction and min/max would, spelled out: these run for every point at every redraw.
    x_span, last_px, last_py = x1 - x0, pw - 1, ph - 1
    log_y0 = math.log(y0) if log_scale else 0.0
    log_span = math.log(y1) - log_y0 if log_scale else 0.0

    def px_of(x: float) -> int:
        p = int((x - x0) / x_span * last_px + 0.5)
        return 0 if p < 0 else last_px if p > last_px else p

    def py_of(y: float) -> int:
        f = (math.log(y if y > y0 else y0) - log_y0) / log_span if log_scale else (y - y0) / (y1 - y0)
        p = int(round((1 - f) * last_py))
        return 0 if p < 0 else last_py if p > last_py else p

    # Raw band: per pixel column, from the lowest low to the highest high of the points in it.
    columns: dict[int, tuple[float, float]] = {}
    for x, low, high in zip(series.x, series.low, series.high, strict=True):
        c = px_of(x)
        lo, hi = columns.get(c, (low, high))
        columns[c] = (min(lo, low), max(hi, high))
    for c, (lo, hi) in columns.items():
        canvas.vline(c, py_of(lo), py_of(hi), RAW)
    # Smoothed curve: joined from point to point so it stays a line at any density.
    _polyline(canvas, [(px_of(x), py_of(y)) for x, y in zip(series.x, smooth, strict=True)], SMOOTH)
    # Other runs' validation curves, joined point to point, under this run's own points.
    for i, curve in enumerate(series.others):
        _polyline(canvas, [(px_of(x), py_of(v)) for x, v in curve], OTHER + i)
    # Validation points: a 2x2 blob each (once per pixel: a long run has many to a pixel), then
    # the best one marked.
    for px, py in dict.fromkeys((px_of(x), py_of(v)) for x, v in series.val):
        for dx in (0, 1):
            for dy in (0, 1):
                canvas.dot(px + dx - (px == pw - 1), py + dy - (py == ph - 1), VAL, force=True)
    if series.best is not None:
        bx, by = series.best
        canvas.marks[(py_of(by) // 4, px_of(bx) // 2)] = "◆"
    return canvas, (x0, x1), (y0, y1)


def height_fraction(y: float, y0: float, y1: float, log_scale: bool) -> float:
    """Where y sits between y0 (0) and y1 (1) on the axis."""
    if log_scale:
        return (math.log(max(y, y0)) - math.log(y0)) / (math.log(y1) - math.log(y0))
    return (y - y0) / (y1 - y0)


def _polyline(canvas: Canvas, points: list[tuple[int, int]], layer: int) -> None:
    """Points joined in order. The points in one pixel column are joined by one vertical run from
    their lowest to their highest (the dots the segments between them would set), so a curve of
    thousands of points costs a few per column."""
    if not points:
        return
    last = points[0]  # the latest point, in the column being gathered
    column, low, high = last[0], last[1], last[1]
    for point in points[1:]:
        px, py = point
        if px != column:
            canvas.vline(column, low, high, layer)
            _segment(canvas, last, point, layer)
            column, low, high = px, py, py
        elif py < low:
            low = py
        elif py > high:
            high = py
        last = point
    canvas.vline(column, low, high, layer)


def _segment(canvas: Canvas, a: tuple[int, int], b: tuple[int, int], layer: int) -> None:
    (xa, ya), (xb, yb) = a, b
    steps = max(abs(xb - xa), abs(yb - ya), 1)
    for i in range(steps + 1):
        canvas.dot(round(xa + (xb - xa) * i / steps), round(ya + (yb - ya) * i / steps), layer)
