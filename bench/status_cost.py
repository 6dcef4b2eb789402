"""CPU time of one status-panel redraw in the app, as it pays it: after a key (a new temperature: the
text changes, the charts are the last ones) and after a progress report with its charts drawn again
(which the app does at most every CHART_INTERVAL, 5 s).

    python bench/status_cost.py [--reports 20000] [--repeat 100] [--gpu]

Folds a run of --reports progress reports (binned to at most 2 x 128 points a chart: a longer run
costs the same) and an evaluation every 40 reports into the app's view, then, in a headless app of
each terminal size (80x24: the text alone; 100x30: charts of one line under it; 160x45 and 200x60:
charts beside it), times StatusPanel.show and the rendering of the panel's lines and its charts'.
Prints the median and the 90th percentile in ms of CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import itertools
import math
import statistics
import sys
import time
from pathlib import Path

from textual.geometry import Region

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charrnn_tui.engine import events as ev  # noqa: E402
from charrnn_tui.tui.app import CharRNNApp  # noqa: E402
from charrnn_tui.tui.run_view import RunView  # noqa: E402
from charrnn_tui.tui.widgets.status_panel import CHART_INTERVAL, StatusCharts, StatusPanel  # noqa: E402

SIZES = ((80, 24), (100, 30), (160, 45), (200, 60))
INFO = ev.RunInfo(
    run_name="bench", run_dir="/runs/bench", corpus_name="shakespeare", corpus_source="bundled:shakespeare",
    corpus_chars=1_115_394, train_tokens=1_003_855, val_tokens=111_539, token_kind="char", vocab_size=65,
    model_kind="lstm", layers=2, hidden=512, embedding=64, parameters=3_263_041, device="cuda",
    device_name="NVIDIA H100 80GB HBM3", precision="bf16", preset="large", batch_size=64, seq_len=256,
    max_steps=None, max_epochs=None, max_time=None, resumed_step=0)


def a_long_run(reports: int, gpu: bool) -> RunView:
    view = RunView()
    view.apply(ev.Started(INFO))
    view.apply(ev.StateChanged("training"))
    for k in range(1, reports + 1):
        step = 10 * k
        readings = {"gpu_utilisation": 90 + k % 7, "gpu_memory_used": (12 << 30) + (k % 50 << 20),
                    "gpu_memory_total": 80 << 30} if gpu else {}
        view.apply(ev.Progress(
            step=step, first_step=step - 9, losses=(2.0,) * 10, epoch=step / 4000, tokens_per_s=800_000.0 + k % 13,
            lr=1e-3 * (1 + math.cos(math.pi * k / reports)) / 2, train_seconds=k / 4, eta_seconds=None,
            epoch_eta_seconds=60.0, memory_bytes=3 << 30, cpu_percent=100.0 + k % 9, rss_bytes=(1 << 30) + k,
            **readings))
        if k % 40 == 0:
            nats = 1.5 + 1 / math.sqrt(k)
            view.apply(ev.Evaluated(step, nats, nats / math.log(2), math.exp(nats), nats, True, 111_539, 0.5,
                                    best_step=step))
    return view


def _summary(times: list[float]) -> str:
    times = sorted(times)
    return f"median {statistics.median(times):.2f} ms, p90 {times[int(0.9 * (len(times) - 1))]:.2f} ms"


async def time_sizes(view: RunView, repeat: int) -> None:
    last = view.progress
    assert last is not None
    for size in SIZES:
        app = CharRNNApp(autostart=False)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            panel = app.query_one(StatusPanel)
            panel.clock = lambda: 0.0
            charts = panel.query_one(StatusCharts)
            # every report a chart redraw: the worst case
            charts.clock = functools.partial(next, itertools.count(0.0, CHART_INTERVAL))
            found = {}
            for what in ("key", "report"):
                times = []
                for i in range(repeat):
                    if what == "key":
                        view.apply(ev.SettingsChanged(0.8 + 0.1 * (i % 2)))
                    else:
                        view.apply(dataclasses.replace(last, step=last.step + 10 * (i + 1), losses=(2.0,)))
                    started = time.process_time()
                    panel.show(view)
                    panel.render_lines(Region(0, 0, *panel.size))
                    if charts.display:
                        charts.render_lines(Region(0, 0, *charts.size))
                    times.append((time.process_time() - started) * 1000)
                found[what] = _summary(times)
            print(f"{size[0]}x{size[1]} (panel {panel.size.width}x{panel.size.height}): after a key {found['key']}; "
                  f"after a report {found['report']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=20_000, help="progress reports (4 a second: 83 minutes)")
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--gpu", action="store_true", help="NVML readings too: six charts, not four")
    args = parser.parse_args()
    asyncio.run(time_sizes(a_long_run(args.reports, args.gpu), args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
