import math

import pytest
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_tui.engine.history import MAX_VAL, LossHistory, thin_validation

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
