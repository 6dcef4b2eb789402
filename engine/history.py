"""A run's loss history in bounded memory, however long it trains.

The last RECENT training losses are kept exactly; the whole run since step 1 is kept in at most
2 x BINS bins (mean, min and max of the steps in each), which double in width as the run grows,
so a chart of the whole run shows spikes and a week-long GPU run costs the same few hundred KB
as a short one. Validation points are few (one per evaluation) but are thinned past MAX_VAL too.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

RECENT = 4096
BINS = 1024
MAX_VAL = 1024  # an evaluation every few seconds for days; an attach's welcome carries them all
MAX_TIMELINE = 2048  # (step, training seconds) pairs: the chart's time axis needs no more


class LossHistory:
    def __init__(self, bins: int = BINS, recent: int = RECENT):
        self.bins = bins
        self.width = 1  # steps per bin
        self.means: list[float] = []
        self.lows: list[float] = []
        self.highs: list[float] = []
        self.recent: deque[float] = deque(maxlen=recent)
        self.steps = 0  # losses seen: the step of the last one
        self.first: float | None = None
        self._sum, self._count, self._low, self._high = 0.0, 0, math.inf, -math.inf

    def __len__(self) -> int:
        return self.steps

    def extend(self, losses: list[float] | tuple[float, ...]) -> None:
        """Add the losses of the next steps, in order."""
        for value in losses:
            if self.first is None:
                self.first = value
            self.steps += 1
            self.recent.append(value)
            self._sum += value
            self._count += 1
            self._low = min(self._low, value)
            self._high = max(self._high, value)
            if self._count == self.width:
                self._close_bin()

    def _close_bin(self) -> None:
        self.means.append(self._sum / self._count)
        self.lows.append(self._low)
        self.highs.append(self._high)
        self._sum, self._count, self._low, self._high = 0.0, 0, math.inf, -math.inf
        if len(self.means) >= 2 * self.bins:  # merge neighbours: half as many bins, twice as wide
            self.means = [(a + b) / 2 for a, b in zip(self.means[::2], self.means[1::2], strict=True)]
            self.lows = [min(a, b) for a, b in zip(self.lows[::2], self.lows[1::2], strict=True)]
            self.highs = [max(a, b) for a, b in zip(self.highs[::2], self.highs[1::2], strict=True)]
            self.width *= 2

    def binned(self) -> tuple[int, list[float], list[float], list[float]]:
        """Steps per bin and the (mean, min, max) of every bin from step 1, the last maybe partial."""
        means, lows, highs = list(self.means), list(self.lows), list(self.highs)
        if self._count:
            means.append(self._sum / self._count)
            lows.append(self._low)
            highs.append(self._high)
        return self.width, means, lows, highs

    def to_dict(self) -> dict[str, Any]:
        width, means, lows, highs = self.binned()
        return {"steps": self.steps, "first": self.first, "width": width, "means": means, "lows": lows,
                "highs": highs, "recent": list(self.recent)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], bins: int = BINS, recent: int = RECENT) -> LossHistory:
        """Rebuild from `to_dict`; a trailing partial bin becomes the bin being filled again."""
        history = cls(bins, recent)
        history.steps, history.first, history.width = int(data["steps"]), data["first"], int(data["width"])
        means, lows, highs = (list(map(float, data[k])) for k in ("means", "lows", "highs"))
        if not len(means) == len(lows) == len(highs):
            raise ValueError("loss history bins differ in length")
        partial = history.steps - (len(means) - 1) * history.width if means else 0
        if means and partial < history.width:
            history._sum, history._count = means[-1] * partial, partial
            history._low, history._high = lows[-1], highs[-1]
            means, lows, highs = means[:-1], lows[:-1], highs[:-1]
        history.means, history.lows, history.highs = means, lows, highs
        history.recent.extend(float(v) for v in data["recent"])
        return history

    @classmethod
    def from_losses(cls, losses: list[float]) -> LossHistory:
        """From every loss of a run (checkpoints before the history was bounded kept them all)."""
        history = cls()
        history.extend(losses)
        return history


def thin_validation(points: list[tuple[int, float]], limit: int = MAX_VAL) -> list[tuple[int, float]]:
    """At most `limit` points (for a limit of 8 or more): past that, every other one of the older
    half goes, the first kept; the best one (the lowest second value) always stays, and does not
    count in the every other, so it never saves a point that would have gone."""
    while len(points) > limit:  # more than once only for a list from before a lower limit
        best = min(points, key=lambda p: p[1])
        half = len(points) // 2
        older, others = [], 0
        for point in points[:half]:
            if point == best or others % 2 == 0:
                older.append(point)
            others += point != best
        if len(older) == half:  # nothing could go (a limit under 8)
            break
        points = older + points[half:]
    return points


def thin_evaluations(val: list[tuple[int, float]], train_at_eval: list[tuple[int, float]],
                     limit: int = MAX_VAL) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Both histories of the evaluations, thinned together: the training loss is kept at exactly the
    steps whose validation loss is kept, so the best step keeps both and overfitting stays readable."""
    thinned = thin_validation(val, limit)
    if thinned is val and len(train_at_eval) <= len(val):
        return val, train_at_eval
    kept = {step for step, _ in thinned}
    return thinned, [p for p in train_at_eval if p[0] in kept]


def add_time_point(timeline: list[tuple[int, float]], step: int, seconds: float) -> list[tuple[int, float]]:
    """`timeline` with the point added, in place while under MAX_TIMELINE: one per progress report
    for the life of the run, so no copy of the whole list each time."""
    timeline.append((step, seconds))
    return thin_validation(timeline, MAX_TIMELINE)
