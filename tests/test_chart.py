"""The loss chart's drawing (tui/chart.py): smoothing, ticks, and what lands on the canvas."""

import math

import pytest
from helpers import examples, first_minute_losses
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_tui.engine.history import LossHistory
from charrnn_tui.tui.chart import (
    BRAILLE,
    CLIPPED_ABOVE,
    RAW,
    SMOOTH,
    VAL,
    Series,
    debiased_ema,
    format_seconds,
    format_step,
    log_ticks,
    nice_ticks,
    plot,
)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 24), st.integers(-3, 40)), max_size=200), st.integers(1, 9))
def test_a_polyline_sets_the_dots_of_every_segment_between_its_points(raw, layer):
    """The chart joins the points of one pixel column with one vertical run: the same dots (and
    layers) as joining each point to the next, which is what it replaced."""
    from charrnn_tui.tui.chart import Canvas, _polyline, _segment

    points = sorted(raw, key=lambda p: p[0])  # curves go left to right; within a column, any order
    fast, slow = Canvas(10, 8), Canvas(10, 8)
    for canvas in (fast, slow):  # something already drawn, in lower and higher layers
        canvas.vline(3, 0, 31, 5)
        canvas.vline(7, 10, 20, 0)
    _polyline(fast, points, layer)
    for i, point in enumerate(points):
        if i == 0:
            slow.dot(*point, layer)
        else:
            _segment(slow, points[i - 1], point, layer)
    assert (fast.bits, fast.layer) == (slow.bits, slow.layer)


def test_the_debiased_ema_matches_a_hand_computation():
    values, w = [4.0, 2.0, 3.0], 0.6
    # TensorBoard: last = last * w + (1 - w) * v, divided by 1 - w ** n
    l1 = 0.4 * 4.0
    l2 = l1 * 0.6 + 0.4 * 2.0
    l3 = l2 * 0.6 + 0.4 * 3.0
    expected = [l1 / (1 - 0.6), l2 / (1 - 0.36), l3 / (1 - 0.216)]
    assert debiased_ema(values, w) == pytest.approx(expected)
    assert debiased_ema(values, 0.0) == values  # no smoothing
    # a point standing for 3 steps decays the average as 3 single points would
    assert debiased_ema([1.0, 5.0], 0.5, widths=[1, 3]) == pytest.approx(debiased_ema([1.0, 5.0, 5.0, 5.0], 0.5)[::3])


