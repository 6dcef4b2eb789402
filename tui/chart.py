"""The loss chart's drawing, in plain Python (no widgets, no torch): series to braille cells.

A braille character is a 2x4 grid of dots, so a W x H cell plot has 2W x 4H dots. Each plotted
thing sets dots in a layer; a cell shows the dots of every layer and the colour of the most
important one in it (validation over the smoothed curve over the raw min/max band).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

BRAILLE = 0x2800
# Dot bits of a braille cell, by (column, row) in the cell.
DOT = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
# The dots of a cell's column from its dot row `first` to `last` (inclusive), by column: SPANS[c][first][last].
SPANS = tuple(tuple(tuple(sum(DOT[c][first:last + 1]) for last in range(4)) for first in range(4)) for c in (0, 1))
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
    """A count of steps or tokens: 250, 1.5k, 2M, 3.2B."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
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
    """What the chart plots, in data coordinates (x: step, seconds or tokens)."""

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
        """The dots from py0 to py1 in pixel column px, as `dot` would set them, a cell at a time
        (the chart's redraw is most of what an attached app costs the machine it shares with
        training, and a fitted range makes the raw band many dots tall)."""
        top, bottom = max(0, min(py0, py1)), min(4 * self.h - 1, max(py0, py1))
        if not 0 <= px < 2 * self.w or top > bottom:
            return
        col, bits, layers, spans = px // 2, self.bits, self.layer, SPANS[px % 2]
        for row in range(top // 4, bottom // 4 + 1):
            first, last = top - 4 * row, bottom - 4 * row
            bits[row][col] |= spans[first if first > 0 else 0][last if last < 3 else 3]
            if layers[row][col] < layer:
                layers[row][col] = layer

    def char(self, row: int, col: int) -> str:
        return self.marks.get((row, col)) or chr(BRAILLE + self.bits[row][col])


# The fitted y range (the default view): the curves over the later 90% of the x range shown,
# padded by 8% of that height at each end. A run's first steps fall fastest (from ln(vocabulary),
# 4.2 at char level, through the unigram loss near 3.3, in a few dozen steps), and the smoothed
# curve's first points remember them: a range that holds them squeezes everything after into the
# bottom rows, the more so the longer the run, since the chart always shows all of it. Leaving out
# the first tenth of the x range leaves out that start at any length of run or window, whatever the
# loss's units and level (nats per char or per word, 1.2 or 5), and does not move while the loss is
# flat. Only the curves set it (the smoothed training loss, the validation points, the compared
# runs'): the raw band is the noise about the smoothed curve, and is clipped at both edges. What
# lies outside is marked on the edge it leaves by (CLIPPED_ABOVE, CLIPPED_BELOW); `f` shows all.
FIT_FROM = 0.1
FIT_PAD = 0.08
BEST_MARK, CLIPPED_ABOVE, CLIPPED_BELOW = "◆", "▲", "▼"
LOG_FLOOR = 1e-3  # the lowest value a log axis shows


def full_y_range(curves: Sequence[Sequence[tuple[float, float]]], lows: Sequence[float],
                 highs: Sequence[float]) -> tuple[float, float] | None:
    """Everything drawn: the curves, and the raw band without its highest 2% (as TensorBoard ignores
    outliers): a lone spike is drawn to the top, not made the scale. None when there is nothing."""
    ys = [y for curve in curves for _, y in curve]
    if not ys:
        return None
    ranked = sorted(highs)
    typical_high = ranked[int(0.98 * (len(ranked) - 1))] if ranked else -math.inf
    return min(*ys, *lows), max(*ys, typical_high)


def fitted_y_range(curves: Sequence[Sequence[tuple[float, float]]], x0: float, x1: float, *,
                   log_scale: bool) -> tuple[float, float] | None:
    """The curves' range over the later 1 - FIT_FROM of [x0, x1], padded (see FIT_FROM); over all of
    it when nothing lies there. None when there is nothing."""
    cut = x0 + FIT_FROM * (x1 - x0)
    ys = [y for curve in curves for x, y in curve if x >= cut] or [y for curve in curves for _, y in curve]
    if not ys:
        return None
    low, high = min(ys), max(ys)
    if log_scale:
        low, high = max(low, LOG_FLOOR), max(high, LOG_FLOOR)
        pad = (high / low) ** FIT_PAD
        return low / pad, high * pad
    pad = (high - low) * FIT_PAD
    return low - pad, high + pad


def plot(series: Series, cells_w: int, cells_h: int, *, log_scale: bool, smoothing: float,
         x_range: tuple[float, float] | None = None,
         fitted: bool = False) -> tuple[Canvas, tuple[float, float], tuple[float, float]]:
    """Draw the series; returns the canvas and the x and y ranges it covers (y in data units). Only
    what lies in `x_range` (default: from 0 to the last point) is drawn and sets the y range, fitted
    to the later part of it, or holding everything; curves outside the y range are marked on its edge."""
    canvas = Canvas(cells_w, cells_h)
    # Smoothed over every point given, so that a window's curve starts as the whole run's does there.
    smooth_all = debiased_ema(series.mean, smoothing, series.widths) if series.mean else []
    if cells_w < 1 or cells_h < 1:
        return canvas, (0.0, 1.0), (0.0, 1.0)
    # From 0 (step 0, or the start of training): the whole run, and the whole of the runs compared.
    x0, x1 = x_range or (0.0, max([*series.x, *(x for x, _ in series.val), *(x for c in series.others for x, _ in c)],
                                  default=1.0))
    if x1 <= x0:
        x1 = x0 + 1.0
    first, end = bisect.bisect_left(series.x, x0), bisect.bisect_right(series.x, x1)
    xs, lows, highs = series.x[first:end], series.low[first:end], series.high[first:end]
    smooth = list(zip(xs, smooth_all[first:end], strict=True))
    val = [p for p in series.val if x0 <= p[0] <= x1]
    others = [[p for p in curve if x0 <= p[0] <= x1] for curve in series.others]
    curves = [smooth, val, *others]
    y_range = fitted_y_range(curves, x0, x1, log_scale=log_scale) if fitted else full_y_range(curves, lows, highs)
    if y_range is None:  # nothing in the x range
        return canvas, (x0, x1), (0.0, 1.0)
    y0, y1 = y_range
    if log_scale:
        y0 = max(y0, LOG_FLOOR)
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
        """The dot row, from the top; outside 0..last_py where y is outside the range (the canvas
        draws only what is inside, and `drawn` notes the rest for the edge's marks)."""
        f = (math.log(y if y > y0 else y0) - log_y0) / log_span if log_scale else (y - y0) / (y1 - y0)
        return int(round((1 - f) * last_py))

    # Raw band: per pixel column, from the lowest low to the highest high of the points in it.
    columns: dict[int, tuple[float, float]] = {}
    for x, low, high in zip(xs, lows, highs, strict=True):
        c = px_of(x)
        lo, hi = columns.get(c, (low, high))
        columns[c] = (min(lo, low), max(hi, high))
    for c, (lo, hi) in columns.items():
        canvas.vline(c, py_of(lo), py_of(hi), RAW)
    clipped: dict[tuple[int, int], int] = {}  # (row, column) on an edge -> the layer of a curve beyond it

    def drawn(points: list[tuple[int, int]], layer: int) -> list[tuple[int, int]]:
        for px, py in points:
            if not 0 <= py <= last_py:
                key = (0 if py < 0 else cells_h - 1, px // 2)
                clipped[key] = max(clipped.get(key, 0), layer)
        return points

    # Smoothed curve: joined from point to point so it stays a line at any density.
    _polyline(canvas, drawn([(px_of(x), py_of(y)) for x, y in smooth], SMOOTH), SMOOTH)
    # Other runs' validation curves, joined point to point, under this run's own points.
    for i, curve in enumerate(others):
        _polyline(canvas, drawn([(px_of(x), py_of(v)) for x, v in curve], OTHER + i), OTHER + i)
    # Validation points: a 2x2 blob each (once per pixel: a long run has many to a pixel), then
    # the best one marked.
    for px, py in drawn(list(dict.fromkeys((px_of(x), py_of(v)) for x, v in val)), VAL):
        for dx in (0, 1):
            for dy in (0, 1):
                canvas.dot(px + dx - (px == pw - 1), py + dy - (py == ph - 1), VAL, force=True)
    for (row, col), layer in clipped.items():
        canvas.marks[(row, col)] = CLIPPED_ABOVE if row == 0 else CLIPPED_BELOW
        canvas.layer[row][col] = layer  # the mark takes the colour of the curve it stands for
    if series.best is not None and x0 <= series.best[0] <= x1 and 0 <= py_of(series.best[1]) <= last_py:
        bx, by = series.best
        canvas.marks[(py_of(by) // 4, px_of(bx) // 2)] = BEST_MARK
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
