"""CPU time of one loss-chart redraw (tui/chart.py + the widget's frame), as the app pays it.

    python bench/chart_cost.py [--points 20000] [--size 200x50] [--repeat 30] [--compare 0] [--keys fwxl]

Fills the chart with a run of --points steps (and its validation points, and --compare other
runs' curves), then times the frame the widget computes when the data changed: binning, smoothing,
plotting in braille and the axis labels. Prints the median and the 90th percentile in ms. --keys
sets the view as the chart keys would, from the default (fitted, whole run, by steps): f the full
range, w the last 1,000 steps (ww the last 100...), x by time (xx by tokens), l a log axis.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

from textual.geometry import Size

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charrnn_tui.engine.history import LossHistory  # noqa: E402
from charrnn_tui.tui.compared_runs import ComparedRun  # noqa: E402
from charrnn_tui.tui.widgets.loss_chart import LossChart  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--size", default="200x50")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--compare", type=int, default=0, help="other runs' validation curves overlaid")
    parser.add_argument("--keys", default="", help="the chart keys pressed first (f, w, x, l)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    rng = random.Random(0)
    history = LossHistory()
    history.extend([4 * math.exp(-i / 3000) + 1.3 + rng.gauss(0, 0.05) for i in range(args.points)])
    val = [(s, 4 * math.exp(-s / 3000) + 1.45) for s in range(250, args.points + 1, 250)]
    timeline = [(s, s / 40) for s in range(0, args.points + 1, 100)]
    chart = LossChart()
    chart.history, chart.val, chart.timeline, chart.tokens_per_step = history, val, timeline, 64 * 256
    for k in range(args.compare):
        run = ComparedRun(f"other-{k}", Path("."))
        run.points = [(s, v + 0.02 * k, s / 40, s * 64 * 256) for s, v in val]
        chart.compared.append(run)
    for key in args.keys:
        {"f": chart.view.toggle_fit, "x": chart.view.next_x_unit, "l": chart.view.toggle_log,
         "w": lambda: chart.view.next_window(len(history))}[key]()
    size = Size(width, height)
    times = []
    for _ in range(args.repeat):
        started = time.process_time()
        chart._frame(size)
        times.append((time.process_time() - started) * 1000)
    times.sort()
    print(f"{args.points:,} steps, {len(val)} validation points, {args.compare} compared, {width}x{height}, "
          f"{chart.view.describe()}: "
          f"median {statistics.median(times):.1f} ms, p90 {times[int(0.9 * (len(times) - 1))]:.1f} ms of CPU "
          "per redraw")
    return 0


if __name__ == "__main__":
    sys.exit(main())
