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
