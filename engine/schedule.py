"""Where a run is against its stop conditions, and the learning rate that goes with it.

A run with a stop condition (--max-steps, --max-epochs, --max-time) warms up, then follows a cosine
down to min_lr_ratio * lr at the limit. A run without one trains until stopped, so no horizon can
be known: it warms up, holds the peak rate and divides it by 4 at each evaluation that brings no
new best validation loss (PyTorch's word language model example does the same), down to a floor of
the peak / 1024, where it stays. It never reaches 0, so it keeps learning for as long as it runs.
Measured against the 10-epoch cosine it replaces, on the three bundled corpora (README,
"The learning rate").

A resume that gives a new stop condition starts a new segment at that point: a cosine from a
useful rate down to the floor over the new limit (`Schedule.restart`). The segment, the cuts and
the evaluations since the last one are the schedule's state, saved in checkpoints, so a resumed
run continues exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .config import TrainConfig

CUT = 0.25  # an evaluation with no new best divides an open-ended run's rate by 4
FLOOR = CUT**5  # ... five times at most: the peak / 1024, never 0
LIMITS = ("max_steps", "max_epochs", "max_time")


@dataclass(frozen=True)
class Position:
    """Where a run is: steps, epochs and training seconds done."""

    step: int = 0
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


def limit_reached(config: TrainConfig, step: int, epoch: float, seconds: float) -> str | None:
    """Which stop condition the run has reached, in words, or None."""
    if config.max_steps and step >= config.max_steps:
        return f"reached max-steps {config.max_steps}"
    if config.max_epochs and epoch >= config.max_epochs:
        return f"reached max-epochs {config.max_epochs:g}"
    if config.max_time and seconds >= config.max_time:
        return f"reached max-time {config.max_time:g}s"
    return None


def describe_limits(config: TrainConfig, start: Position | None = None) -> str:
    """The stop conditions in words ("until stopped" without any); with `start`, how much more
    each one is from there."""
    words = []
    for limit, unit, fmt in (("max_steps", " steps", "{:,.0f}"), ("max_epochs", " epochs", "{:g}"),
                             ("max_time", "s", "{:g}")):
        end = getattr(config, limit)
        if end:
            more = f"{fmt.format(end - start.of(limit))}{unit} more, to " if start is not None else ""
            words.append(f"{more}{limit.replace('_', '-')} {fmt.format(end)}")
    return ", ".join(words) if words else "training until stopped"


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

    `start` and `start_scale`: where the current segment began and its rate there, as a fraction
    of the peak (a fresh run: step 0 and 1). `scale`: an open-ended run's rate after its cuts.
    `since_cut`: evaluations since the last cut (None: none yet)."""

    start: Position = field(default_factory=Position)
    start_scale: float = 1.0
    scale: float = 1.0
    cuts: int = 0
    since_cut: int | None = None
    kept: bool = False  # --keep-schedule: the segment holds start_scale

    def rate(self, config: TrainConfig, position: Position) -> float:
        if position.step < config.warmup_steps and self.start.step == 0:
            return config.lr * (position.step + 1) / config.warmup_steps
        if not config.lr_decay:
            return config.lr
        if self.kept:
            return config.lr * self.start_scale
        fraction = limit_fraction(config, position, self.start)
        if fraction is None:
            return config.lr * self.scale
        return cosine(config.lr * self.start_scale, config.lr * config.min_lr_ratio, fraction)

    def after_evaluation(self, config: TrainConfig, improved: bool) -> str | None:
        """Note an evaluation; an open-ended run's rate is cut when it brought no new best. Returns
        what changed, in words, or None."""
        if self.since_cut is not None:
            self.since_cut += 1
        if improved or has_limit(config) or not config.lr_decay or self.kept or self.scale <= FLOOR:
            return None
        before = config.lr * self.scale
        self.scale = max(FLOOR, self.scale * CUT)
        self.cuts += 1
        self.since_cut = 0
        floor = " (its floor: it stays there)" if self.scale <= FLOOR else ""
        return (f"no new best validation: learning rate cut to {config.lr * self.scale:.2e} from "
                f"{before:.2e}{floor}")

    def restart(self, config: TrainConfig, position: Position, current: float, keep: bool) -> str:
        """A new segment from `position`, after a resume that changed the stop conditions. It starts
        at the rate a run planned from step 0 to the new limit would have here, or at the current
        rate where that is higher (never lower than where the run is); an open-ended continuation
        is planned as long again as the run so far. `keep`: hold the current rate instead."""
        self.start, self.since_cut, self.kept = position, None, keep
        floor = config.min_lr_ratio
        if keep:
            self.start_scale = self.scale = current / config.lr
            return f"the learning rate stays at {current:.2e}, where the run's schedule left it (--keep-schedule)"
        fractions = [position.of(limit) / getattr(config, limit) for limit in LIMITS if getattr(config, limit)]
        planned = cosine(1.0, floor, min(1.0, max(fractions)) if fractions else 0.5)
        self.start_scale = self.scale = max(planned, current / config.lr)
        if self.scale > 1:
            self.start_scale = self.scale = 1.0
        rate = config.lr * self.scale
        if fractions:
            return f"a new cosine over the new limit, from {rate:.2e} down to {config.lr * floor:.2e}"
        return f"open-ended from here: {rate:.2e}, divided by 4 at each evaluation without a new best"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Schedule:
        """From `to_dict`; ValueError if it is not one."""
        if not isinstance(data, dict) or set(data) != {f.name for f in fields(cls)}:
            raise ValueError("schedule state is malformed")
        start = data["start"]
        if not isinstance(start, dict) or set(start) != {"step", "epoch", "seconds"}:
            raise ValueError("schedule start is malformed")
        schedule = cls(Position(int(start["step"]), float(start["epoch"]), float(start["seconds"])),
                       float(data["start_scale"]), float(data["scale"]), int(data["cuts"]),
                       None if data["since_cut"] is None else int(data["since_cut"]), bool(data["kept"]))
        numbers = (schedule.start.epoch, schedule.start.seconds, schedule.start_scale, schedule.scale)
        if not all(math.isfinite(x) and x >= 0 for x in numbers) or schedule.scale > 1 or schedule.start_scale > 1:
            raise ValueError("schedule state is out of range")
        return schedule


OLD_OPEN_ENDED_EPOCHS = 10.0  # before the plateau rule, an open-ended run decayed over 10 epochs


def from_old_checkpoint(config: TrainConfig, epoch: float) -> Schedule:
    """The schedule of a checkpoint written before schedules were saved: a run with a limit went
    on as before; an open-ended one goes on from the rate its 10-epoch cosine had reached."""
    if has_limit(config) or not config.lr_decay:
        return Schedule()
    scale = cosine(1.0, config.min_lr_ratio, min(1.0, epoch / OLD_OPEN_ENDED_EPOCHS))
    return Schedule(scale=min(1.0, max(FLOOR, scale)))
