"""The progress reports over a whole run (engine/report_history.py), bounded, and the engine process's
CPU and memory that a report carries (engine/run/process_usage.py)."""

from __future__ import annotations

import os

import pytest
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_tui.engine.report_history import FIELDS, ReportHistory
from charrnn_tui.engine.run.process_usage import ProcessUsage

# A report's readings: a speed always, a CPU reading sometimes (None: not read).
reports = st.lists(st.tuples(st.floats(0.0, 1e6, allow_nan=False), st.none() | st.floats(0.0, 800.0)), max_size=300)


def _add_all(history: ReportHistory, readings: list[tuple[float, float | None]], first_step: int = 1) -> None:
    for i, (speed, cpu) in enumerate(readings):
        history.add(first_step + 10 * i, {"tokens_per_s": speed, "cpu_percent": cpu})


@settings(max_examples=examples(150), deadline=None)
@given(readings=reports, bins=st.integers(1, 8))
def test_each_bin_is_the_mean_of_its_reports_in_bounded_memory(readings, bins):
    history = ReportHistory(bins=bins)
    _add_all(history, readings)
    speeds, cpus = history.series("tokens_per_s"), history.series("cpu_percent")
    assert len(history.steps) < 2 * bins and len(speeds) == len(history) == -(-len(readings) // history.width)
    for k, (step, speed) in enumerate(speeds):
        chunk = readings[k * history.width:(k + 1) * history.width]
        assert step == 1 + 10 * (k * history.width + len(chunk) - 1)  # the bin's last report
        assert speed == pytest.approx(sum(s for s, _ in chunk) / len(chunk))
    # CPU: a bin's mean is over the reports that had it; bins without any are left out
    assert len(cpus) <= len(speeds)
    assert history.series("gpu_utilisation") == [] and set(history.values) == set(FIELDS)


def test_bins_without_a_reading_hold_none_and_merge_with_their_neighbours():
    history = ReportHistory(bins=2)
    for step, cpu in ((1, None), (2, 50.0), (3, None), (4, None)):
        history.add(step, {"cpu_percent": cpu, "lr": 0.1})
    assert history.width == 2 and history.steps == [2, 4]  # four bins merged into two
    assert history.values["cpu_percent"] == [50.0, None] and history.series("cpu_percent") == [(2, 50.0)]
    assert history.series("lr") == [(2, 0.1), (4, 0.1)]


def _assert_alike(got: dict, expected: dict) -> None:
    """Equal bins, their means to rounding (a partial bin is rebuilt from its mean)."""
    assert (got["width"], got["pending"], got["steps"]) == (expected["width"], expected["pending"], expected["steps"])
    for name in FIELDS:
        assert [v is None for v in got[name]] == [v is None for v in expected[name]], name
        assert [v for v in got[name] if v is not None] == pytest.approx([v for v in expected[name] if v is not None])


@settings(max_examples=examples(100), deadline=None)
@given(first=reports, then=reports, bins=st.integers(1, 8))
def test_a_history_sent_in_a_welcome_goes_on_as_the_original(first, then, bins):
    original = ReportHistory(bins=bins)
    _add_all(original, first)
    restored = ReportHistory.from_dict(original.to_dict(), bins=bins)
    _assert_alike(restored.to_dict(), original.to_dict())
    _add_all(original, then, 10_000)
    _add_all(restored, then, 10_000)
    got, expected = restored.to_dict(), original.to_dict()
    # the speed was in every report: it goes on exactly; the CPU, missing from some, keeps its bins
    assert (got["steps"], got["width"]) == (expected["steps"], expected["width"])
    assert got["tokens_per_s"] == pytest.approx(expected["tokens_per_s"])
    assert [v is None for v in got["cpu_percent"]] == [v is None for v in expected["cpu_percent"]]


@pytest.mark.parametrize("data", [
    {"width": 0, "steps": []}, {"width": 2, "pending": 2, "steps": [1]}, {"width": 2, "pending": 1, "steps": []},
    {"width": 1, "steps": [1, 2], "lr": [0.1]},
])
def test_a_history_that_does_not_add_up_is_refused(data):
    with pytest.raises(ValueError):
        ReportHistory.from_dict(data)


def test_the_engine_reads_its_own_cpu_time_and_resident_memory(tmp_path):
    usage = ProcessUsage()
    first = usage.read()
    assert first.cpu_percent is None  # nothing to measure a rate against yet
    assert first.rss_bytes is not None and first.rss_bytes > 1 << 20  # a Python process: megabytes
    spent = sum(os.times()[:2])
    while sum(os.times()[:2]) == spent:  # some CPU time to measure: a clock tick at least
        pass
    second = usage.read()
    assert second.cpu_percent is not None and second.cpu_percent > 0
    statm = tmp_path / "statm"
    statm.write_text("100 25 3 1 0 20 0\n")
    page = usage._page
    assert ProcessUsage(str(statm)).read().rss_bytes == 25 * page
    statm.write_text("garbled")
    assert ProcessUsage(str(statm)).read().rss_bytes is None
    assert ProcessUsage(str(tmp_path / "absent")).read().rss_bytes is None


def test_a_runs_reports_carry_its_cpu_rate_from_the_second_on_and_its_resident_memory(repetitive_text, runs_dir):
    from helpers import tiny_config

    from charrnn_tui.engine.events import Progress
    from charrnn_tui.engine.run.trainer import Trainer

    events: list = []
    Trainer(tiny_config(repetitive_text, max_steps=4, report_interval=1e-9), runs_dir=runs_dir,
            on_event=events.append).run()
    reports = [e for e in events if isinstance(e, Progress)]
    assert len(reports) >= 2 and reports[0].cpu_percent is None
    assert all(e.cpu_percent is not None and e.cpu_percent >= 0 for e in reports[1:])
    assert all(e.rss_bytes is not None and e.rss_bytes > 1 << 20 for e in reports)