def test_ticks_are_round_and_cover_the_range():
    assert nice_ticks(1.3, 4.2, 3) == [2.0, 3.0, 4.0]
    assert nice_ticks(0.0, 1.0, 4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert log_ticks(0.8, 12.0) == [1.0, 2.0, 5.0, 10.0]
    assert format_step(1500) == "1.5k" and format_step(2_000_000) == "2M" and format_step(250) == "250"
    assert format_seconds(75) == "1:15" and format_seconds(3725) == "1h02"


def _series(losses: list[float], val=(), bins: int = 64) -> Series:
    history = LossHistory(bins=bins)
    history.extend(losses)
    width, means, lows, highs = history.binned()
    xs = [min(i * width + width / 2, len(losses)) for i in range(len(means))]
    best = min(val, key=lambda p: p[1]) if val else None
    return Series(xs, means, lows, highs, [width] * len(means), list(val), best)


def test_a_spike_survives_downsampling_and_does_not_set_the_scale():
    losses = [1.0 if i % 2 else 3.0 for i in range(5000)]  # noisy around 2
    losses[2500] = 30.0  # one bad step among 5,000, drawn in 40 columns
    series = _series(losses)
    assert max(series.high) == 30.0  # min/max bins keep it where a mean would have lost it
    canvas, _, (y0, y1) = plot(series, 40, 8, log_scale=False, smoothing=0.9)
    assert y0 == 1.0 and y1 < 5  # the scale is the noise's, not the spike's
    spike_col = int((2500 - series.x[0]) / (series.x[-1] - series.x[0]) * 79 + 0.5) // 2
    assert canvas.layer[0][spike_col] != 0  # drawn to the top of its column
    # The band of the noise is there, faint, behind the smoothed line
    assert any(canvas.layer[r][5] == RAW for r in range(8)) and any(canvas.layer[r][5] == SMOOTH for r in range(8))


def test_validation_points_and_the_best_are_drawn_over_the_curve():
    losses = [4.0 * math.exp(-i / 300) + 1.5 for i in range(2000)]
    val = [(500.0, 2.4), (1000.0, 1.9), (2000.0, 1.7)]
    canvas, (x0, x1), _ = plot(_series(losses, val), 30, 6, log_scale=True, smoothing=0.6)
    assert x0 == 0 and x1 == 2000
    layers = {canvas.layer[r][c] for r in range(6) for c in range(30)}
    assert {RAW, SMOOTH, VAL} <= layers
    assert list(canvas.marks.values()) == ["◆"] and canvas.char(*next(iter(canvas.marks))) == "◆"
    assert all(BRAILLE <= ord(canvas.char(r, c)) <= BRAILLE + 255 for r in range(6) for c in range(30)
               if (r, c) not in canvas.marks)


def test_an_empty_run_draws_nothing():
    canvas, _, _ = plot(Series([], [], [], [], [], [], None), 10, 4, log_scale=False, smoothing=0.6)
    assert all(canvas.bits[r][c] == 0 for r in range(4) for c in range(10))


def test_other_runs_curves_widen_the_axes_and_are_drawn_in_their_own_layers():
    from charrnn_tui.tui.chart import OTHER

    losses = [2.0 - i / 2000 for i in range(1000)]
    series = _series(losses, [(500.0, 1.9), (1000.0, 1.8)])
    series.others = [[(0.0, 3.0), (1500.0, 1.2), (3000.0, 1.1)], [(100.0, 2.5), (200.0, 2.4)]]
    canvas, (x0, x1), (y0, y1) = plot(series, 40, 8, log_scale=False, smoothing=0.0)
    assert (x0, x1) == (0.0, 3000.0) and y0 == pytest.approx(1.1) and y1 == pytest.approx(3.0)
    layers = {canvas.layer[r][c] for r in range(8) for c in range(40)}
    assert {OTHER, OTHER + 1, VAL, SMOOTH} <= layers
    assert canvas.layer[7][39] == OTHER  # the other run's last point: the lowest, furthest right
    # This run's validation points keep their colour where a compared curve crosses them.
    series.others = [[(float(x), 1.9) for x in range(0, 1001, 10)]]
    canvas, _, (y0, y1) = plot(series, 40, 8, log_scale=False, smoothing=0.0)
    column = int(500 / 1000 * 79 + 0.5) // 2
    assert VAL in {canvas.layer[r][column] for r in range(8)}


def test_a_compared_runs_curve_is_read_as_its_metrics_grow(tmp_path):
    import json

    from charrnn_tui.tui.compared_runs import ComparedRun

    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "elapsed_s": 0.1, "tokens": 9, "lr": 0.1, "train_loss": 4.0, "grad_norm": 1.0},
             {"step": 10, "elapsed_s": 1.5, "tokens": 90, "lr": 0.1, "val_loss": 3.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    run = ComparedRun("other", tmp_path)
    assert run.refresh() and run.points == [(10, 3.0, 1.5, 90)]  # with the tokens trained on by then
    assert not run.refresh()  # nothing new
    with path.open("a") as f:
        f.write(json.dumps({"step": 20, "elapsed_s": 3.0, "val_loss": 2.5}) + "\n" + '{"step": 30, "val_lo')
    assert run.refresh() and run.points[-1] == (20, 2.5, 3.0, None)  # a line being written waits for its end
    with path.open("a") as f:
        f.write('ss": 2.25, "elapsed_s": 4.5}\nnot json\n')
    assert run.refresh() and run.points[-1] == (30, 2.25, 4.5, None)
    path.write_text(json.dumps(lines[1]) + "\n")  # a resume rewrote it shorter
    assert run.refresh() and run.points == [(10, 3.0, 1.5, 90)]
    path.unlink()
    assert not run.refresh() and run.points == [(10, 3.0, 1.5, 90)]


def test_a_compared_run_is_read_again_when_its_metrics_are_replaced_and_skips_what_is_not_finite(tmp_path):
    import json
    import os

    from charrnn_tui.tui.compared_runs import ComparedRun

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "elapsed_s": s / 10, "val_loss": 3.0 - s / 100}) + "\n"
                            for s in (10, 20, 30)))
    run = ComparedRun("other", tmp_path)
    assert run.refresh() and [p[0] for p in run.points] == [10, 20, 30]
    # A resume rewrites it (os.replace) without the lines after its checkpoint, then goes on past the old end.
    replacement = tmp_path / "new"
    lines = [{"step": 10, "elapsed_s": 1.0, "val_loss": 2.9}] + [
        {"step": s, "elapsed_s": s / 10, "val_loss": 2.0, "train_loss": 9.99} for s in range(11, 40)]
    lines.append({"step": 40, "elapsed_s": 4.0, "val_loss": float("nan")})
    lines.append({"step": 50, "elapsed_s": 5.0, "val_loss": 1.5})
    replacement.write_text("".join(json.dumps(r) + "\n" for r in lines))
    os.replace(replacement, path)
    assert run.refresh()
    assert run.points == [(10, 2.9, 1.0, None), *[(s, 2.0, s / 10, None) for s in range(11, 40)], (50, 1.5, 5.0, None)]


