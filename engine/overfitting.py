"""Reading a run's validation history: is it overfitting, and should it stop early?"""

from __future__ import annotations

from dataclasses import dataclass

PATIENCE = 3  # evaluations without a new best before the run is said to overfit


@dataclass(frozen=True)
class Verdict:
    best_step: int
    best_val: float
    since_best: int  # evaluations after the best one
    overfitting_since: int | None  # the first evaluation after the best, when overfitting


def read_history(val: list[tuple[int, float]], train_at_eval: dict[int, float], patience: int = PATIENCE,
                 since_best: int | None = None, first_after_best: int | None = None) -> Verdict:
    """`val`: (step, validation loss) in order; `train_at_eval`: step -> mean training loss over the
    steps before that evaluation. Overfitting: `patience` evaluations or more without a new best
    while the training loss went on falling below what it was at the best. `since_best` and
    `first_after_best`: the evaluations after the best and the step of the first, when the caller
    kept them; a thinned `val` holds fewer, and maybe not the first."""
    if not val:
        return Verdict(0, float("inf"), 0, None)
    best = min(range(len(val)), key=lambda i: (val[i][1], i))  # the earliest of equal bests
    best_step, best_val = val[best]
    if since_best is None:
        since_best = len(val) - 1 - best
    overfitting = None
    if since_best >= patience:
        at_best, now = train_at_eval.get(best_step), train_at_eval.get(val[-1][0])
        if at_best is not None and now is not None and now < at_best:
            overfitting = first_after_best if first_after_best is not None else val[best + 1][0]
    return Verdict(best_step, best_val, since_best, overfitting)
