"""The app's plain logic, unit by unit: tick labels, axis positions, temperature steps, legends.
The screens that use them are tested by the pilot and snapshot tests; these pin the values."""

import pytest

from charrnn_tui.tui.chart import format_tick, height_fraction
from charrnn_tui.tui.run_view import TEMPERATURES, step_temperature
from charrnn_tui.tui.sample_text import CONFIDENCE_SHADES, confidence_legend


@pytest.mark.parametrize(("value", "label"), [
    (0, "0"), (0.0, "0"), (100, "100"), (-100, "-100"), (1234.5, "1234"), (99.5, "99.5"), (10, "10"),
    (-10, "-10"), (12.25, "12.2"), (100.4, "100"), (10.25, "10.2"),
    (20.0, "20"), (9.99, "9.99"), (1.5, "1.5"), (2.0, "2"), (-1.25, "-1.25"),
    (0.1, "0.1"), (0.125, "0.12"), (0.05, "0.05"), (0.0123456, "0.0123"), (-0.05, "-0.05"), (5e-5, "5e-05"),
])
def test_tick_labels_are_short_and_round(value, label):
    assert format_tick(value) == label


def test_height_fraction_is_linear_or_logarithmic_between_the_ends():
    assert height_fraction(1.0, 1.0, 3.0, log_scale=False) == 0
    assert height_fraction(3.0, 1.0, 3.0, log_scale=False) == 1
    assert height_fraction(2.0, 1.0, 3.0, log_scale=False) == pytest.approx(0.5)
    assert height_fraction(2.0, 1.0, 5.0, log_scale=False) == pytest.approx(0.25)
    assert height_fraction(0.0, 1.0, 3.0, log_scale=False) == pytest.approx(-0.5)  # below: the caller clips
    assert height_fraction(1.0, 1.0, 4.0, log_scale=True) == 0
    assert height_fraction(4.0, 1.0, 4.0, log_scale=True) == pytest.approx(1)
    assert height_fraction(2.0, 1.0, 4.0, log_scale=True) == pytest.approx(0.5)  # the geometric middle
    assert height_fraction(10.0, 1.0, 1000.0, log_scale=True) == pytest.approx(1 / 3)
    assert height_fraction(4.0, 2.0, 8.0, log_scale=True) == pytest.approx(0.5)
    # below the axis on a log scale sits at its foot rather than at log of a smaller number
    assert height_fraction(0.5, 1.0, 4.0, log_scale=True) == 0
    assert height_fraction(0.0, 2.0, 8.0, log_scale=True) == 0


def test_temperature_steps_go_to_the_next_listed_value_and_stop_at_the_ends():
    assert step_temperature(0.8, +1) == 0.9
    assert step_temperature(0.8, -1) == 0.7
    assert step_temperature(1.0, +1) == 1.1
    assert step_temperature(1.3, +1) == 1.5  # coarser above 1
    assert step_temperature(1.5, -1) == 1.3
    assert step_temperature(0.85, +1) == 0.9 and step_temperature(0.85, -1) == 0.8  # off the list: the neighbours
    assert step_temperature(0.1, -1) == 0.1 and step_temperature(0.05, -1) == 0.1
    assert step_temperature(3.0, +1) == 3.0 and step_temperature(7.0, +1) == 3.0
    assert step_temperature(7.0, -1) == 3.0
    assert step_temperature(0.05, +1) == 0.1
    # a value a rounding error away from a listed one counts as that one
    assert step_temperature(0.8 + 1e-12, +1) == 0.9 and step_temperature(0.8 - 1e-12, -1) == 0.7
    walk = [0.1]
    while (t := step_temperature(walk[-1], +1)) != walk[-1]:
        walk.append(t)
    assert walk == list(TEMPERATURES)
    walk = [3.0]
    while (t := step_temperature(walk[-1], -1)) != walk[-1]:
        walk.append(t)
    assert walk == list(reversed(TEMPERATURES))


def test_the_confidence_legend_lists_each_shade_with_its_label():
    legend = confidence_legend()
    assert legend.plain == "confidence  >50%  10-50%  1-10%  <1% "
    spans = [(legend.plain[s.start:s.end], str(s.style)) for s in legend.spans]
    assert spans == [(f" {label} ", style) for _, style, label in CONFIDENCE_SHADES]


def test_each_confidence_shade_starts_at_its_lowest_probability():
    from charrnn_tui.tui.sample_text import confidence_style

    assert [confidence_style(p) for p in (1.0, 0.5, 0.49, 0.1, 0.099, 0.01, 0.0099, 0.0)] == [
        CONFIDENCE_SHADES[0][1], CONFIDENCE_SHADES[0][1], CONFIDENCE_SHADES[1][1], CONFIDENCE_SHADES[1][1],
        CONFIDENCE_SHADES[2][1], CONFIDENCE_SHADES[2][1], CONFIDENCE_SHADES[3][1], CONFIDENCE_SHADES[3][1]]


def test_a_narrow_log_axis_of_one_value_gives_that_value():
    from charrnn_tui.tui.chart import log_ticks

    assert log_ticks(0.5, 0.5) == [0.5] and log_ticks(0.5, 0.4) == [0.5]