def test_a_confidence_that_is_not_a_number_gets_the_lowest_shade():
    from charrnn_tui.tui.sample_text import CONFIDENCE_SHADES, confidence_style

    assert confidence_style(float("nan")) == CONFIDENCE_SHADES[-1][1]
    assert confidence_style(1.0) == CONFIDENCE_SHADES[0][1] and confidence_style(0.0) == CONFIDENCE_SHADES[-1][1]


def _picture(canvas) -> list[str]:
    """The canvas as text, a row of characters and a row of layer digits per cell row."""
    return [row for r in range(canvas.h) for row in ("".join(canvas.char(r, c) for c in range(canvas.w)),
                                                       "".join(str(canvas.layer[r][c]) for c in range(canvas.w)))]


# Six bins of 10 steps falling from 4 to 2, their band, two validation points (the last the best).
_BINNED = Series([5, 15, 25, 35, 45, 55], [4.0, 3.0, 2.5, 2.2, 2.1, 2.0], [3.5, 2.6, 2.2, 2.0, 1.9, 1.8],
                 [4.5, 3.4, 2.8, 2.4, 2.3, 2.2], [10] * 6, [(20.0, 2.9), (60.0, 2.3)], (60.0, 2.3))


def test_a_small_run_is_drawn_dot_for_dot_on_a_linear_axis():
    """Every dot and colour of a 12x4 chart, pinned: the smoothing by bin width, the band, the
    validation blobs (kept inside the edge), the best mark, and the ranges."""
    canvas, x_range, y_range = plot(_BINNED, 12, 4, log_scale=False, smoothing=0.5)
    assert x_range == (0.0, 60.0) and y_range == (1.8, 4.0)
    assert _picture(canvas) == [
        "⠀⡷⡀⠀⠀⠀⠀⠀⠀⠀⠀⠀", "022000000000",
        "⠀⠀⠱⡇⠀⠀⠀⠀⠀⠀⠀⠀", "002200000000",
        "⠀⠀⠀⠏⠛⣇⣀⠀⠀⠀⠀⠀", "000232200000",
        "⠀⠀⠀⠀⠀⠁⠸⠉⠺⠢⢼◆", "000001222223",
    ]


def test_a_small_run_is_drawn_dot_for_dot_on_a_log_axis():
    canvas, x_range, y_range = plot(_BINNED, 12, 4, log_scale=True, smoothing=0.5)
    assert x_range == (0.0, 60.0) and y_range == (1.8, 4.0)
    assert _picture(canvas) == [
        "⠀⡗⡄⡀⠀⠀⠀⠀⠀⠀⠀⠀", "022100000000",
        "⠀⠀⠈⡧⣤⡀⠀⠀⠀⠀⠀⠀", "002231000000",
        "⠀⠀⠀⠁⠈⡧⢤⡀⢠⠀⢀◆", "000122221013",
        "⠀⠀⠀⠀⠀⠀⠘⠈⠹⠉⢺⠀", "000000122220",
    ]


