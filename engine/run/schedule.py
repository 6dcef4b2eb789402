"""Where a run is against its stop conditions, and the learning rate that goes with it.

A run with a stop condition (--max-steps, --max-epochs, --max-time) warms up, then follows a cosine
down to min_lr_ratio * lr at the limit. A run without one trains until stopped, so no horizon can
be known. It warms up and follows the cosine of a 10-epoch run, exactly as it always did (its
first minutes are those of a short run), or of a 15-minute one where 10 epochs would take longer
(a slow device or a long text: the horizon follows the device's speed, in training time); then
it goes back to the peak and divides the rate by 4
at each evaluation that brings no new best since (PyTorch's word language model example does the
same), down to a floor of the peak / 1024, where it stays. It never reaches 0, so it keeps
learning for as long as it runs. Measured against the 10-epoch cosine to 0 it replaces,
on the three bundled corpora (docs/PERFORMANCE.md, "Open-ended runs").

A resume that gives a new stop condition starts a new segment at that point: a cosine from a
useful rate down to the floor over the new limit (`Schedule.restart`). The segment, the cuts and
the evaluations since the last one are the schedule's state, saved in checkpoints, so a resumed
run continues exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from charrnn_tui.engine.config import TrainConfig
from charrnn_tui.engine.counts import plural

FIRST_COSINE_EPOCHS = 10.0  # an open-ended run first decays over as many epochs as it used to ...
FIRST_COSINE_SECONDS = 900.0  # ... or over 15 minutes of training where that comes first
CUT = 0.25  # then an evaluation with no new best divides its rate by 4
FLOOR = CUT**5  # ... five times at most: the peak / 1024, never 0
LIMITS = ("max_steps", "max_epochs", "max_time")


@dataclass(frozen=True)
class Position:
    """Where a run is: steps, epochs and training seconds done."""

    step: float = 0  # a whole number, but for a segment's virtual start (Schedule.restart)
    epoch: float = 0.0
    seconds: float = 0.0

    def of(self, limit: str) -> float:
        return {"max_steps": self.step, "max_epochs": self.epoch, "max_time": self.seconds}[limit]


def limit_fraction(config: TrainConfig, position: Position, start: Position = Position()) -> float | None:
    """How far through [start, limit] its stop conditions say the run is (the furthest of them),
    or None without any."""
    fractions = []
    for limit in LIMITS:
        end = getattr(config, limit)
        if end:
            done, begin = position.of(limit), start.of(limit)
            fractions.append((done - begin) / (end - begin) if end > begin else 1.0)
    return min(1.0, max(0.0, max(fractions))) if fractions else None


def limit_reached(config: TrainConfig, step: float, epoch: float, seconds: float) -> str | None:
    """Which stop condition the run has reached, in words, or None."""
    if config.max_steps and step >= config.max_steps:
        return f"reached max-steps {config.max_steps}"
    if config.max_epochs and epoch >= config.max_epochs:
        return f"reached max-epochs {config.max_epochs:.3g}"
    if config.max_time and seconds >= config.max_time:
        return f"reached max-time {seconds_text(config.max_time)}"
    return None


def describe_limits(config: TrainConfig, start: Position | None = None) -> str:
    """The stop conditions in words ("until stopped" without any); with `start`, how much more
    each one is from there."""
    words = []
    for limit, amount in (("max_steps", lambda n: plural(n, "step", spec=",.0f")),
                          ("max_epochs", lambda n: plural(n, "epoch", spec=".3g")), ("max_time", seconds_text)):
        end = getattr(config, limit)
        if end:
            more = f"{amount(end - start.of(limit))} more, to " if start is not None else ""
            words.append(f"{more}{limit.replace('_', '-')} {amount(end).split()[0]}")
    return ", ".join(words) if words else "training until stopped"


def describe_open_ended(steps_per_epoch: int) -> str:
    """What the learning rate of a new open-ended run will do, in words, for start-up."""
    return (f"no stop condition, so the learning rate follows a cosine over the first "
            f"{FIRST_COSINE_EPOCHS:g} epochs ({FIRST_COSINE_EPOCHS * steps_per_epoch:,.0f} steps) or "
            f"{FIRST_COSINE_SECONDS / 60:g} minutes of training, whichever ends first, then is divided by 4 at "
            "each evaluation without a new best")


def seconds_text(seconds: float) -> str:
    """Training time as a limit is told: 0.5s, 8.0s, 620s."""
    return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"


def wall_eta(training_left: float, trained: float, overhead: float, final_evaluation: float) -> float:
    """Wall-clock seconds to the limit: the training left, plus evaluations, samples and saves in
    the share of the time they took so far (`overhead` seconds beside `trained`), plus the final
    evaluation. A limit counts training time only: a run on a large text used to say ETA 00:07
    while its validations had 90 seconds left."""
    return training_left * (1 + overhead / max(trained, 1e-9)) + final_evaluation


def has_limit(config: TrainConfig) -> bool:
    return any(getattr(config, limit) for limit in LIMITS)


def cosine(top: float, floor: float, fraction: float) -> float:
    return floor + 0.5 * (top - floor) * (1 + math.cos(math.pi * fraction))


@dataclass
class Schedule:
    """The learning rate of a run, and the state it keeps (saved in checkpoints).

    `start`: where the current segment's cosine began (a fresh run: step 0; after a resume, maybe a
    virtual point before it, see `restart`). An open-ended segment first follows a cosine over
    `cosine_epochs` (10 for a fresh run: what a 10-epoch run would do, so its first minutes are as
    good as a short run's) or `cosine_seconds` of training, whichever ends first (None: epochs only,
    as runs saved before it kept), then goes back to the peak and keeps to the plateau rule: `scale` is
    its rate after its cuts, `best` the best validation since it began. `since_change`:
    evaluations since the last cut or the return to the peak (None: neither yet)."""

    start: Position = field(default_factory=Position)
    scale: float = 1.0
    cosine_epochs: float = FIRST_COSINE_EPOCHS
    cosine_seconds: float | None = FIRST_COSINE_SECONDS
    best: float | None = None
    cuts: int = 0
    since_change: int | None = None
    kept: bool = False  # --keep-schedule: the segment holds `scale`

    def rate(self, config: TrainConfig, position: Position) -> float:
        if position.step < config.warmup_steps and self.start.step == 0:
            return config.lr * (position.step + 1) / config.warmup_steps
        if not config.lr_decay:
            return config.lr
        if self.kept:
            return config.lr * self.scale
        fraction = limit_fraction(config, position, self.start)
        if fraction is not None:
            return cosine(config.lr, config.lr * config.min_lr_ratio, fraction)
        if self.in_first_cosine(position):  # as a 10-epoch run would (0 only at its end, where the peak is back)
            return cosine(config.lr, config.lr * config.min_lr_ratio, self.first_cosine_fraction(position))
        return config.lr * self.scale

    def _epochs_fraction(self, position: Position) -> float:
        return (position.epoch - self.start.epoch) / self.cosine_epochs if self.cosine_epochs else 1.0

    def first_cosine_fraction(self, position: Position) -> float:
        """How far through its first cosine an open-ended segment is: the further of its epochs and
        its training time."""
        fraction = self._epochs_fraction(position)
        if self.cosine_seconds is not None:
            by_time = (position.seconds - self.start.seconds) / self.cosine_seconds if self.cosine_seconds else 1.0
            fraction = max(fraction, by_time)
        return fraction

    def in_first_cosine(self, position: Position) -> bool:
        return self.first_cosine_fraction(position) < 1.0

    def first_cosine_length(self, position: Position) -> str:
        """What ended the first cosine, in words: its epochs or its training time."""
        if self._epochs_fraction(position) >= 1.0 or self.cosine_seconds is None:
            return plural(self.cosine_epochs, "epoch", spec="g")
        return (f"{plural(self.cosine_seconds / 60, 'minute', spec='g')} of training, before "
                f"{plural(self.cosine_epochs, 'epoch', spec='g')}")

    def after_evaluation(self, config: TrainConfig, position: Position, value: float) -> str | None:
        """Note an evaluation of validation loss `value`. An open-ended run past its first cosine
        cuts its rate when the evaluation does not beat the best since then. Returns what changed,
        in words, or None."""
        if self.since_change is not None:
            self.since_change += 1
        if has_limit(config) or not config.lr_decay or self.kept or self.in_first_cosine(position):
            return None
        if self.best is None:  # the first evaluation of the plateau rule: back at the peak after the first cosine
            self.best, self.since_change = value, 0
            if not self.cosine_epochs:  # a resume that cleared the limits said what it does
                return None
            return (f"after the first cosine ({self.first_cosine_length(position)}), the learning rate is back at "
                    f"{config.lr * self.scale:.2e}; from here each evaluation that brings no new best divides it "
                    "by 4")
        if value < self.best:
            self.best = value
            return None
        if self.scale <= FLOOR:
            return None
        before = config.lr * self.scale
        self.scale = max(FLOOR, self.scale * CUT)
        self.cuts += 1
        self.since_change = 0
        floor = " (its floor: it stays there)" if self.scale <= FLOOR else ""
        return (f"no new best validation: learning rate cut to {config.lr * self.scale:.2e} from "
                f"{before:.2e}{floor}")

    def restart(self, config: TrainConfig, position: Position, current: float, keep: bool) -> str:
        """A new segment from `position`, after a resume that changed the stop conditions.

        With a limit: the rest of a cosine from the peak that reaches the floor at the new limit and
        passes, now, through the rate a run planned from step 0 to that limit would have here, or
        through the current rate where that is higher (never lower than where the run is). Planned,
        it is that run's own cosine (`start` at 0): a run stopped and given the steps it lacked
        trains as if it had been given them from the start. Higher, the cosine starts at a virtual
        point before `position`. Open-ended: the plateau rule at once, from the rate a run planned
        as long again as this one so far would have (half way down), or the current one.
        `keep`: hold the current rate instead."""
        self.since_change, self.kept, self.cosine_epochs, self.cosine_seconds, self.best = None, keep, 0.0, 0.0, None
        self.start = position
        floor = config.min_lr_ratio
        if keep:
            self.scale = current / config.lr
            return f"the learning rate stays at {current:.2e}, where the run's schedule left it (--keep-schedule)"
        limits = [limit for limit in LIMITS if getattr(config, limit)]
        planned_at = max((position.of(limit) / getattr(config, limit) for limit in limits), default=0.5)
        planned = cosine(1.0, floor, min(1.0, planned_at))
        self.scale = min(1.0, max(planned, current / config.lr))
        rate = config.lr * self.scale
        if not limits:
            return f"training until stopped from here: {rate:.2e}, divided by 4 at each evaluation without a new best"
        if self.scale <= planned:
            self.start = Position()
            return (f"a new cosine from {rate:.2e} (where a run planned for the new limit would be now) down to "
                    f"{config.lr * floor:.2e} at the limit")
        # where a cosine through `rate` now must have started to reach the floor at each limit
        x = math.acos(min(1.0, max(-1.0, 2 * (self.scale - floor) / (1 - floor) - 1))) / math.pi
        virtual = {limit: (position.of(limit) - x * getattr(config, limit)) / (1 - x) for limit in limits}
        self.start = Position(virtual.get("max_steps", position.step), virtual.get("max_epochs", position.epoch),
                              virtual.get("max_time", position.seconds))
        return f"a new cosine from {rate:.2e} (the rate the run is at) down to {config.lr * floor:.2e} at the limit"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Schedule:
        """From `to_dict`; ValueError if it is not one."""
        if isinstance(data, dict) and "cosine_seconds" not in data:  # saved before the time bound: epochs only
            data = {**data, "cosine_seconds": None}
        if not isinstance(data, dict) or set(data) != {f.name for f in fields(cls)}:
            raise ValueError("schedule state is malformed")
        start = data["start"]
        if not isinstance(start, dict) or set(start) != {"step", "epoch", "seconds"}:
            raise ValueError("schedule start is malformed")
        schedule = cls(Position(float(start["step"]), float(start["epoch"]), float(start["seconds"])),
                       float(data["scale"]), float(data["cosine_epochs"]),
                       None if data["cosine_seconds"] is None else float(data["cosine_seconds"]),
                       None if data["best"] is None else float(data["best"]), int(data["cuts"]),
                       None if data["since_change"] is None else int(data["since_change"]), bool(data["kept"]))
        numbers = (schedule.scale, schedule.cosine_epochs,
                   0.0 if schedule.cosine_seconds is None else schedule.cosine_seconds,
                   0.0 if schedule.best is None else schedule.best)
        starts = (schedule.start.step, schedule.start.epoch, schedule.start.seconds)  # a virtual start may be < 0
        if (not all(math.isfinite(x) and x >= 0 for x in numbers) or not all(math.isfinite(x) for x in starts)
                or schedule.scale > 1):
            raise ValueError("schedule state is out of range")
        return schedule
