"""The status panel's history (tui/sparkline.py, tui/widgets/status_history.py) and where it goes by the
panel's size (tui/widgets/status_panel.py panel_layout): at 80x24 the text alone, as it always was."""

from __future__ import annotations

import math

import pytest
from helpers import progress_event, run_info

from charrnn_tui.engine import events as ev
from charrnn_tui.tui.run_view import RunView
from charrnn_tui.tui.sparkline import sparkline
from charrnn_tui.tui.widgets.status_history import chart_lines, charts, range_text, validation_lines
from charrnn_tui.tui.widgets.status_panel import (
    CHART_INTERVAL,
    PanelLayout,
    panel_layout,
    render_panel,
    render_status,
)

GIB = 1 << 30
NOW = 1_800_000_000.0

# Braille dots by column (left, right), from the bottom row up: 0x40/0x80, 0x04/0x20, 0x02/0x10, 0x01/0x08.
FULL, EMPTY = "⣿", "⠀"
BRAILLE = {chr(0x2800 + bits) for bits in range(256)}


# ---- sparklines ---------------------------------------------------------------------------------------
def test_a_sparkline_fills_each_dot_column_up_to_its_value_between_the_given_bottom_and_top():
    # 2 cells = 4 dot columns, 1 row = 4 dot rows: the bottom (a dot, so that it shows), a third, two
    # thirds, the top (all four)
    assert sparkline([(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0)], 2, 1, bottom=0.0, top=3.0) == [
        chr(0x2800 | 0x40 | 0x80 | 0x20) + chr(0x2800 | 0x40 | 0x04 | 0x02 | 0x80 | 0x20 | 0x10 | 0x08)]
    assert sparkline([(0, 3.0), (3, 3.0)], 1, 2, bottom=0.0, top=3.0) == [FULL, FULL]
    assert sparkline([(0, 9.0), (3, 9.0)], 1, 1, bottom=0.0, top=3.0) == [FULL]  # above the top: clipped


def test_points_are_placed_by_step_and_a_column_holds_the_last_value_until_the_next():
    # steps 0 and 3 of 0..3 over 4 dot columns: the low value holds over the columns between
    low_then_high = sparkline([(0, 0.0), (3, 4.0)], 2, 1, bottom=0.0, top=4.0)
    assert low_then_high == [chr(0x2800 | 0x40 | 0x80) + chr(0x2800 | 0x40 | 0x80 | 0x20 | 0x10 | 0x08)]
    # a point at step 1 of 0..3 lands in the second column of the first cell: columns are by step, not index
    middle = sparkline([(0, 0.0), (1, 4.0), (3, 0.0)], 2, 1, bottom=0.0, top=4.0)
    assert middle[0][0] == chr(0x2800 | 0x40 | 0x80 | 0x20 | 0x10 | 0x08)


def test_by_default_a_sparkline_spans_its_values_but_never_magnifies_a_steady_one():
    rising = sparkline([(s, 100.0 + s) for s in range(8)], 4, 1)
    assert rising[0][0] == chr(0x2800 | 0x40 | 0x80) and rising[0][-1] == FULL  # the lowest a dot, the highest full
    steady = sparkline([(s, 100.0 + (s % 2) * 0.5) for s in range(8)], 4, 1)  # noise of 0.5%
    assert steady == [FULL * 4]  # one steady height, at the top: not a sawtooth of the noise


def test_a_sparkline_with_nothing_to_draw_is_blank_of_its_size():
    assert sparkline([], 3, 2) == ["   ", "   "] and sparkline([(5, 1.0)], 0, 1) == [""]
    assert sparkline([(5, 1.0)], 2, 1, bottom=0.0, top=1.0) == [EMPTY + chr(0x2800 | 0x08 | 0x10 | 0x20 | 0x80)]