def test_an_x_window_draws_only_its_part_and_its_y_range_is_that_parts():
    """Nothing from outside the window is drawn, nor sets the range: the validation point at its
    left edge (yellow, 3) is; the band at 25 and 35 (1) and the smoothed curve between them (2)."""
    canvas, x_range, y_range = plot(_BINNED, 12, 4, log_scale=False, smoothing=0.5, x_range=(20.0, 40.0))
    assert x_range == (20.0, 40.0) and y_range == (2.0, 2.9)  # the band's low at 35, the point at 20
    assert _picture(canvas) == [
        "⠛⠀⠀⡄⠀⠀⠀⠀⠀⠀⠀⠀", "300100000000",
        "⠀⠀⠀⣇⠀⠀⠀⠀⠀⠀⠀⠀", "000200000000",
        "⠀⠀⠀⡇⠉⠒⠤⣀⢸⠀⠀⠀", "000122221000",
        "⠀⠀⠀⠁⠀⠀⠀⠀⢹⠀⠀⠀", "000100002000",
    ]
    # Fitted, the point at 20 lies before the window's later 90% and above its curves: marked.
    canvas, _, (y0, y1) = plot(_BINNED, 12, 4, log_scale=False, smoothing=0.5, x_range=(20.0, 40.0), fitted=True)
    assert y1 < 2.9 and canvas.marks == {(0, 0): CLIPPED_ABOVE} and canvas.layer[0][0] == VAL


def test_smoothing_follows_the_steps_each_point_stands_for():
    wide = Series(_BINNED.x, _BINNED.mean, _BINNED.low, _BINNED.high, [100] * 6, [], None)
    narrow = Series(_BINNED.x, _BINNED.mean, _BINNED.low, _BINNED.high, [1] * 6, [], None)
    assert _picture(plot(wide, 12, 4, log_scale=False, smoothing=0.9)[0]) != \
        _picture(plot(narrow, 12, 4, log_scale=False, smoothing=0.9)[0])


def test_degenerate_ranges_are_widened_so_that_nothing_divides_by_zero():
    one = Series([1.0], [2.0], [2.0], [2.0], [1], [], None)
    canvas, x_range, y_range = plot(one, 3, 2, log_scale=False, smoothing=0.5)
    assert x_range == (0.0, 1.0) and y_range == (1.5, 2.5)  # a flat curve: half a unit either side
    assert _picture(canvas) == ["⠀⠀⠀", "000", "⠀⠀⠈", "002"]
    assert plot(one, 3, 2, log_scale=True, smoothing=0.5)[2] == (2.0, pytest.approx(2.02))  # 1% on a log axis
    at_zero = Series([0.0], [2.0], [2.0], [2.0], [1], [], None)
    canvas, x_range, y_range = plot(at_zero, 1, 1, log_scale=False, smoothing=0.5)
    assert x_range == (0.0, 1.0) and y_range == (1.5, 2.5)  # a run at step 0 still has an x axis
    assert _picture(canvas) == ["⠄", "2"]
    assert plot(at_zero, 5, 3, log_scale=False, smoothing=0.5, x_range=(4.0, 4.0))[1] == (4.0, 5.0)
    tiny = Series([0.0, 1.0], [1e-5, 2e-5], [1e-5, 2e-5], [1e-5, 2e-5], [1, 1], [], None)
    assert plot(tiny, 5, 3, log_scale=True, smoothing=0.0)[2] == (1e-3, pytest.approx(1.01e-3))  # log: from 1e-3
    assert plot(tiny, 5, 3, log_scale=False, smoothing=0.0)[2] == (1e-5, 2e-5)  # a small range is still a range
    for w, h in ((0, 3), (3, 0), (1, 0), (0, 1)):  # no room: nothing drawn, the default ranges
        canvas, x_range, y_range = plot(_BINNED, w, h, log_scale=False, smoothing=0.5)
        assert (x_range, y_range) == ((0.0, 1.0), (0.0, 1.0)) and canvas.w == w and canvas.h == h
    canvas, x_range, y_range = plot(_BINNED, 1, 1, log_scale=False, smoothing=0.5)  # one cell is room enough
    assert x_range == (0.0, 60.0) and canvas.bits[0][0] != 0


