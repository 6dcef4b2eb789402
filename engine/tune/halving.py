"""Successive halving, run asynchronously: which trial to train next, which to promote, which are
pruned. Pure logic on reported losses; it starts nothing and reads no file.

A plan has rungs, token counts growing by ETA (`plan`): every trial first trains to rung 0, and the
best floor(N_k / ETA) of the N_k trials that can reach rung k go on to rung k+1 (N_0 the planned
trials), judged on the best validation loss each reached by that rung's tokens (what its best.pt
holds: a small text over-fits within a rung): at equal tokens, whatever a trial's batch and
window. A trial is promoted as soon as it is sure to be among them (even if every trial still to
report beat it), and pruned as soon as it is sure not to be (its rank is past the quota already:
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
FIRST_RUNG_SHARE = 0.25  # a first-rung job (start-up included) takes at most this share of a slot's budget at
# the probe's speed: on a machine 3x slower than probed, the first trials still report before the budget ends
FILL = 2.0  # the first rung grows up to this many times --first-rung to fill a budget between trial counts


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

    def makespan(self, slots: int, job_tokens: float = 0.0) -> float:
        """The plan's wall-clock length in the tokens one slot trains meanwhile, every promotion made:
        each rung's jobs in waves of `slots`, a rung's waves after the rung below's (a promotion waits
        for its rung's results; a lone top-rung job leaves the other slots idle, which `tokens() /
        slots` would not see), `job_tokens` lost to each job's start-up."""
        total, previous = 0.0, 0
        for k, rung in enumerate(self.rungs):
            total += -(-self.reach(k) // slots) * (rung - previous + job_tokens)
            previous = rung
        return total


def rung_count(trials: int, eta: int = ETA, most_rungs: int = 5) -> int:
    """Rungs a plan of `trials` trials has: as many as at least one trial can reach."""
    count, reach = 1, trials // eta
    while reach >= 1 and count < most_rungs:
        count, reach = count + 1, reach // eta
    return count


def plan(slot_tokens: float, first_rung: int, *, slots: int = 1, job_tokens: float = 0.0, eta: int = ETA,
         most_rungs: int = 5) -> Plan | None:
    """The plan for a budget in which one slot trains `slot_tokens` (the probe's speed x the seconds
    left), `slots` trials at once, `job_tokens` lost to each job's start-up; None when not even two
    trials' first rungs fit, or a first-rung job would take more than FIRST_RUNG_SHARE of the budget.

    As many trials as fit (up to eta^(most_rungs-1)) at a first rung of `first_rung` tokens, on as
    many rungs as they can reach (growing by eta); then the first rung grows to fill the budget, up
    to FILL x `first_rung` below the most trials, beyond them in proportion to the budget. So the
    rungs follow the measured speed smoothly: a probe 2x faster gives rungs at most 2x longer, never
    the cliff of choosing between brackets (where, start-up eating most of a small budget, the
    bigger bracket's rungs were the scraps of it and the smaller's 100x longer)."""
    share_cap = FIRST_RUNG_SHARE * slot_tokens - job_tokens
    if first_rung > share_cap:
        return None

    def sized(trials: int, r0: float) -> Plan:
        return Plan(tuple(int(r0) * eta**k for k in range(rung_count(trials, eta, most_rungs))), trials, eta)

    most = eta ** (most_rungs - 1)
    trials = 2
    while trials < most and sized(trials + 1, first_rung).makespan(slots, job_tokens) <= slot_tokens:
        trials += 1
    unit = sized(trials, 1)  # the makespan is linear in r0: unit's, less its start-ups, times r0
    per_r0 = unit.makespan(slots, 0.0)
    startups = unit.makespan(slots, job_tokens) - per_r0
    fill = (slot_tokens - startups) / per_r0
    growth = FILL * first_rung
    if trials == most:  # past the most trials the rungs grow with the budget, in proportion
        growth = max(growth, first_rung * slot_tokens / sized(most, first_rung).makespan(slots, job_tokens))
    return sized(trials, max(first_rung, min(fill, growth, share_cap)))


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

    def tokens_left(self, plan: Plan, slots: int, job_tokens: float = 0.0) -> float:
        """How long `plan` has still to go from here, in the tokens one slot trains meanwhile: each
        rung's jobs not yet reported nor running, in waves of `slots` (as Plan.makespan), at the
        tokens each adds to the rung below's and `job_tokens` of start-up."""
        left, previous = 0.0, 0
        for k, rung in enumerate(plan.rungs):
            begun = len(self.reports[k]) + sum(1 for r in self.running.values() if r == k)
            left += -(-max(0, plan.reach(k) - begun) // slots) * (rung - previous + job_tokens)
            previous = rung
        return left

    def replan(self, seconds_per_token: float, slots: int, seconds_left: float, job_tokens: float = 0.0) -> Plan:
        """Shrink the plan to what fits `seconds_left` on `slots` at the measured `seconds_per_token`,
        each job's start-up as `job_tokens` (or folded into the seconds per token): first fewer trials
        (never below those started), then, where even those overrun, fewer rungs (never below a rung
        reported at or training), so that the sweep ends with its last promotions done rather than
        cut by the budget. Never grown; the plan now."""
        def fits(candidate: Plan) -> bool:
            return self.tokens_left(candidate, slots, job_tokens) * seconds_per_token <= seconds_left

        rungs, eta = self.plan.rungs, self.plan.eta
        shrunk = next((Plan(rungs, n, eta) for n in range(self.plan.trials, self.started - 1, -1)
                       if fits(Plan(rungs, n, eta))), None)
        if shrunk is None:
            used = [k for k in range(len(rungs)) if self.reports[k]] + list(self.running.values())
            least = max(used, default=0) + 1
            shrunk = next((Plan(rungs[:m], self.started, eta) for m in range(len(rungs), least - 1, -1)
                           if fits(Plan(rungs[:m], self.started, eta))), Plan(rungs[:least], self.started, eta))
        if shrunk != self.plan:
            self.plan = shrunk
            del self.reports[len(shrunk.rungs):], self.promoted[len(shrunk.rungs):]
        return self.plan

    def winner(self) -> tuple[int, int, float] | None:
        """(trial, rung, loss): the best at the highest rung where any trial has a finite loss."""
        for rung in reversed(range(len(self.plan.rungs))):
            finite = {t: loss for t, loss in self.reports[rung].items() if loss is not None and math.isfinite(loss)}
            if finite:
                best = ranked(dict(finite))[0]
                return best, rung, finite[best]
        return None
