"""Successive halving, run asynchronously: which trial to train next, which to promote, which are
pruned. Pure logic on reported losses; it starts nothing and reads no file.

A plan has rungs, token counts growing by ETA (`plan`): every trial first trains to rung 0, and the
best floor(N_k / ETA) of the N_k trials that can reach rung k go on to rung k+1 (N_0 the planned
trials), judged on validation loss at that rung's tokens: at equal tokens, whatever a trial's batch
and window. A trial is promoted as soon as it is sure to be among them (even if every trial still
to report beat it), and pruned as soon as it is sure not to be (its rank is past the quota already:
ranks only grow). So no slot waits for a rung to fill while a decision is already certain, and the
decisions are those of synchronous successive halving, whatever order the reports come in. ASHA
proper promotes the best 1/ETA of the trials reported so far; on a plan of a fixed number of trials
that spends promotions on early arrivals (trials 2, 3 and 4 of nine arriving best-last, not 6, 7
and 8: the tests show it). Promotions come before new trials. A diverged trial (a NaN or infinite
loss) ranks last and is pruned at once; a failed one (no loss) ranks last too. Ties go to the trial
started first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ETA = 3  # the reduction factor: a third of each rung goes on


@dataclass(frozen=True)
class Plan:
    """`trials` started at rung 0; rung k trains to rungs[k] tokens."""

    rungs: tuple[int, ...]
    trials: int
    eta: int = ETA

    def reach(self, rung: int) -> int:
        """The most trials that can ever report at `rung`."""
        most = self.trials
        for _ in range(rung):
            most //= self.eta
        return most

    def tokens(self) -> int:
        """Tokens the whole plan trains if every promotion is made (each trial's total is its top rung's)."""
        total, previous = 0, 0
        for k, rung in enumerate(self.rungs):
            total += self.reach(k) * (rung - previous)
            previous = rung
        return total

    def jobs(self) -> int:
        """Engines started if every promotion is made: one per trial and rung."""
        return sum(self.reach(k) for k in range(len(self.rungs)))


def plan(budget_tokens: float, first_rung: int, eta: int = ETA, most_rungs: int = 5,
         job_tokens: float = 0.0) -> Plan | None:
    """The plan with the most rungs (at most `most_rungs`) whose first rung is at least
    `first_rung` tokens and whose tokens fit `budget_tokens`, `job_tokens` lost to starting each
    job (an engine's start-up and its evaluation, in the tokens it could have trained): eta^s trials
    on s+1 rungs, each rung costing about the same. With no room for two rungs, two trials on one (a
    plain comparison); None when even that does not fit."""
    for s in range(most_rungs - 1, 0, -1):
        unit = Plan(tuple(eta**k for k in range(s + 1)), eta**s, eta)
        r0 = int((budget_tokens - unit.jobs() * job_tokens) // unit.tokens())
        if r0 >= first_rung:
            return Plan(tuple(r0 * eta**k for k in range(s + 1)), unit.trials, eta)
    r0 = int((budget_tokens - 2 * job_tokens) // 2)
    return Plan((r0,), 2, eta) if r0 >= first_rung else None


def ranked(losses: dict[int, float | None]) -> list[int]:
    """Trial ids best first: finite losses ascending, then NaN, infinite and failed (None); ties and
    the unranked by id."""
    def key(trial: int) -> tuple[float, int]:
        loss = losses[trial]
        return (loss if loss is not None and math.isfinite(loss) else math.inf, trial)

    return sorted(losses, key=key)


def diverged(loss: float | None) -> bool:
    return loss is not None and not math.isfinite(loss)


@dataclass
class Halving:
    """The decisions for one sweep. Reports come in as trials reach rungs; `next_job` says what a
    free slot should do; `state` what a trial is now."""

    plan: Plan
    reports: list[dict[int, float | None]] = field(default_factory=list)  # per rung: trial -> loss
    promoted: list[set[int]] = field(default_factory=list)  # per rung: the trials sent on from it
    started: int = 0  # trials begun at rung 0 (ids 0 .. started-1)
    # trial -> the rung it is training towards, until it reports: a job stopped half-way (the budget
    # spent, the sweep interrupted) stays here, to be resumed
    running: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rungs = len(self.plan.rungs)
        self.reports += [{} for _ in range(rungs - len(self.reports))]
        self.promoted += [set() for _ in range(rungs - len(self.promoted))]

    def report(self, trial: int, rung: int, loss: float | None) -> None:
        """Trial `trial` reached `rung` with validation `loss` (None: it failed before reaching it)."""
        self.running.pop(trial, None)
        self.reports[rung][trial] = loss

    def quota(self, rung: int) -> int:
        """How many trials rung `rung` may ever send on."""
        return self.plan.reach(rung) // self.plan.eta if rung + 1 < len(self.plan.rungs) else 0

    def promotable(self) -> list[tuple[int, int]]:
        """(trial, next rung) for each trial sure to be in its rung's best quota, not yet sent on,
        with a finite loss; the highest rungs first. Sure: even if every trial still to report there
        beat it, it would stay in the quota."""
        ready = []
        for rung in reversed(range(len(self.plan.rungs) - 1)):
            losses, quota = self.reports[rung], self.quota(rung)
            to_come = self.plan.reach(rung) - len(losses)
            for rank, trial in enumerate(ranked(losses)[:quota]):
                loss = losses[trial]
                sure = rank + to_come < quota
                if sure and trial not in self.promoted[rung] and loss is not None and math.isfinite(loss):
                    ready.append((trial, rung + 1))
        return ready

    def next_job(self) -> tuple[int, int] | None:
        """(trial, rung) to train next: a promotion if there is one, else a new trial (a new id) at
        rung 0 while the plan has trials left, else None. The job is counted as running."""
        ready = self.promotable()
        if ready:
            trial, rung = ready[0]
            self.promoted[rung - 1].add(trial)
        elif self.started < self.plan.trials:
            trial, rung = self.started, 0
            self.started += 1
        else:
            return None
        self.running[trial] = rung
        return trial, rung

    def top_rung(self, trial: int) -> int | None:
        """The highest rung the trial reported at, or None."""
        return next((k for k in reversed(range(len(self.reports))) if trial in self.reports[k]), None)

    def state(self, trial: int) -> str:
        """running, waiting (at a rung, may yet go on), promoted (sent on, not started yet), pruned,
        diverged, failed, finished (the last rung), or pending (not started)."""
        if trial in self.running:
            return "running"
        rung = self.top_rung(trial)
        if rung is None:
            return "pending" if trial >= self.started else "stopped"
        loss = self.reports[rung][trial]
        if loss is None:
            return "failed"
        if diverged(loss):
            return "diverged"
        if rung + 1 == len(self.plan.rungs) or self.plan.reach(rung + 1) == 0:  # no rung above it to reach
            return "finished"
        if trial in self.promoted[rung]:
            return "promoted"
        rank = ranked(self.reports[rung]).index(trial)
        return "pruned" if rank >= self.quota(rung) else "waiting"

    def tokens_left(self, trials: int) -> int:
        """Tokens still to train were the plan `trials` trials: each rung's jobs not yet reported nor
        running, at the tokens each adds to the rung below's."""
        plan, left, previous = Plan(self.plan.rungs, trials, self.plan.eta), 0, 0
        for k, rung in enumerate(plan.rungs):
            begun = len(self.reports[k]) + sum(1 for r in self.running.values() if r == k)
            left += max(0, plan.reach(k) - begun) * (rung - previous)
            previous = rung
        return left

    def replan(self, seconds_per_token: float, slots: int, seconds_left: float) -> int:
        """Shrink the plan to the most trials whose remaining work fits `seconds_left` on `slots` at
        the measured `seconds_per_token` (start-up included), never below those already started and
        never above the plan's; the trials planned now."""
        fits = [n for n in range(self.started, self.plan.trials + 1)
                if self.tokens_left(n) * seconds_per_token / slots <= seconds_left]
        trials = max(fits, default=self.started)
        if trials < self.plan.trials:
            self.plan = Plan(self.plan.rungs, trials, self.plan.eta)
        return self.plan.trials

    def winner(self) -> tuple[int, int, float] | None:
        """(trial, rung, loss): the best at the highest rung where any trial has a finite loss."""
        for rung in reversed(range(len(self.plan.rungs))):
            finite = {t: loss for t, loss in self.reports[rung].items() if loss is not None and math.isfinite(loss)}
            if finite:
                best = ranked(dict(finite))[0]
                return best, rung, finite[best]
        return None