# ---- the panel's layout by size --------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "layout"), [
    ((36, 9), PanelLayout(False, 36, 0, 36, 0)),  # 80x24: the text fills the panel
    ((46, 11), PanelLayout(False, 46, 2, 46, 0)),  # 100x30: two charts of one line under the text
    ((56, 15), PanelLayout(False, 56, 4, 56, 2)),  # 120x40: four charts, then the validation points
    ((62, 17), PanelLayout(False, 62, 4, 62, 4)),  # a column beside the text would be under 24 wide
    ((63, 17), PanelLayout(True, 24, 17, 36, 8)),  # the charts beside the text, the points under it
    ((76, 17), PanelLayout(True, 37, 17, 36, 8)),  # 160x45
])
def test_the_history_goes_beside_the_text_when_there_is_room_else_under_it(size, layout):
    assert panel_layout(*size, text_rows=9, charts=4) == layout


def test_under_the_text_the_rows_it_wraps_to_are_left_to_it():
    view = _run(gpu=True)  # ten lines: its name's is 62 characters, its gpu line's 43
    lines = render_status(view, NOW).plain.split("\n")
    assert len(lines) == 10 and max(map(len, lines)) == 62 and "gpu    90% busy · 2.0 GiB of 8.0 GiB in use" in lines
    assert render_panel(view, 43, 12, NOW)[1].chart_rows == 1 and render_panel(view, 42, 12, NOW)[1].chart_rows == 0


def test_a_run_with_no_reports_yet_gives_its_charts_no_rows():
    assert panel_layout(76, 17, 9, 0).chart_rows == 0 and panel_layout(46, 11, 9, 0).val_rows == 2


# ---- what the panel draws ---------------------------------------------------------------------------------
def _run(gpu: bool = False) -> RunView:
    view = RunView()
    view.apply(ev.Started(run_info(run_name="a-run-whose-name-is-longer-than-the-text-column")))
    view.apply(ev.StateChanged("training"))
    for k in range(1, 41):
        readings = {"gpu_utilisation": 50 + k, "gpu_memory_used": 2 * GIB, "gpu_memory_total": 8 * GIB} if gpu else {}
        view.apply(progress_event(10 * k, [2.0] * 10, lr=1e-3 * (1 + math.cos(math.pi * k / 40)) / 2 + 1e-4,
                                  cpu_percent=None if k == 1 else 150.0 + k, rss_bytes=(500 + k) << 20, **readings))
    for step, nats in ((100, 2.5), (200, 2.1), (300, 1.9), (400, 1.95)):
        view.apply(ev.Evaluated(step, nats, nats / math.log(2), math.exp(nats), 1.9, nats == 1.9, 100, 0.1))
    return view


def test_at_80x24_the_panel_is_the_status_text_alone_as_it_always_was():
    view = _run(gpu=True)
    panel, layout, _ = render_panel(view, 36, 9, NOW)
    text = render_status(view, NOW)
    assert panel.plain == text.plain and panel.spans == text.spans and layout.chart_rows == 0


def test_a_large_panel_draws_charts_beside_the_text_and_the_validation_points_under_it():
    view = _run()
    text, layout, shown = render_panel(view, 76, 17, NOW)
    lines = text.plain.split("\n")
    text_rows = len(render_status(view, NOW).plain.split("\n"))
    assert layout == PanelLayout(True, 37, 17, 36, 17 - text_rows)
    assert all(len(line) <= 36 for line in lines) and lines[1] == "a-run-whose-name-is-longer-than-the…"
    assert lines[text_rows] == "val loss · best 1.900 at step 300"
    assert lines[text_rows + 1:] == ["  100 2.500   200 2.100   300 1.900◆", "  400 1.950"]
    charts_drawn = [line.plain for line in chart_lines(shown, layout.chart_width, layout.chart_rows)]
    # 17 rows for 4 charts: a line of name, value and range over 3 braille rows each
    assert len(charts_drawn) == 16 and all(len(line) <= 37 for line in charts_drawn)
    assert [charts_drawn[row].split()[0] for row in (0, 4, 8, 12)] == ["chars/s", "lr", "cpu", "memory"]
    assert all(set(charts_drawn[row]) <= BRAILLE for row in (1, 2, 3, 13, 14, 15))
    assert charts_drawn[0] == "chars/s  1.4k  1.0k–1.4k"  # progress_event's speed is 1000 + step
    assert charts_drawn[8] == "cpu      190%  152%–190%"  # the first report had no CPU rate


