"""Snapshots of the main screen with fixed content: no training runs, the clock is frozen."""

from __future__ import annotations

import math

import pytest

from charrnn_tui.engine import events as ev
from charrnn_tui.tui.app import CharRNNApp
from charrnn_tui.tui.widgets.status_panel import StatusPanel

NOW = 1_800_000_000.0

INFO = ev.RunInfo(
    run_name="shakespeare-lstm512-demo", run_dir="/runs/shakespeare-lstm512-demo", corpus_name="shakespeare",
    corpus_source="bundled:shakespeare", corpus_chars=1_115_394, train_tokens=1_003_855, val_tokens=111_539,
    token_kind="char", vocab_size=65, model_kind="lstm", layers=2, hidden=512, embedding=64, parameters=3_263_041,
    device="cuda", device_name="NVIDIA H100 80GB HBM3", precision="bf16", preset="large", batch_size=64,
    seq_len=256, max_steps=5000, max_epochs=None, max_time=None, resumed_step=0,
    config={"temperature": 0.8, "val_fraction": 0.1},
)


SAMPLE_1 = "KING RICHARD:\nWhat say you, my lord? [/b] the [bold]crown[/] is mine,\nAnd all the world shall know it."


def confidences(n: int) -> tuple[float, ...]:
    """A fixed spread over every shade: sure, likely, guessed, surprised."""
    return tuple((0.93, 0.31, 0.04, 0.002, 0.77, 0.6)[i % 6] for i in range(n))


def demo_reports(losses: tuple[float, ...], gpu: bool) -> list[ev.Progress]:
    """Twelve reports of 100 steps: speed and CPU settling, the rate warming up then decaying, memory
    growing; the last one's values are those the status text shows."""
    reports = []
    for k in range(1, 13):
        last = k == 12
        rate = 3e-3 * k / 2 if k <= 2 else 1.7e-3 + 1.3e-3 * (1 + math.cos(math.pi * (k - 2) / 10)) / 2
        gpu_fields = {"gpu_utilisation": 60 + 3 * k, "gpu_memory_used": (11 + k // 4) * 2**30,
                      "gpu_memory_total": 80 * 2**30} if gpu else {}
        reports.append(ev.Progress(
            step=100 * k, first_step=100 * k - 99, losses=losses[100 * (k - 1):100 * k], epoch=1.53 * k / 12,
            tokens_per_s=812_345.0 if last else 790_000.0 + 9_000 * (k % 4) - (150_000 if k == 1 else 0),
            lr=1.7e-3 if last else rate, train_seconds=83.0 * k / 12, eta_seconds=262.0, epoch_eta_seconds=40.0,
            memory_bytes=3 * 2**30, cpu_percent=None if k == 1 else 96.0 + 2 * (k % 3),
            rss_bytes=(1100 + 20 * k) * 2**20, **gpu_fields))
    return reports


def demo_events(gpu: bool = False) -> list[ev.Event]:
    losses = tuple(4.2 * math.exp(-i / 300) + 1.3 + 0.05 * math.sin(i) for i in range(1, 1201))
    return [
        ev.Started(INFO),
        ev.StateChanged("training"),
        *demo_reports(losses, gpu),
        *[ev.Evaluated(step=s, nats=v, bits=v / math.log(2), perplexity=math.exp(v), best_nats=v, is_best=True,
                       tokens=111_538, seconds=0.4)
          for s, v in ((250, 2.41), (500, 1.98), (750, 1.74), (1000, 1.61), (1200, 1.55))],
        ev.CheckpointSaved(path="/runs/shakespeare-lstm512-demo/latest.pt", step=1000, kind="latest",
                           saved_at=NOW - 42),
        ev.SampleStarted(1, 1000, "", 0.8, "live"),
        ev.SampleFinished(1, SAMPLE_1, confidences(len(SAMPLE_1)), (), 26, ((14, 40),)),
        ev.SampleStarted(2, 1200, "", 0.8, "live"),
        ev.SampleText(2, "ROMEO:\nBut soft, what light through yonder window breaks"),
        ev.SampleStarted(3, 1200, "JULIET:", 0.8, "prompt"),
        ev.SampleFinished(3, "\nO Romeo, Romeo, wherefore art thou Romeo?"),
    ]


def demo_app() -> CharRNNApp:
    return CharRNNApp(autostart=False)


async def inject(pilot, gpu: bool = False) -> None:
    app = pilot.app
    app.query_one(StatusPanel).clock = lambda: NOW
    for event in demo_events(gpu):
        app.post_engine_event(event)
    await pilot.pause()
    app.redraw()
    app.clear_notifications()  # toasts come and go with time
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
def test_main_screen(snap_compare, size):
    assert snap_compare(demo_app(), terminal_size=size, run_before=inject)


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
@pytest.mark.parametrize("keys", [("f",), ("w", "x", "x", "l")], ids=["full-range", "last-1k-steps-by-tokens-log"])
def test_chart_views(snap_compare, size, keys):
    """The loss chart's views beside the default (fitted, by steps: test_main_screen): the full
    range, and a window of the last steps by tokens on a log axis."""
    async def run_before(pilot):
        await inject(pilot)
        await pilot.press(*keys)
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=size, run_before=run_before)