def test_the_top_of_the_band_sets_the_scale_except_its_highest_two_percent():
    n = 200
    highs = [3.0] * n
    highs[7] = 50.0  # the 2% highest are ignored: a spike or two does not set the scale
    highs[9] = 40.0
    series = Series([float(i) for i in range(n)], [2.0] * n, [1.0] * n, highs, [1] * n, [], None)
    assert plot(series, 20, 5, log_scale=False, smoothing=0.0)[2] == (1.0, 3.0)
    highs[:10] = [9.0] * 10  # 5% of them: they are the run's, not a spike
    assert plot(series, 20, 5, log_scale=False, smoothing=0.0)[2] == (1.0, 9.0)
    low_band = Series([0.0, 1.0], [2.0, 2.0], [1.0, 1.0], [1.5, 1.5], [1, 1], [], None)
    assert plot(low_band, 5, 3, log_scale=False, smoothing=0.0)[2] == (1.0, 2.0)  # the curve above the band


def test_tick_values_are_exact_for_every_spacing():
    assert nice_ticks(0.0, 10.0, 5) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert nice_ticks(0.0, 1.0, 1) == [0.0, 1.0]
    assert nice_ticks(0.0, 0.9, 1) == [0.0]
    assert nice_ticks(1.0, 2.0, 2) == [1.0, 1.5, 2.0]
    assert nice_ticks(0.0, 4.5, 2) == [0.0, 2.5] and nice_ticks(1.0, 1.5, 2) == [1.0, 1.25, 1.5]
    assert nice_ticks(0.0, 4.0, 2) == [0.0, 2.0, 4.0]
    assert nice_ticks(0.0, 20.0, 2) == [0.0, 10.0, 20.0]
    assert nice_ticks(-3.0, 3.0, 3) == [-2.0, 0.0, 2.0]
    assert nice_ticks(0.1, 0.3, 2) == [0.1, 0.2, 0.3]  # the end itself, despite float sums
    assert nice_ticks(2.0, 2.0, 3) == [2.0] and nice_ticks(3.0, 2.0, 3) == [3.0]
    assert nice_ticks(1.0, 2.0, 0) == [1.0]
    assert nice_ticks(math.nan, 2.0, 3) == [] and nice_ticks(1.0, math.inf, 3) == [1.0]
    assert nice_ticks(-math.inf, 2.0, 3) == []