async def test_the_charts_are_docked_beside_the_text_on_a_large_terminal_and_hidden_at_80x24():
    from charrnn_tui.tui.app import CharRNNApp
    from charrnn_tui.tui.widgets.status_panel import StatusCharts, StatusPanel

    app = CharRNNApp(autostart=False)
    async with app.run_test(size=(160, 45)) as pilot:
        panel = app.query_one(StatusPanel)
        panel.clock = lambda: NOW
        app.view = _run()
        app.redraw()
        await pilot.pause()
        charts_widget = panel.query_one(StatusCharts)
        assert charts_widget.display and charts_widget.region.width == 37 and charts_widget.region.height == 17
        assert charts_widget.region.right == panel.content_region.right  # docked right, beside the text
        assert charts_widget.render_line(0).text.startswith("chars/s  1.4k")
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert not charts_widget.display and "val loss" not in str(panel.render())
        await pilot.resize_terminal(100, 30)  # room under the text (its name wraps): a chart of one line
        await pilot.pause()
        assert charts_widget.display and charts_widget.region.height == 1
        assert charts_widget.region.bottom == panel.content_region.bottom
        one_line = charts_widget.render_line(0).text
        assert one_line.startswith("chars/s  ⣀") and one_line.endswith(" 1.4k") and len(one_line) == 46
        # a new report: drawn again, but not sooner than CHART_INTERVAL after the last (a new size is at once)
        clock = [1000.0]
        charts_widget.clock = lambda: clock[0]
        charts_widget._drawn_at = clock[0]
        app.view.apply(progress_event(410, [2.0] * 10, tokens_per_s=5000.0))
        app.redraw()
        await pilot.pause()
        assert charts_widget.render_line(0).text.endswith(" 1.4k")
        clock[0] += CHART_INTERVAL
        panel.show(app.view)  # as the app's redraw does each second (for the clock of the last save)
        await pilot.pause()
        assert charts_widget.render_line(0).text.endswith(" 5.0k")


def test_gpu_charts_are_there_only_with_nvml_readings():
    names = [line.plain.split()[0] for line in chart_lines(charts(_run(gpu=True)), 30, 6)]
    assert names == ["chars/s", "lr", "cpu", "memory", "gpu", "gpu"]  # one line each: 6 rows for 6 charts
    assert chart_lines(charts(_run(gpu=True)), 30, 6)[4].plain.endswith(" 90%")
    assert [line.plain.split()[0] for line in chart_lines(charts(_run()), 30, 6)] == ["chars/s", "lr", "cpu", "memory"]


def test_charts_in_one_line_each_line_up_their_values_and_the_first_that_fit_are_shown():
    lines = [line.plain for line in chart_lines(charts(_run()), 30, 3)]
    assert [line.split()[0] for line in lines] == ["chars/s", "lr", "cpu"]
    assert {len(line) for line in lines} == {30} and lines[2].endswith("  190%")


def test_the_validation_list_shows_the_latest_points_that_fit_the_best_marked_wherever_it_is():
    view = _run()
    for step in range(500, 1100, 100):
        view.apply(ev.Evaluated(step, 2.0 + step / 10_000, 2.9, 7.4, 1.9, False, 100, 0.1))
    lines = [line.plain for line in validation_lines(view, 24, 3)]  # 2 points a line, 2 lines
    assert lines == ["val loss · best 1.900 at", "  700 2.070   800 2.080", "  900 2.090    1k 2.100"]
    assert validation_lines(view, 36, 1) == [] and validation_lines(RunView(), 36, 5) == []
    assert validation_lines(_run(), 36, 2)[1].plain.rstrip() == "  200 2.100   300 1.900◆  400 1.950"


@pytest.mark.parametrize(("low", "high", "shown"), [
    ("493.3 MiB", "582.1 MiB", "493.3–582.1 MiB"),  # a shared unit once
    ("900.0 MiB", "1.2 GiB", "900.0 MiB–1.2 GiB"),  # different units both kept
    ("64%", "100%", "64%–100%"),  # no unit apart from the number
    ("3.2e-4", "8.0e-3", "3.2e-4–8.0e-3"),
])
def test_range_text_writes_a_shared_unit_once(low, high, shown):
    assert range_text(low, high) == shown
