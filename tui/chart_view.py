"""What the loss chart shows, as the chart keys set it: the y range (fitted or full), the scale, the
x unit, the x window and the smoothing. Plain Python: the widget (tui/widgets/loss_chart.py) draws it,
the app's keys change it."""

from __future__ import annotations

from dataclasses import dataclass

from .chart import format_step

X_UNITS = ("steps", "time", "tokens")  # what `x` steps through
# The x windows `w` steps through, widest first, after the whole run: a window as long as the run
# shows the whole run again, so only those shorter than the run are offered.
WINDOWS = (1_000_000, 100_000, 10_000, 1_000, 100)
SMOOTHINGS = (0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.99)


@dataclass
class ChartView:
    fitted: bool = True  # the y range fits the later part of the x range (tui/chart.py fitted_y_range)
    log_scale: bool = False
    x_unit: str = "steps"  # one of X_UNITS
    window: int | None = None  # the last `window` steps; None: the whole run
    smoothing: float = 0.6

    def toggle_fit(self) -> None:
        self.fitted = not self.fitted

    def toggle_log(self) -> None:
        self.log_scale = not self.log_scale

    def next_x_unit(self) -> None:
        self.x_unit = X_UNITS[(X_UNITS.index(self.x_unit) + 1) % len(X_UNITS)]

    def next_window(self, steps: int) -> None:
        """The next narrower window shorter than a run of `steps` steps; after the narrowest, the whole run."""
        shorter = [n for n in WINDOWS if n < steps and (self.window is None or n < self.window)]
        self.window = shorter[0] if shorter else None

    def window_in(self, steps: int) -> int | None:
        """The window, if it is shorter than a run of `steps` steps (a longer one shows the whole run)."""
        return self.window if self.window is not None and self.window < steps else None

    def step_smoothing(self, direction: int) -> None:
        i = min(range(len(SMOOTHINGS)), key=lambda k: abs(SMOOTHINGS[k] - self.smoothing))
        self.smoothing = SMOOTHINGS[max(0, min(len(SMOOTHINGS) - 1, i + direction))]

    def y_label(self) -> str:
        """The y axis's view, for the panel's title: 'fitted', 'full · log'."""
        return ("fitted" if self.fitted else "full") + (" · log" if self.log_scale else "")

    def x_labels(self, steps: int) -> list[str]:
        """The x axis's view of a run of `steps` steps, written at its end, longest first for the
        axis to take the first that fits: 'steps'; 'last 1k steps', 'last 1k'; 'time · last 1k
        steps', 'time · last 1k', 'last 1k'."""
        window = self.window_in(steps)
        if window is None:
            return [self.x_unit]
        last = f"last {format_step(window)}"
        if self.x_unit == "steps":
            return [f"{last} steps", last]
        return [f"{self.x_unit} · {last} steps", f"{self.x_unit} · {last}", last]

    def describe(self) -> str:
        """For the note a chart key shows: 'fitted · by time · last 1k steps · smoothing 0.6'."""
        window = f"last {format_step(self.window)} steps" if self.window is not None else "whole run"
        return f"{self.y_label()} · by {self.x_unit} · {window} · smoothing {self.smoothing:g}"