def test_log_ticks_are_one_two_five_per_decade_or_linear_when_narrow():
    assert log_ticks(0.01, 1.0) == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    assert log_ticks(1.0, 100.0) == [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
    assert log_ticks(3.0, 30.0) == [5.0, 10.0, 20.0]
    assert log_ticks(1.0, 2.0) == [1.0, 2.0]  # both ends on the list
    assert log_ticks(1.1, 1.9) == nice_ticks(1.1, 1.9, 3) == [1.5]  # none or one: linear
    assert log_ticks(2.5, 4.0) == [2.5, 3.0, 3.5, 4.0]
    assert log_ticks(0.0, 3.0) == [] and log_ticks(-1.0, 3.0) == []
    assert log_ticks(2.0, 2.0) == [2.0] and log_ticks(3.0, 2.0) == [3.0]


def test_step_and_time_labels():
    assert [format_step(s) for s in (0, 999, 1000, 1049, 1050, 12_345, 999_999, 1_000_000, 1_250_000)] == \
        ["0", "999", "1k", "1k", "1.1k", "12.3k", "1000k", "1M", "1.2M"]
    assert [format_seconds(s) for s in (0, 59.4, 59.6, 60, 3599, 3600, 3661, 36_000)] == \
        ["0:00", "0:59", "1:00", "1:00", "59:59", "1h00", "1h01", "10h00"]


def test_smoothing_with_no_weight_is_the_values_and_starts_at_the_first():
    assert debiased_ema([3.0, 1.0, 2.0], 0.0) == [3.0, 1.0, 2.0]
    assert debiased_ema([5.0], 0.9) == [pytest.approx(5.0)]
    # the second value stands for 2 steps: the first decays by 0.5 ** 2
    last = 0.5 * 4.0 * 0.25 + 0.75 * 2.0
    smoothed = debiased_ema([4.0, 2.0], 0.5, widths=[1, 2])
    assert smoothed == [pytest.approx(4.0), pytest.approx(last / (0.5 * 0.25 + 0.75))]
    assert debiased_ema([], 0.5) == []


def test_a_compared_run_reads_a_big_file_a_piece_at_a_time_and_skips_a_line_too_long(tmp_path, monkeypatch):
    import json

    from charrnn_tui.tui import compared_runs
    from charrnn_tui.tui.compared_runs import ComparedRun

    monkeypatch.setattr(compared_runs, "READ_LIMIT", 64)
    path = tmp_path / "metrics.jsonl"
    point = json.dumps({"step": 5, "val_loss": 2.0}) + "\n"  # no elapsed_s: an old run's line, at 0 s
    assert len(point) < 64
    path.write_text("x" * 150 + "\n" + point + json.dumps({"step": 6, "train_loss": 2.0}) + "\n")
    run = ComparedRun("other", tmp_path)
    assert not run.refresh() and run._offset == 64  # a line longer than a read: passed over, 64 bytes a time
    assert not run.refresh() and run._offset == 128
    assert run.refresh() and run.points == [(5, 2.0, 0.0, None)]  # its end, and the next line whole
    assert not run.refresh()  # a training line alone is nothing new
    assert run._offset == path.stat().st_size


def test_a_compared_runs_steps_are_whole_numbers_from_0_to_the_largest_exact_float(tmp_path):
    import json

    from charrnn_tui.tui.compared_runs import MAX_STEP, ComparedRun

    rows = [(0, 3.0), (MAX_STEP, 2.0), (MAX_STEP + 1, 1.0), (-1, 1.0), (2.0, 1.0), (True, 1.0)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "val_loss": v, "elapsed_s": 1.5}) + "\n"
                                                    for s, v in rows))
    run = ComparedRun("other", tmp_path)
    assert run.refresh() and run.points == [(0, 3.0, 1.5, None), (MAX_STEP, 2.0, 1.5, None)]


def test_a_compared_runs_metrics_planted_as_a_link_or_a_fifo_are_not_read(tmp_path):
    import json
    import os

    from charrnn_tui.tui.compared_runs import ComparedRun

    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text(json.dumps({"step": 1, "val_loss": 2.0}) + "\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").symlink_to(elsewhere)
    run = ComparedRun("other", run_dir)
    assert not run.refresh() and run.points == []
    (run_dir / "metrics.jsonl").unlink()
    os.mkfifo(run_dir / "metrics.jsonl")  # opening it to read would wait for a writer: it is never opened so
    assert not run.refresh() and run.points == []


def test_validation_alone_is_drawn_before_the_first_training_point():
    series = Series([], [], [], [], [], [(10.0, 3.0), (20.0, 2.5)], (20.0, 2.5))
    canvas, x_range, y_range = plot(series, 10, 4, log_scale=False, smoothing=0.6)
    assert x_range == (0.0, 20.0) and y_range == (2.5, 3.0)
    assert sum(canvas.layer[r][c] == VAL for r in range(4) for c in range(10)) >= 2


def test_a_linear_axis_takes_any_real_numbers_and_a_log_axis_only_its_positive_part():
    series = Series([0.0, 1.0, 2.0], [-2.0, -1.0, 0.0], [-2.0, -1.0, 0.0], [-2.0, -1.0, 0.0], [1, 1, 1], [], None)
    canvas, _, y_range = plot(series, 6, 3, log_scale=False, smoothing=0.0)
    assert y_range == (-2.0, 0.0) and canvas.bits[2][0] != 0 and canvas.bits[0][5] != 0  # bottom left, top right
    negative = Series([0.0, 1.0], [-2.0, -1.0], [-2.0, -1.0], [-2.0, -1.0], [1, 1], [], None)
    assert plot(negative, 6, 3, log_scale=False, smoothing=0.0)[2] == (-2.0, -1.0)


