"""What the progress reports said over the whole run, in bounded memory: speed, learning rate, the
engine process's CPU and memory, the GPU's utilisation and memory, for the status panel's small charts.

Reports come a few times a second for as long as the run lasts, so they are kept as engine/history.py
keeps losses: in at most 2 x BINS bins of `width` reports each (the mean of each field, and the step of
the last report), which merge in pairs and double in width as the run grows. A field a report lacks
(no GPU, the first report's CPU) is left out of its bin's mean; a bin with none of it holds None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BINS = 128  # a chart is at most a few hundred dots wide
FIELDS = ("tokens_per_s", "lr", "cpu_percent", "rss_bytes", "gpu_utilisation", "gpu_memory_used")


class ReportHistory:
    def __init__(self, bins: int = BINS):
        self.bins = bins
        self.width = 1  # reports per bin
        self.added = 0  # reports added to this object: what a chart drawn from it may be keyed by
        self.steps: list[int] = []  # the last report's step, per closed bin
        self.values: dict[str, list[float | None]] = {name: [] for name in FIELDS}
        self._reports = 0  # in the bin being filled
        self._step = 0
        self._sums = dict.fromkeys(FIELDS, 0.0)
        self._counts = dict.fromkeys(FIELDS, 0)

    def __len__(self) -> int:
        return len(self.steps) + (self._reports > 0)

    def add(self, step: int, readings: Mapping[str, float | None]) -> None:
        """One report: its step and its readings by field name (None, or left out: not read)."""
        for name in FIELDS:
            value = readings.get(name)
            if value is not None:
                self._sums[name] += value
                self._counts[name] += 1
        self._reports += 1
        self._step = step
        self.added += 1
        if self._reports == self.width:
            self._close_bin()

    def series(self, name: str) -> list[tuple[int, float]]:
        """(step, mean) of every bin that has the field, the one being filled included, oldest first."""
        points = [(s, v) for s, v in zip(self.steps, self.values[name], strict=True) if v is not None]
        if self._counts[name]:
            points.append((self._step, self._sums[name] / self._counts[name]))
        return points

    def to_dict(self) -> dict[str, Any]:
        """For an attach's welcome: the bins, the one being filled last (`pending` reports in it)."""
        data: dict[str, Any] = {"width": self.width, "pending": self._reports, "steps": list(self.steps)}
        for name in FIELDS:
            data[name] = list(self.values[name])
        if self._reports:
            data["steps"].append(self._step)
            for name in FIELDS:
                data[name].append(self._sums[name] / self._counts[name] if self._counts[name] else None)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], bins: int = BINS) -> ReportHistory:
        """Back from `to_dict`. A field missing from the bin being filled for some of its reports comes
        back as if it were in all of them: its mean is the same, its weight a little more."""
        history = cls(bins)
        steps = [int(s) for s in data["steps"]]
        values = {name: [None if v is None else float(v) for v in data.get(name) or [None] * len(steps)]
                  for name in FIELDS}
        if any(len(v) != len(steps) for v in values.values()):
            raise ValueError("report history fields differ in length from its steps")
        history.width, pending = int(data["width"]), int(data.get("pending", 0))
        if history.width < 1 or not 0 <= pending < history.width or (pending and not steps):
            raise ValueError("report history: a width under 1, or a pending count outside it")
        if pending:
            history._reports, history._step = pending, steps.pop()
            for name in FIELDS:
                last = values[name].pop()
                if last is not None:
                    history._sums[name], history._counts[name] = last * pending, pending
        history.steps, history.values = steps, values
        return history

    def _close_bin(self) -> None:
        self.steps.append(self._step)
        for name in FIELDS:
            count = self._counts[name]
            self.values[name].append(self._sums[name] / count if count else None)
        self._reports = 0
        self._sums = dict.fromkeys(FIELDS, 0.0)
        self._counts = dict.fromkeys(FIELDS, 0)
        if len(self.steps) >= 2 * self.bins:  # merge neighbours: half as many bins, twice as wide
            self.steps = self.steps[1::2]
            for name in FIELDS:
                column = self.values[name]
                self.values[name] = [_mean(a, b) for a, b in zip(column[::2], column[1::2], strict=True)]
            self.width *= 2


def _mean(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return b if a is None else a
    return (a + b) / 2