def test_numbers_and_durations_for_the_status_panel():
    from charrnn_tui.engine.durations import duration
    from charrnn_tui.tui.formatting import si, size_bytes

    assert [si(n) for n in (0, 999, 1000, 1234, 999_999, 1_000_000, 1_500_000, 1e9, 2.5e9, -1500)] == \
        ["0", "999", "1.0k", "1.2k", "1000.0k", "1.0M", "1.5M", "1.0G", "2.5G", "-1.5k"]
    assert [duration(s) for s in (None, -5, 0, 0.9, 59, 61, 3599, 3600, 3661, 86_399, 86_400, 90_061, 200_000)] == \
        ["-", "00:00", "00:00", "00:00", "00:59", "01:01", "59:59", "1:00:00", "1:01:01", "23:59:59", "1d00h",
         "1d01h", "2d07h"]
    assert [size_bytes(n) for n in (None, 0, 1023, 1024, 1536, 1 << 20, 3 << 30)] == \
        ["-", "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "1.0 MiB", "3.0 GiB"]


def test_how_long_ago_a_run_was_active_is_said_in_its_largest_whole_unit():
    from charrnn_tui.engine.durations import age

    assert [age(s) for s in (-3, 0, 0.9, 59.9, 60, 3599, 3600, 86_399, 86_400, 200_000)] == \
        ["0s ago", "0s ago", "0s ago", "59s ago", "1m ago", "59m ago", "1h ago", "23h ago", "1d ago", "2d ago"]


def _spans(text) -> list[tuple[str, str]]:
    return [(text.plain[s.start:s.end], str(s.style)) for s in text.spans]


def test_a_samples_body_is_shaded_by_confidence_in_runs_and_its_copies_underlined():
    from charrnn_tui.tui.run_view import Sample
    from charrnn_tui.tui.sample_text import COPIED, copy_note, sample_body

    high, mid, low = CONFIDENCE_SHADES[0][1], CONFIDENCE_SHADES[1][1], CONFIDENCE_SHADES[3][1]
    sample = Sample(1, 10, "", 0.8, "live", text="abcdef", probs=(0.9, 0.8, 0.2, 0.001, 0.6, 0.7))
    assert _spans(sample_body(sample, confidence=False)) == []  # the confidence view is off
    assert _spans(sample_body(sample, confidence=True)) == [("ab", high), ("c", mid), ("d", low), ("ef", high)]
    words = Sample(2, 10, "", 0.8, "live", text=" the cat", probs=(0.9, 0.05), token_lengths=(4, 4))
    assert _spans(sample_body(words, confidence=True)) == [(" the", high), (" cat", CONFIDENCE_SHADES[2][1])]
    joined = Sample(3, 10, "", 0.8, "live", text="xy", probs=(0.9, 0.9, 0.2, 0.2))  # joined part-way: fewer chars
    assert _spans(sample_body(joined, confidence=True)) == [("xy", high)]
    short = Sample(4, 10, "", 0.8, "live", text="abc", probs=(0.9, 0.2), token_lengths=(1, 5))  # last token cut
    assert _spans(sample_body(short, confidence=True)) == [("a", high), ("bc", mid)]
    assert _spans(sample_body(Sample(5, 1, "", 0.8, "live", text="ab"), confidence=True)) == []  # no probs yet
    copied = Sample(6, 10, "", 0.8, "live", text="abcdef", longest_copy=3, copies=((1, 4),))
    assert _spans(sample_body(copied, confidence=False)) == [("bcd", COPIED)]
    assert copy_note(copied) == ("copied 3 chars", "yellow")
    assert copy_note(Sample(7, 10, "", 0.8, "live", text="ab", longest_copy=2)) == ("longest copy 2", "dim")
    assert copy_note(Sample(8, 10, "", 0.8, "live", text="ab")) == ("", "")  # not checked yet


def test_the_readme_and_the_command_palette_give_e_s_early_stop_steps_in_the_order_it_takes_them():
    import inspect
    import re
    from pathlib import Path

    from charrnn_tui.tui.app import EARLY_STOP_CHOICES, CharRNNApp

    steps = ", ".join(str(n) for n in EARLY_STOP_CHOICES[1:-1]) + f" or {EARLY_STOP_CHOICES[-1]}"
    assert EARLY_STOP_CHOICES[0] is None and steps == "10, 5 or 3"
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    row = re.search(r"^\| `e` \| (.*) \|$", readme, re.M)
    assert row is not None and f"off, then after {steps} evaluations" in row.group(1), row
    assert f"Off, or after {steps} evaluations" in inspect.getsource(CharRNNApp.get_system_commands)


def test_the_chart_view_steps_through_its_windows_units_and_ranges():
    from charrnn_tui.tui.chart_view import ChartView

    view = ChartView()
    assert view.fitted and not view.log_scale and view.x_unit == "steps" and view.window is None
    assert view.describe() == "fitted · by steps · whole run · smoothing 0.6"
    assert (view.y_label(), view.x_labels(5_000)) == ("fitted", ["steps"])
    windows = []
    for _ in range(4):  # a 5,000-step run: the windows shorter than it, narrowest last, then the whole run
        view.next_window(5_000)
        windows.append(view.window)
    assert windows == [1_000, 100, None, 1_000]
    assert view.x_labels(5_000) == ["last 1k steps", "last 1k"]
    assert view.x_labels(800) == ["steps"]  # a run as short as the window (another run attached to): all of it
    assert view.window_in(5_000) == 1_000 and view.window_in(1_000) is None  # as long as the run: all of it
    view.next_window(50)  # no window is shorter than a 50-step run
    assert view.window is None
    view.next_window(250_000)
    assert view.window == 100_000
    units = []
    for _ in range(3):
        view.next_x_unit()
        units.append(view.x_unit)
    assert units == ["time", "tokens", "steps"]
    view.next_x_unit()
    view.toggle_fit()
    view.toggle_log()
    assert view.y_label() == "full · log"
    assert view.x_labels(250_000) == ["time · last 100k steps", "time · last 100k", "last 100k"]
    assert view.describe() == "full · log · by time · last 100k steps · smoothing 0.6"
    view.step_smoothing(1)
    view.step_smoothing(1)
    assert view.smoothing == 0.9
