"""Reading a run's validation history: is it overfitting, and should it stop early?"""

from __future__ import annotations

from dataclasses import dataclass

PATIENCE = 3  # evaluations without a new best before the run is said to overfit
RISE = 1e-3  # validation must be this much (relative) above its best: failing to beat it is not overfitting
WAIT_AFTER_CHANGE = 2  # evaluations after a change of the learning rate before the run may be said to overfit


@dataclass(frozen=True)
class Verdict:
    best_step: int
    best_val: float
    since_best: int  # evaluations after the best one
    overfitting_since: int | None  # the first evaluation after the best, when overfitting


def read_history(val: list[tuple[int, float]], train_at_eval: dict[int, float], patience: int = PATIENCE,
                 since_best: int | None = None, first_after_best: int | None = None, *,
                 since_change: int | None = None, learning: bool = True) -> Verdict:
    """`val`: (step, validation loss) in order; `train_at_eval`: step -> mean training loss over the
    steps before that evaluation. Overfitting: `patience` evaluations or more without a new best,
    the latest more than RISE above the best (a validation that merely stays put is a plateau),
    while the training loss went on falling below what it was at the best. Never while the run is
    not `learning` (a learning rate of 0 changes no weight), nor within WAIT_AFTER_CHANGE evaluations of
    a change of the learning rate (`since_change`: evaluations since the last one; None: none yet): a
    cut may yet bring validation down, and the return to the peak after an open-ended run's first
    cosine raises it for a while. `since_best` and `first_after_best`: the evaluations after the
    best and the step of the first, when the caller kept them; a thinned `val` holds fewer, and
    maybe not the first."""
    if not val:
        return Verdict(0, float("inf"), 0, None)
    best = min(range(len(val)), key=lambda i: (val[i][1], i))  # the earliest of equal bests
    best_step, best_val = val[best]
    if since_best is None:
        since_best = len(val) - 1 - best
    overfitting = None
    risen = val[-1][1] > best_val + RISE * abs(best_val)
    waited = since_change is None or since_change >= WAIT_AFTER_CHANGE
    if since_best >= patience and risen and waited and learning:
        at_best, now = train_at_eval.get(best_step), train_at_eval.get(val[-1][0])
        if at_best is not None and now is not None and now < at_best:
            overfitting = first_after_best if first_after_best is not None else val[best + 1][0]
    return Verdict(best_step, best_val, since_best, overfitting)
