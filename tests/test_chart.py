"""The loss chart's drawing (tui/chart.py): smoothing, ticks, and what lands on the canvas."""

import math

import pytest
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_tui.engine.history import LossHistory
from charrnn_tui.tui.chart import (
    BRAILLE,
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


def _series(losses: list[float], val=()) -> Series:
    history = LossHistory(bins=64)
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
    assert run.refresh() and run.points == [(10, 3.0, 1.5)]
    assert not run.refresh()  # nothing new
    with path.open("a") as f:
        f.write(json.dumps({"step": 20, "elapsed_s": 3.0, "val_loss": 2.5}) + "\n" + '{"step": 30, "val_lo')
    assert run.refresh() and run.points[-1] == (20, 2.5, 3.0)  # a line being written waits for its end
    with path.open("a") as f:
        f.write('ss": 2.25, "elapsed_s": 4.5}\nnot json\n')
    assert run.refresh() and run.points[-1] == (30, 2.25, 4.5)
    path.write_text(json.dumps(lines[1]) + "\n")  # a resume rewrote it shorter
    assert run.refresh() and run.points == [(10, 3.0, 1.5)]
    path.unlink()
    assert not run.refresh() and run.points == [(10, 3.0, 1.5)]


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
    assert run.points == [(10, 2.9, 1.0), *[(s, 2.0, s / 10) for s in range(11, 40)], (50, 1.5, 5.0)]


def test_a_confidence_that_is_not_a_number_gets_the_lowest_shade():
    from charrnn_tui.tui.sample_text import CONFIDENCE_SHADES, confidence_style

    assert confidence_style(float("nan")) == CONFIDENCE_SHADES[-1][1]
    assert confidence_style(1.0) == CONFIDENCE_SHADES[0][1] and confidence_style(0.0) == CONFIDENCE_SHADES[-1][1]