def test_the_scale_ignores_exactly_the_highest_two_percent_of_the_band():
    n = 51
    highs = [3.0 + i / 100 for i in range(n)]  # 3.00 ... 3.50, all different
    series = Series([float(i) for i in range(n)], [2.0] * n, [1.0] * n, highs, [1] * n, [], None)
    assert plot(series, 20, 5, log_scale=False, smoothing=0.0)[2] == (1.0, pytest.approx(3.49))


def test_a_spike_above_the_scale_reaches_the_top_dot_of_its_column():
    losses = [2.0] * 400
    losses[200] = 50.0
    series = _series(losses)
    canvas, (x0, x1), _ = plot(series, 40, 8, log_scale=False, smoothing=0.9)
    column = next(i for i, high in enumerate(series.high) if high == 50.0)
    px = int((series.x[column] - x0) / (x1 - x0) * 79 + 0.5)
    from charrnn_tui.tui.chart import DOT

    assert canvas.bits[0][px // 2] & DOT[px % 2][0]  # the very top row of dots


def test_a_compared_runs_file_that_starts_with_an_empty_line_is_read_past_it(tmp_path):
    import json

    from charrnn_tui.tui.compared_runs import ComparedRun

    path = tmp_path / "metrics.jsonl"
    path.write_text("\n")
    run = ComparedRun("other", tmp_path)
    assert not run.refresh() and run._offset == 1
    with path.open("a") as f:
        f.write(json.dumps({"step": 3, "val_loss": 2.0, "elapsed_s": 0.5}) + "\n")
    assert run.refresh() and run.points == [(3, 2.0, 0.5, None)]


def test_the_fitted_y_range_is_the_curves_over_the_later_90_percent_of_x_padded():
    from charrnn_tui.tui.chart import FIT_PAD, fitted_y_range

    curve = [(float(s), 1.3 + 2.9 * math.exp(-s / 150)) for s in range(3001)]  # from 4.2 to 1.3
    later = [y for x, y in curve if x >= 300]
    low, high = min(later), max(later)  # 1.3 and the loss at step 300, 1.69
    assert high == pytest.approx(1.3 + 2.9 * math.exp(-2))
    pad = (high - low) * FIT_PAD
    assert fitted_y_range([curve], 0.0, 3000.0, log_scale=False) == pytest.approx((low - pad, high + pad))
    # Validation points and compared curves count too; the range is of the x range given (a window).
    val = [(1000.0, 1.9), (3000.0, 1.25)]
    assert fitted_y_range([curve, val], 0.0, 3000.0, log_scale=False)[1] == pytest.approx(1.9 + 0.65 * FIT_PAD)
    window = fitted_y_range([curve], 2000.0, 3000.0, log_scale=False)
    assert window[1] < 1.31 and window[0] > 1.29
    # On a log axis the padding is a factor.
    log_low, log_high = fitted_y_range([curve], 0.0, 3000.0, log_scale=True)
    assert log_high / high == pytest.approx(low / log_low) == pytest.approx((high / low) ** FIT_PAD)
    # Points only before the cut: the range is theirs; no points: none.
    assert fitted_y_range([[(1.0, 3.0), (2.0, 2.0)]], 0.0, 100.0, log_scale=False) == pytest.approx((1.92, 3.08))
    assert fitted_y_range([[], []], 0.0, 1.0, log_scale=False) is None


def test_fitted_the_first_minute_of_a_run_fills_the_chart_where_the_full_range_squeezed_it():
    """Issue 28: at 80x24 the chart has 30x6 cells; after 45 s the curve after step 100 sat in the
    bottom rows of a range that ran from the first loss. Fitted, it crosses at least 5 of the 6."""
    losses = first_minute_losses(3000)
    series = _series(losses, [(float(s), 1.45 + 0.7 * math.exp(-s / 1000)) for s in range(500, 3001, 500)],
                     bins=LossHistory().bins)  # binned as the app's history bins it
    after_100 = int(100 / 3000 * 59 + 0.5) // 2 + 1  # the first cell column wholly after step 100

    def rows_with_the_curve(canvas) -> int:
        return sum(any(canvas.layer[r][c] == SMOOTH for c in range(after_100, 30)) for r in range(6))

    full, _, (_, full_top) = plot(series, 30, 6, log_scale=False, smoothing=0.6)
    fitted, _, (y0, y1) = plot(series, 30, 6, log_scale=False, smoothing=0.6, fitted=True)
    assert full_top > 4.0 and rows_with_the_curve(full) <= 3
    assert y1 < 2.6 and y0 > 1.2 and rows_with_the_curve(fitted) >= 5
    # The start, above the range, is marked along the top edge in the curve's colour; the raw band
    # is clipped at both edges unmarked, and the best validation point is drawn.
    marked = sorted(col for (row, col), mark in fitted.marks.items() if mark == CLIPPED_ABOVE)
    assert marked and marked[0] == 0 and all(row == 0 for row, _ in fitted.marks if fitted.marks[row, _] != "◆")
    assert all(fitted.layer[0][col] == SMOOTH for col in marked)
    assert "◆" in fitted.marks.values() and "◆" in full.marks.values()
    assert not any(mark == CLIPPED_ABOVE for mark in full.marks.values())
    # Log scale keeps working, fitted too.
    log_fitted, _, (log_y0, log_y1) = plot(series, 30, 6, log_scale=True, smoothing=0.6, fitted=True)
    assert log_y1 < 2.6 and rows_with_the_curve(log_fitted) >= 5


def test_a_curve_below_the_fitted_range_is_marked_on_the_bottom_edge():
    from charrnn_tui.tui.chart import CLIPPED_BELOW, OTHER

    series = _series([2.0 - i / 10_000 for i in range(1000)])
    series.others = [[(0.0, 0.5), (50.0, 0.5)]]  # a compared run's early points, far below: before the cut
    canvas, _, (y0, _) = plot(series, 20, 4, log_scale=False, smoothing=0.0, fitted=True)
    assert y0 > 1.8
    assert canvas.marks == {(3, 0): CLIPPED_BELOW, (3, 1): CLIPPED_BELOW}  # steps 0 and 50 of 1,000, in 20 cells
    assert canvas.layer[3][0] == canvas.layer[3][1] == OTHER
    _, _, (full_y0, _) = plot(series, 20, 4, log_scale=False, smoothing=0.0)
    assert full_y0 == 0.5  # the full range holds it


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.floats(0.01, 50.0), min_size=1, max_size=300), st.booleans(), st.floats(0.0, 0.99),
       st.lists(st.tuples(st.floats(0.0, 400.0), st.floats(0.01, 50.0)), max_size=20))
