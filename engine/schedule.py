"""Where a run is against its stop conditions, and the learning rate that goes with it."""

from __future__ import annotations

import math

from .config import TrainConfig

OPEN_ENDED_DECAY_EPOCHS = 10.0  # the decay horizon of a run with no stop condition


def limit_fraction(config: TrainConfig, step: int, epoch: float, seconds: float) -> float | None:
    """How far through the run its stop conditions say it is (the furthest of them), or None."""
    fractions = []
    if config.max_steps:
        fractions.append(step / config.max_steps)
    if config.max_epochs:
        fractions.append(epoch / config.max_epochs)
    if config.max_time:
        fractions.append(seconds / config.max_time)
    return min(1.0, max(fractions)) if fractions else None


def limit_reached(config: TrainConfig, step: int, epoch: float, seconds: float) -> str | None:
    """Which stop condition the run has reached, in words, or None."""
    if config.max_steps and step >= config.max_steps:
        return f"reached max-steps {config.max_steps}"
    if config.max_epochs and epoch >= config.max_epochs:
        return f"reached max-epochs {config.max_epochs:g}"
    if config.max_time and seconds >= config.max_time:
        return f"reached max-time {config.max_time:g}s"
    return None


def learning_rate(config: TrainConfig, step: int, fraction: float | None, epoch: float) -> float:
    """Linear warm-up over the first steps, then cosine decay to min_lr_ratio * lr over the run's
    stop condition, or over OPEN_ENDED_DECAY_EPOCHS when it has none (a peak rate tuned for short
    runs is too high to hold for ever: validation loss rose again after two epochs at it)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if not config.lr_decay:
        return config.lr
    if fraction is None:
        fraction = min(1.0, epoch / OPEN_ENDED_DECAY_EPOCHS)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * fraction))
