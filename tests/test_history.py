import math

import pytest
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_tui.engine.history import (
    MAX_TIMELINE,
    MAX_VAL,
    LossHistory,
    add_time_point,
    thin_evaluations,
    thin_validation,
)
from charrnn_tui.engine.overfitting import read_history

losses = st.lists(st.floats(0.0, 10.0, allow_nan=False), max_size=600)


@settings(max_examples=examples(150), deadline=None)
@given(values=losses, bins=st.integers(1, 8), recent=st.integers(1, 50))
def test_bins_cover_every_step_in_bounded_memory(values, bins, recent):
    history = LossHistory(bins=bins, recent=recent)
    history.extend(values)
    width, means, lows, highs = history.binned()
    assert len(history) == len(values) and len(means) <= 2 * bins
    assert list(history.recent) == values[-recent:]
    for k, (mean, low, high) in enumerate(zip(means, lows, highs, strict=True)):
        chunk = values[k * width : (k + 1) * width]
        assert chunk, "a bin past the last step"
        assert low == min(chunk) and high == max(chunk)
        assert mean == pytest.approx(sum(chunk) / len(chunk), abs=1e-9)
    assert len(means) == math.ceil(len(values) / width)
    assert history.first == (values[0] if values else None)


@settings(max_examples=examples(100), deadline=None)
@given(first=losses, then=losses, bins=st.integers(1, 8))
def test_a_history_saved_and_restored_goes_on_as_the_original(first, then, bins):
    original = LossHistory(bins=bins, recent=20)
    original.extend(first)
    restored = LossHistory.from_dict(original.to_dict(), bins=bins, recent=20)
    original.extend(then)
    restored.extend(then)
    expected, got = original.to_dict(), restored.to_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():  # a partial bin is rebuilt from its mean: equal to rounding
        assert got[key] == (pytest.approx(value) if isinstance(value, (list, float)) else value), key


def test_a_long_run_stays_small():
    history = LossHistory()
    history.extend([1.0] * 1_000_000)
    width, means, _, _ = history.binned()
    assert len(history) == 1_000_000 and len(means) <= 2048 and width * len(means) >= 1_000_000


def test_validation_points_are_thinned_past_the_cap_keeping_the_best_and_the_latest():
    points = [(s, 5.0 - s / 100_000) for s in range(MAX_VAL + 1)]
    points[10] = (10, 0.5)  # the best, early
    thinned = thin_validation(points)
    assert len(thinned) < len(points) and (10, 0.5) in thinned and thinned[-1] == points[-1]
    assert thin_validation(points[:100]) == points[:100]
    second_best = [(1, 5.0), (2, 1.0), *((s, 4.0) for s in range(3, 10))]  # the best where a point would go
    before_the_cap = [(s, 5.0 - s / 100_000) for s in range(8 * MAX_VAL)]  # a checkpoint from before it
    assert len(thin_validation(before_the_cap)) <= MAX_VAL
    assert thin_validation(second_best, 8) == [(1, 5.0), (2, 1.0), *((s, 4.0) for s in range(4, 10))]


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=400), st.integers(8, 40))
def test_thinned_evaluations_read_as_the_whole_history_would(pairs, limit):
    """However far the history is thinned, the best step keeps its training loss and the evaluations
    since the best are counted, so the overfitting verdict and early stop are those of every point."""
    val, train, kept_val, kept_train = [], {}, [], []
    since_best, first_after, best = 0, None, math.inf
    for i, (v, t) in enumerate(pairs):
        step, v, t = 10 * (i + 1), v / 10, t / 10  # coarse values: equal losses and ties happen
        if v < best:  # as the trainer counts
            since_best, first_after = 0, None
        else:
            first_after = first_after if since_best else step
            since_best += 1
        best = min(best, v)
        val.append((step, v))
        train[step] = t
        kept_val, kept_train = thin_evaluations([*kept_val, (step, v)], [*kept_train, (step, t)], limit)
        assert len(kept_train) == len(kept_val) <= limit and kept_val[-1] == (step, v)
        whole = read_history(val, train)
        thinned = read_history(kept_val, dict(kept_train), since_best=since_best, first_after_best=first_after)
        assert thinned == whole


def test_the_time_axis_of_a_long_run_stays_bounded_from_its_start_to_its_latest_report():
    from charrnn_tui.engine import events as ev
    from charrnn_tui.tui.run_view import RunView

    timeline: list[tuple[int, float]] = []
    kept = timeline
    for step in range(1, MAX_TIMELINE + 1):
        timeline = add_time_point(timeline, step, step / 10)
    assert timeline is kept and len(timeline) == MAX_TIMELINE  # in place while under the cap
    view = RunView()
    for step in range(1, 5 * MAX_TIMELINE):
        timeline = add_time_point(timeline, MAX_TIMELINE + step, (MAX_TIMELINE + step) / 10)
        view.apply(ev.Progress(step, step, (2.0,), 0.0, 1.0, 0.1, step / 10, None, None, None))
    for points, last in ((timeline, 6 * MAX_TIMELINE - 1), (view.timeline, 5 * MAX_TIMELINE - 1)):
        assert MAX_TIMELINE // 2 < len(points) <= MAX_TIMELINE
        assert points[0] == (1, 0.1) and points[-1] == (last, last / 10)
        assert [s for s, _ in points] == sorted({s for s, _ in points})  # in order, no repeats


def test_a_history_from_every_loss_of_an_old_checkpoint_is_the_one_built_step_by_step():
    losses = [4.0 / (1 + i / 50) for i in range(5000)]
    built = LossHistory()
    built.extend(losses)
    rebuilt = LossHistory.from_losses(losses)
    assert rebuilt.to_dict() == built.to_dict() and rebuilt.steps == 5000 and rebuilt.first == 4.0
