"""`tune`'s plan against the machine it meets: rungs that follow the measured speed smoothly, a first
rung that is a small share of the budget, and a sweep on a machine slower than probed that re-plans
and still ends with a winner within its budget. Pure logic, synthetic speeds and losses, a
simulated clock; and the speed probe's median on a fake clock."""

from __future__ import annotations

import heapq
import itertools
import random

import pytest

from charrnn_tui.engine.tune.halving import FIRST_RUNG_SHARE, Halving, Plan, plan
from charrnn_tui.engine.tune.speed import OVERRUN, median_rate

JOB_SECONDS = 4.0  # as tune_command's: the start-up the plan counts per job
SPEEDS = [5_000 * 1.25**i for i in range(30)]  # tokens/s, 5k to 3.2M
CASES = [  # (seconds left, slots, first rung in tokens): the test's tiny sweeps to a 20 min sweep of the small preset
    (28.0, 2, 10_800), (90.0, 2, 10_240), (300.0, 1, 256_000), (1200.0, 2, 512_000), (1200.0, 3, 512_000),
    (3600.0, 8, 512_000),
]


def plan_at(speed: float, seconds: float, slots: int, first_rung: int) -> Plan | None:
    return plan(speed * seconds, first_rung, slots=slots, job_tokens=speed * JOB_SECONDS)


def test_the_plan_that_swung_100x_with_a_second_of_budget_no_longer_does():
    # Issue 29: two 30 s runs of a tiny sweep planned 9 trials on rungs of 10.8k or 3 on 1.08M. At 135k
    # tokens/s start-up ate 52 of the 56 slot-seconds of the 9-trial bracket: its rungs were the scraps,
    # and a second less budget fell to the 3-trial bracket with 8 s of training a rung.
    plans = [plan_at(135_000, seconds, 2, 10_800) for seconds in (26.0, 27.0, 28.0, 29.0)]
    assert all(p is not None for p in plans)
    assert {p.rungs[0] for p in plans if p} == {21_600}  # twice --first-rung, each


@pytest.mark.parametrize(("seconds", "slots", "first_rung"), CASES)
def test_rungs_follow_the_speed_smoothly(seconds, slots, first_rung):
    """Speeds within 2x of each other give first rungs (so every rung both plans have) within 2x."""
    plans = {speed: plan_at(speed, seconds, slots, first_rung) for speed in SPEEDS}
    planned = [speed for speed, p in plans.items() if p is not None]
    assert len(planned) >= 10  # the budget buys a plan over most of the range
    assert all(plans[s] is not None for s in SPEEDS if s >= planned[0])  # a faster machine never loses its plan
    for slow, fast in itertools.combinations(planned, 2):
        if fast > 2 * slow:
            continue
        a, b = plans[slow], plans[fast]
        assert a is not None and b is not None
        assert 0.5 <= b.rungs[0] / a.rungs[0] <= 2.0, (slow, a, fast, b)
        assert b.trials >= a.trials  # more speed never means fewer trials


@pytest.mark.parametrize(("seconds", "slots", "first_rung"), CASES)
def test_a_plan_fits_its_budget_and_its_first_rung_is_a_small_share_of_it(seconds, slots, first_rung):
    for speed in SPEEDS:
        p = plan_at(speed, seconds, slots, first_rung)
        if p is None:  # too short: a first-rung job would be more than its share of the budget
            assert first_rung / speed + JOB_SECONDS > FIRST_RUNG_SHARE * seconds
            continue
        assert p.trials >= 2 and p.rungs[0] >= first_rung
        assert p.makespan(slots, speed * JOB_SECONDS) <= speed * seconds * 1.0001
        assert p.rungs[0] / speed + JOB_SECONDS <= FIRST_RUNG_SHARE * seconds * 1.0001
        assert all(b == 3 * a for a, b in itertools.pairwise(p.rungs)) and p.reach(len(p.rungs) - 1) >= 1


def test_the_makespan_counts_waves_and_the_lone_top_rung():
    p = Plan((10, 30, 90), 9)
    assert p.makespan(1) == p.tokens() == 9 * 10 + 3 * 20 + 60
    # 3 slots: rung 0 in 3 waves, rung 1 in one, the top rung alone; start-ups once a wave
    assert p.makespan(3, job_tokens=5) == 3 * 15 + 25 + 65


# ---- a sweep on a simulated clock -------------------------------------------------------------------
def simulate(the_plan: Plan, *, slots: int, budget_s: float, probed: float, speed: float, job_s: float,
             seed: int = 0) -> tuple[Halving, float, list[Plan]]:
    """Sweep's loop on a clock: each job trains its rung's tokens at `speed` after `job_s` of start-up;
    each ended job re-plans from how much longer the jobs so far took than the plan's model at the
    `probed` speed said, as Sweep._replan; at the budget the jobs in flight are stopped (their
    results lost). Returns the decisions, the time the sweep ended and the plans it went through."""
    rng = random.Random(seed)
    quality = [rng.uniform(1.0, 2.0) for _ in range(the_plan.trials)]
    h = Halving(the_plan)
    now, measured, plans = 0.0, [0.0, 0.0, 0], [the_plan]
    in_flight: list[tuple[float, int, int, float, int]] = []  # (ends, trial, rung, seconds, tokens)
    while True:
        while len(in_flight) < slots and (job := h.next_job()) is not None:
            trial, rung = job
            tokens = h.plan.rungs[rung] - (h.plan.rungs[rung - 1] if rung else 0)
            seconds = tokens / speed + job_s
            heapq.heappush(in_flight, (now + seconds, trial, rung, seconds, tokens))
        if not in_flight:
            return h, now, plans
        ends, trial, rung, seconds, tokens = heapq.heappop(in_flight)
        if ends > budget_s:  # the budget is spent: the rest are stopped
            return h, budget_s, plans
        now = ends
        h.report(trial, rung, quality[trial] - 0.1 * rung)
        measured[0] += seconds
        measured[1] += tokens
        measured[2] += 1
        slower = measured[0] / (measured[1] / probed + measured[2] * JOB_SECONDS)  # as Sweep._replan
        if h.replan(slower / probed, slots, budget_s - now, job_tokens=probed * JOB_SECONDS) != plans[-1]:
            plans.append(h.plan)