def test_status_history_with_gpu_readings(snap_compare):
    """At 160x45 the status panel draws the run's history beside its text: with NVML readings, six charts."""

    async def run_before(pilot):
        await inject(pilot, gpu=True)

    assert snap_compare(demo_app(), terminal_size=(160, 45), run_before=run_before)


def test_paused_with_prompt_focused(snap_compare):
    async def run_before(pilot):
        await inject(pilot)
        pilot.app.post_engine_event(ev.StateChanged("paused"))
        from charrnn_tui.tui.widgets.prompt_panel import PromptInput

        pilot.app.query_one(PromptInput).cursor_blink = False  # a blinking cursor makes the snapshot flaky
        await pilot.pause()
        await pilot.press("p")
        await pilot.pause(0.2)  # the focus changes the panel's height and the footer: let both settle
        pilot.app.redraw()
        pilot.app.clear_notifications()
        await pilot.wait_for_scheduled_animations()
        await pilot.pause(0.2)

    assert snap_compare(demo_app(), terminal_size=(80, 24), run_before=run_before)


async def test_chart_keys_change_the_chart_and_maximise_it():
    from rich.text import Text

    from charrnn_tui.tui.widgets.loss_chart import LossChart

    app = demo_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await inject(pilot)
        chart = app.query_one(LossChart)
        panel = app.query_one("#loss")

        def lines() -> list[str]:
            return [chart.render_line(y).text for y in range(chart.size.height)]

        def title() -> str:
            return Text.from_markup(str(panel.border_title)).plain

        before = lines()
        assert title() == "Loss (nats/char) · fitted" and before[-1].endswith(" steps")
        await pilot.press("l")
        assert chart.view.log_scale and title() == "Loss (nats/char) · fitted · log"
        assert lines() != before  # redrawn in log
        await pilot.press("l", "f")
        assert not chart.view.fitted and title() == "Loss (nats/char) · full"
        full = lines()
        assert full != before and "▲" in "".join(before) and "▲" not in "".join(full)
        await pilot.press("w")  # the last 1,000 of the 1,200 steps
        assert chart.view.window == 1_000 and lines()[-1].endswith(" last 1k steps")
        assert "◆" in "".join(lines())  # the best validation, at the last step, is in the window
        await pilot.press("w", "w")  # the last 100, then the whole run again
        assert chart.view.window is None and lines() == full
        await pilot.press("x")
        assert chart.view.x_unit == "time" and "by time" in chart.view.describe() and lines()[-1].endswith(" time")
        await pilot.press("x")
        assert chart.view.x_unit == "tokens"
        assert lines()[-1] == "     └0────────────10M─────── tokens"  # 1,200 steps of 64 x 256: 19.7M
        await pilot.press("x")
        assert chart.view.x_unit == "steps" and lines() == full
        await pilot.press("full_stop", "full_stop")
        assert chart.view.smoothing == 0.9
        await pilot.press("comma")
        assert chart.view.smoothing == 0.8
        height = chart.size.height
        await pilot.press("z")
        await pilot.pause()
        assert app.screen.has_class("-chart-max") and not app.query_one("#status").display
        assert chart.size.height > height + 5  # the chart takes the screen
        await pilot.press("z")
        await pilot.pause()
        assert app.query_one("#status").display and chart.size.height == height