def test_fitted_every_curve_point_after_the_cut_is_inside_the_range_and_the_rest_is_drawn_or_marked(
        losses, log_scale, smoothing, val):
    from charrnn_tui.tui.chart import CLIPPED_BELOW, FIT_FROM

    series = Series([float(i + 1) for i in range(len(losses))], losses, losses, losses, [1] * len(losses),
                    sorted(val), min(val, key=lambda p: p[1]) if val else None)
    canvas, (x0, x1), (y0, y1) = plot(series, 20, 5, log_scale=log_scale, smoothing=smoothing, fitted=True)
    cut = x0 + FIT_FROM * (x1 - x0)
    smooth = debiased_ema(losses, smoothing)
    inside = [y for x, y in [*zip(series.x, smooth, strict=True), *series.val] if x >= cut]
    floor = 1e-3 if log_scale else -math.inf
    assert all(y0 * (1 - 1e-9) <= max(y, floor) <= y1 * (1 + 1e-9) for y in inside)
    marks = set(canvas.marks.values())
    assert marks <= {"◆", CLIPPED_ABOVE, CLIPPED_BELOW}
    # A validation point above the range is marked on the top edge in its column, or drawn there
    # (within half a dot of the range, it rounds to the top row).
    for x, y in series.val:
        col = int((x - x0) / (x1 - x0) * 39 + 0.5) // 2
        if y > y1 * (1 + 1e-9):
            assert canvas.marks.get((0, col)) in (CLIPPED_ABOVE, "◆") or canvas.layer[0][col] == VAL