MACHINES = {  # (training speed, start-up) as a share of what the probe and JOB_SECONDS said
    "as probed": (1.0, 1.0),
    "3x slower than probed": (1 / 3, 3.0),
    "a probe 3x too optimistic": (1 / 3, 1.0),
    "start-up 10 s, not 4": (1.0, 2.5),
}


@pytest.mark.parametrize("machine", list(MACHINES))
@pytest.mark.parametrize(("seconds", "slots", "first_rung", "speed"), [
    (28.0, 2, 10_800, 135_000), (90.0, 2, 10_240, 100_000), (300.0, 1, 256_000, 20_000),
    (1200.0, 2, 512_000, 20_000), (1200.0, 3, 512_000, 200_000),
])
def test_a_sweep_on_a_slower_machine_re_plans_and_ends_with_a_winner_within_its_budget(
        machine, seconds, slots, first_rung, speed):
    the_plan = plan_at(speed, seconds, slots, first_rung)
    assert the_plan is not None
    pace, start_up = MACHINES[machine]
    h, ended, plans = simulate(the_plan, slots=slots, budget_s=seconds, probed=speed, speed=speed * pace,
                               job_s=JOB_SECONDS * start_up)
    assert h.winner() is not None and ended <= seconds
    assert not h.running  # the re-planned sweep finished its plan: no promotion cut by the budget
    winner_rung = h.winner()[1]
    assert winner_rung == len(h.plan.rungs) - 1 or h.plan.reach(winner_rung + 1) == 0  # at the plan's top
    true_speed = speed * pace
    overran = the_plan.makespan(slots, true_speed * JOB_SECONDS * start_up) / true_speed > seconds
    assert len(plans) > 1 if overran else True  # re-planned where it had to (and, erring safe, maybe where not)
    if machine == "as probed":
        assert plans == [the_plan]  # as probed, nothing to re-plan
    assert plans[-1].tokens() <= the_plan.tokens()


def test_a_re_plan_cuts_trials_first_then_rungs_never_below_what_has_begun():
    h = Halving(Plan((100, 300, 900), 9))
    for _ in range(3):
        h.next_job()
    h.report(0, 0, 1.0)
    h.report(1, 0, 1.5)  # trial 2 still training at rung 0
    assert h.tokens_left(h.plan, 1) == 6 * 100 + 3 * 200 + 1 * 600
    assert h.tokens_left(h.plan, 2) == 3 * 100 + 2 * 200 + 1 * 600  # in waves of two
    assert h.replan(seconds_per_token=0.01, slots=1, seconds_left=1e9) == Plan((100, 300, 900), 9)  # it fits
    # 4 trials: 1 more at rung 0 and one promotion of 200: 3 s at 0.01 s a token
    assert h.replan(seconds_per_token=0.01, slots=1, seconds_left=3.0) == Plan((100, 300, 900), 4)
    # the 3 started and their one promotion do not fit: the rungs above are dropped, not the one begun
    assert h.replan(seconds_per_token=0.01, slots=1, seconds_left=1.0) == Plan((100,), 3)
    assert len(h.reports) == len(h.promoted) == 1 and h.state(0) == "finished"
    assert h.replan(seconds_per_token=1.0, slots=1, seconds_left=1e9) == Plan((100,), 3)  # never grown back
    h.report(2, 0, 2.0)
    assert h.next_job() is None and h.winner() == (0, 0, 1.0)


# ---- the probe --------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self, step_seconds: list[float]):
        self.now, self.steps = 0.0, iter(step_seconds)

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += next(self.steps)


def test_the_probe_takes_the_median_of_its_slices_so_one_stall_is_not_its_figure():
    clock = FakeClock([0.01] * 40 + [0.5] + [0.01] * 200)  # a stall of half a second in the second slice
    rate = median_rate(clock.step, 1.0, slices=5, clock=clock)
    assert rate == pytest.approx(100.0)  # the mean over the same steps would say 200 / 2.5 s = 80


def test_the_probe_is_bounded_on_a_device_whose_steps_are_slow():
    clock = FakeClock([10.0] * 100)  # every step 10 s, for a probe of 2 s
    rate = median_rate(clock.step, 2.0, slices=5, clock=clock)
    assert rate == pytest.approx(0.1) and clock.now <= OVERRUN * 2.0 + 10.0  # one step past the bound at most