async def test_after_45_seconds_at_80x24_the_curve_after_step_100_crosses_5_of_the_6_plot_rows():
    """Issue 28: 45 s into the default run (3,000 steps here), the range ran from the first loss and
    the curve after step 100 sat in the bottom rows; fitted to the run after its start, it fills them."""
    from helpers import first_minute_losses

    from charrnn_tui.tui.chart import SMOOTH
    from charrnn_tui.tui.widgets.loss_chart import LABEL_W, STYLES, LossChart

    app = demo_app()
    async with app.run_test(size=(80, 24)) as pilot:
        app.post_engine_event(ev.Started(INFO))
        app.post_engine_event(ev.Progress(step=3000, first_step=1, losses=tuple(first_minute_losses(3000)), epoch=0.2,
                                          tokens_per_s=1e6, lr=2e-3, train_seconds=45.0, eta_seconds=None,
                                          epoch_eta_seconds=None, memory_bytes=None))
        await pilot.pause()
        app.redraw()
        await pilot.pause()
        chart = app.query_one(LossChart)
        plot_rows, plot_w = chart.size.height - 1, chart.size.width - LABEL_W
        after_100 = LABEL_W + int(100 / 3000 * (2 * plot_w - 1) + 0.5) // 2 + 1  # the first cell wholly after it

        def curve_after_100(row: int) -> bool:
            x = 0
            for segment in chart.render_line(row):
                if segment.style == STYLES[SMOOTH] and x + len(segment.text) > after_100:
                    return True
                x += len(segment.text)
            return False

        assert plot_rows == 6
        assert sum(map(curve_after_100, range(plot_rows))) >= 5
        await pilot.press("f")  # the full range, from the first loss: what the issue saw
        assert sum(map(curve_after_100, range(plot_rows))) <= 3


def test_the_chart_by_time_maps_steps_through_the_timeline():
    from charrnn_tui.tui.widgets.loss_chart import LossChart

    chart = LossChart()
    chart.timeline = [(100, 10.0), (200, 30.0)]
    assert chart._seconds(50) == 5.0 and chart._seconds(150) == 20.0 and chart._seconds(200) == 30.0
    assert chart._seconds(300) == 30.0


def _chart_of(steps: int):
    """A chart of a seeded run of `steps` steps, validated every 500, and no app."""
    import random

    from charrnn_tui.engine.history import LossHistory
    from charrnn_tui.tui.widgets.loss_chart import LossChart

    rng = random.Random(0)
    history = LossHistory()
    history.extend([1.3 + 2.9 * math.exp(-s / 300) + rng.gauss(0, 0.05) for s in range(1, steps + 1)])
    chart = LossChart()
    chart.set_data(history, [(s, 1.45 + 2.9 * math.exp(-s / 300)) for s in range(500, steps + 1, 500)],
                   [(s, s / 40) for s in range(0, steps + 1, 100)], tokens_per_step=64 * 256)
    return chart


def test_a_window_is_drawn_from_the_latest_losses_one_step_a_point():
    from charrnn_tui.engine.history import RECENT

    chart = _chart_of(6000)
    whole = chart._series()
    assert max(whole.widths) > 1 and chart._x_range() is None  # the whole run, binned
    chart.view.next_window(6000)
    assert chart.view.window == 1_000 and chart._x_range() == (5000.0, 6000.0)
    series = chart._series()
    # The last RECENT steps exactly, so the smoothed curve has warmed up where the window starts.
    assert series.x == [float(s) for s in range(6001 - RECENT, 6001)] and set(series.widths) == {1}
    assert series.mean == list(chart.history.recent)
    chart.view.x_unit = "time"
    assert chart._x_range() == (125.0, 150.0)  # the same steps, in training seconds
    chart.view.window = 10_000  # longer than the run: the whole run
    assert chart._x_range() is None and chart._series().widths == whole.widths


def test_the_chart_by_tokens_counts_the_batch_and_a_compared_run_by_its_own_tokens():
    from pathlib import Path

    from charrnn_tui.tui.compared_runs import ComparedRun

    chart = _chart_of(1200)
    other = ComparedRun("other", Path("."))
    other.points = [(100, 3.0, 2.0, 1_000_000), (200, 2.5, 4.0, None), (300, 2.0, 6.0, 3_000_000)]
    chart.set_compared([other])
    chart.view.x_unit = "tokens"
    series = chart._series()
    assert series.x[0] == 1 * 16_384 and series.x[-1] == 1200 * 16_384
    assert series.val == [(500 * 16_384, pytest.approx(1.45 + 2.9 * math.exp(-5 / 3))),
                          (1000 * 16_384, pytest.approx(1.45 + 2.9 * math.exp(-10 / 3)))]
    assert series.others == [[(1e6, 3.0), (3e6, 2.0)]]  # its own count; a point without one left out
    chart.view.x_unit = "steps"
    assert chart._series().others == [[(100.0, 3.0), (200.0, 2.5), (300.0, 2.0)]]
    chart.view.x_unit = "time"
    assert chart._series().others == [[(2.0, 3.0), (4.0, 2.5), (6.0, 2.0)]]


def test_samples_shaded_by_confidence(snap_compare):
    async def run_before(pilot):
        from charrnn_tui.tui.widgets.samples_panel import SamplesPanel

        await inject(pilot)
        await pilot.press("o")
        await pilot.pause()
        pilot.app.query_one(SamplesPanel).scroll_home(animate=False)  # the shaded sample, with its copy
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=(80, 24), run_before=run_before)


async def test_o_shades_tokens_by_confidence_and_copied_text_is_underlined():
    from rich.style import Style

    from charrnn_tui.tui.widgets.samples_panel import SamplesPanel, SampleView, render_sample

    app = demo_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await inject(pilot)
        panel = app.query_one(SamplesPanel)
        view = next(v for v in app.query(SampleView) if v.sample.sample_id == 1)

        def styles_at(offset: int) -> list[str]:
            """The styles over one character of the sample's text (after its header line)."""
            text = render_sample(view.sample, panel.confidence)
            start = text.plain.index("\n") + 1 + offset
            return [str(span.style) for span in text.spans if span.start <= start < span.end]

        assert view.shown == (len(SAMPLE_1), True, False)
        assert "copied 26 chars" in render_sample(view.sample).plain
        assert "underline" in styles_at(20) and "underline" not in styles_at(5)  # copied: 14-40
        assert not any("on green" in s for s in styles_at(0))
        await pilot.press("o")
        await pilot.pause()
        assert panel.confidence and "confidence" in str(panel.border_subtitle)
        assert view.shown == (len(SAMPLE_1), True, True)  # redrawn with the shades
        shades = [Style.parse(next(s for s in styles_at(i) if " on " in s)) for i in range(6)]
        assert [style.bgcolor.name for style in shades] == ["green", "yellow", "red", "magenta", "green", "green"]
        assert all(style.bgcolor.number < 8 for style in shades)  # the 8 basic colours: fine in 16
        await pilot.press("o")
        await pilot.pause()
        assert not panel.confidence and not any(" on " in s for s in styles_at(0))


async def test_the_oldest_sample_view_shows_the_newest_sample_once_the_panel_is_full():
    """A long run replaces a sample every few seconds: views are reused, not removed and mounted
    (which left memory behind, measured with bench/soak.py)."""
    from charrnn_tui.tui.run_view import MAX_SAMPLES
    from charrnn_tui.tui.widgets.samples_panel import SamplesPanel, SampleView

    app = demo_app()
    async with app.run_test(size=(80, 24)) as pilot:
        app.post_engine_event(ev.Started(INFO))
        for i in range(MAX_SAMPLES):
            app.post_engine_event(ev.SampleStarted(i, i, "", 0.8, "live"))
            app.post_engine_event(ev.SampleFinished(i, f"sample {i}"))
        await pilot.pause()
        app.redraw()
        await pilot.pause()
        panel = app.query_one(SamplesPanel)
        views = list(panel.query(SampleView))
        assert len(views) == MAX_SAMPLES and views[0].sample.sample_id == 0
        app.post_engine_event(ev.SampleStarted(MAX_SAMPLES, 99, "", 0.8, "live"))
        app.post_engine_event(ev.SampleFinished(MAX_SAMPLES, "the newest"))
        await pilot.pause()
        app.redraw()
        await pilot.pause()
        after = list(panel.query(SampleView))
        assert len(after) == MAX_SAMPLES
        assert after[-1] is views[0] and after[-1].sample.text == "the newest"  # reused, moved to the end
        assert after[0] is views[1] and set(map(id, after)) == set(map(id, views))
        assert "the newest" in str(after[-1].render())


def test_help_screen(snap_compare):
    """`?` over the main screen: its keys, the footer's and the hidden ones, each with what it does."""
    async def run_before(pilot):
        await inject(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=(80, 24), run_before=run_before)
