"""The learning-rate schedule: a cosine to the stop condition, the plateau rule of an open-ended run,
and what a resume does to both."""

from __future__ import annotations

import math

import pytest
from helpers import examples, step_losses, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.checkpoint import load_checkpoint, save_checkpoint
from charrnn_tui.engine.errors import ConfigError
from charrnn_tui.engine.events import Evaluated, Notice, Progress
from charrnn_tui.engine.protocol import Stop
from charrnn_tui.engine.run import schedule
from charrnn_tui.engine.run.schedule import CUT, FLOOR, Position, Schedule
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import LATEST


def _preset(name: str, **overrides) -> cfg.TrainConfig:
    import dataclasses

    return dataclasses.replace(cfg.apply_preset(cfg.TrainConfig(), name), **overrides)


AFTER = Position(step=100_000, epoch=12.0, seconds=3600.0)  # past the first cosine's 10 epochs


@pytest.mark.parametrize("preset", list(cfg.PRESETS))
def test_an_open_ended_run_on_every_preset_still_learns_after_100_epochs_without_a_new_best(preset):
    config = _preset(preset)
    rule = Schedule()
    for evaluation in range(400):  # 100 epochs at four evaluations an epoch, none a new best after the first
        epoch = evaluation / 4
        rule.after_evaluation(config, Position(step=evaluation * 100, epoch=epoch), 2.0 - (epoch < 10))
    rate = rule.rate(config, Position(step=100_000, epoch=100.0, seconds=36_000.0))
    assert rate == pytest.approx(config.lr * FLOOR) and rate > 0 and rule.cuts == 5


def test_an_open_ended_run_first_follows_the_cosine_of_a_10_epoch_run_then_goes_back_to_the_peak():
    config = _preset("small", warmup_steps=0)
    rule = Schedule()
    assert rule.rate(config, Position(step=10, epoch=0.0)) == pytest.approx(config.lr)
    # exactly the old rule's cosine (to min_lr_ratio: 0 for small), so the first minutes are as they were
    assert rule.rate(config, Position(step=10, epoch=5.0)) == pytest.approx(config.lr / 2)
    assert 0 < rule.rate(config, Position(step=10, epoch=9.999)) < config.lr * 1e-6
    for epoch in range(10):  # evaluations in the first cosine cut nothing
        assert rule.after_evaluation(config, Position(epoch=epoch + 0.5), 3.0) is None
    assert rule.rate(config, Position(step=10, epoch=10.0)) == config.lr
    assert "back at 8.00e-03" in rule.after_evaluation(config, Position(epoch=10.5), 3.0)
    assert rule.since_change == 0 and rule.cuts == 0


def test_the_first_cosine_ends_after_15_minutes_of_training_where_10_epochs_would_take_longer():
    """A long text or a slow device: the horizon is the earlier of 10 epochs and 15 minutes of training."""
    config = _preset("small", warmup_steps=0)
    rule = Schedule()
    assert rule.rate(config, Position(step=10, epoch=0.5, seconds=450.0)) == pytest.approx(config.lr / 2)  # by time
    assert rule.rate(config, Position(step=10, epoch=5.0, seconds=60.0)) == pytest.approx(config.lr / 2)  # by epochs
    assert rule.after_evaluation(config, Position(epoch=0.9, seconds=899.0), 3.0) is None  # still in it
    assert rule.rate(config, Position(step=10, epoch=1.0, seconds=900.0)) == config.lr  # back at the peak
    said = rule.after_evaluation(config, Position(epoch=1.0, seconds=900.0), 3.0)
    assert said.startswith("after the first cosine (15 minutes of training, before 10 epochs), the learning rate is "
                           "back at 8.00e-03")
    assert rule.after_evaluation(config, Position(epoch=1.1, seconds=950.0), 3.1).startswith("no new best")
    quick = Schedule()
    quick.after_evaluation(config, Position(epoch=10.0, seconds=100.0), 3.0)
    assert quick.best == 3.0  # 10 epochs came first
    said = Schedule().after_evaluation(config, Position(epoch=10.0, seconds=100.0), 3.0)
    assert said.startswith("after the first cosine (10 epochs)")


def test_a_schedule_saved_before_the_time_bound_keeps_to_epochs():
    saved = Schedule().to_dict()
    del saved["cosine_seconds"]
    rule = Schedule.from_dict(saved)
    assert rule.cosine_seconds is None and rule.in_first_cosine(Position(epoch=9.0, seconds=1e6))
    assert not rule.in_first_cosine(Position(epoch=10.0, seconds=0.0))


def test_a_run_with_a_stop_condition_keeps_its_cosine_to_the_floor():
    config = _preset("small", max_steps=1000)  # min_lr_ratio 0: the 75-second benchmark's schedule
    rule = Schedule()
    assert rule.rate(config, Position(step=0)) == pytest.approx(config.lr / config.warmup_steps)  # warming up
    assert rule.rate(config, Position(step=500)) == pytest.approx(config.lr / 2)
    assert rule.rate(config, Position(step=1000)) == 0.0
    for epoch in range(20):  # evaluations without a new best cut nothing: the limit sets the horizon
        assert rule.after_evaluation(config, Position(step=500, epoch=epoch), 5.0) is None
    assert rule.rate(config, Position(step=500, epoch=19.0)) == pytest.approx(config.lr / 2)


def rates_for(curve: list[float]) -> list[float]:
    """An open-ended run's rate after each evaluation of a validation curve, past its first cosine."""
    config = _preset("small", warmup_steps=0)
    rule, seen = Schedule(), []
    for value in curve:
        rule.after_evaluation(config, AFTER, value)
        seen.append(rule.rate(config, AFTER) / config.lr)
    return seen


def test_the_plateau_rule_on_synthetic_validation_curves():
    assert rates_for([3.0, 2.5, 2.2, 2.0, 1.9]) == [1.0] * 5  # still improving: the peak holds
    # a plateau: each evaluation without a new best divides the rate by 4, down to the floor
    assert rates_for([2.0, 2.0, 2.1, 2.0, 2.05, 2.2, 2.3, 2.4]) == [1, CUT, CUT**2, CUT**3, CUT**4, FLOOR, FLOOR,
                                                                    FLOOR]
    # a cut that brings a new best holds the lower rate until the next evaluation without one
    assert rates_for([2.0, 2.1, 1.9, 1.8, 1.85]) == [1, CUT, CUT, CUT, CUT**2]


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.floats(0.5, 5.0), min_size=1, max_size=60))
def test_the_rate_of_an_open_ended_run_only_falls_and_never_below_the_floor(curve):
    rates = rates_for(curve)
    assert rates == sorted(rates, reverse=True) and min(rates) >= FLOOR


def test_a_schedule_round_trips_and_a_broken_one_is_refused():
    rule = Schedule(Position(40, 2.5, 12.0), scale=0.25, cosine_epochs=0.0, cosine_seconds=600.0, best=1.5, cuts=3,
                    since_change=1, kept=False)
    assert Schedule.from_dict(rule.to_dict()) == rule
    for broken in ({}, {**rule.to_dict(), "scale": 2.0}, {**rule.to_dict(), "scale": float("nan")},
                   {**rule.to_dict(), "start": {"step": 1}}, {**rule.to_dict(), "extra": 1}, [],
                   {**rule.to_dict(), "best": float("inf")}, {**rule.to_dict(), "cosine_epochs": -1.0},
                   {**rule.to_dict(), "cosine_seconds": -1.0}, {**rule.to_dict(), "cosine_seconds": float("inf")}):
        with pytest.raises(ValueError):
            Schedule.from_dict(broken)


# ---- the rule in a training run --------------------------------------------------------------------
@pytest.fixture
def unlike_text(tmp_path):
    """A repetitive text whose validation part (the last 10%) is unlike it: once the model knows the
    rest by heart, validation only gets worse, so an open-ended run cuts its rate."""
    import random

    rng = random.Random(7)
    path = tmp_path / "unlike.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 54
                    + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz .") for _ in range(270)))
    return path


def _open_ended(text, **overrides):
    # 38 steps an epoch, so the first cosine ends at step 380; then an evaluation every 5 steps
    return tiny_config(text, lr=0.05, eval_interval=5, report_interval=1e-9, **overrides)


def test_an_open_ended_run_cuts_its_rate_when_validation_stops_improving(unlike_text, runs_dir):
    events: list = []
    trainer: Trainer

    def on_event(e):
        events.append(e)
        if isinstance(e, Progress) and e.step >= 600:
            trainer.request(Stop(save=False))

    trainer = Trainer(_open_ended(unlike_text), runs_dir=runs_dir, on_event=on_event)
    trainer.run()
    notes = [e.message for e in events if isinstance(e, Notice)]
    cuts = [m for m in notes if "learning rate cut" in m]
    assert cuts and trainer.built.schedule.cuts == len(cuts)
    assert sum("back at 5.00e-02" in m for m in notes) == 1
    rates = {e.step: e.lr for e in events if isinstance(e, Progress)}
    after = next(s for s in sorted(rates) if rates.get(s + 1, 0.0) > rates[s])  # the return to the peak
    assert 370 <= after <= 390 and rates[after + 1] == 0.05
    assert min(rates.values()) >= 0.05 * FLOOR and rates[600] < 0.05
    assert len([e for e in events if isinstance(e, Evaluated)]) == 120


def test_a_resume_in_the_middle_of_a_reduced_rate_continues_it_exactly(unlike_text, runs_dir):
    config = _open_ended(unlike_text)
    whole = step_losses(stop_at=600, config=config, runs_dir=runs_dir, run_name="whole")
    step_losses(stop_at=500, config=config, runs_dir=runs_dir, run_name="part")
    saved = load_checkpoint(runs_dir / "part" / LATEST)
    assert saved["schedule"]["cuts"] >= 1  # stopped with its rate reduced
    rest = step_losses(stop_at=600, resume=runs_dir / "part" / LATEST, runs_dir=runs_dir)
    assert min(rest) == 501 and all(rest[s] == whole[s] for s in rest)


def _finished(repetitive_text, runs_dir, **overrides):
    config = tiny_config(repetitive_text, max_steps=30, eval_interval=10, report_interval=1e-9, **overrides)
    Trainer(config, runs_dir=runs_dir, run_name="done").run()
    return runs_dir / "done" / LATEST


def test_a_resume_with_a_new_limit_trains_that_much_more_from_a_useful_rate(repetitive_text, runs_dir):
    path = _finished(repetitive_text, runs_dir, min_lr_ratio=0.0)
    events: list = []
    trainer = Trainer(resume=path, runs_dir=runs_dir, overrides={"max_steps": 90}, on_event=events.append)
    assert trainer.run() == "finished" and trainer.trained.step == 120
    notes = [e.message for e in events if isinstance(e, Notice) and e.message.startswith("resumed")]
    assert notes == ["resumed at step 30: 90 steps more, to max-steps 120 (was max-steps 30); a new cosine from "
                     "8.54e-03 (where a run planned for the new limit would be now) down to 0.00e+00 at the limit"]
    rates = {e.step: e.lr for e in events if isinstance(e, Progress)}
    # the cosine of a run planned for 120 steps from the start, from step 30 on
    assert rates == {step: pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * step / 120)), abs=1e-12)
                     for step in range(31, 121)}


def test_a_resume_from_a_higher_rate_than_planned_anneals_from_there(unlike_text, runs_dir):
    """An open-ended run still at its peak, given 20 steps more: the rest of a cosine through the
    peak now, down to the floor at the limit (not the low rate a run planned for 20 more would have)."""
    step_losses(stop_at=100, config=_open_ended(unlike_text, min_lr_ratio=0.0), runs_dir=runs_dir, run_name="o")
    events: list = []
    trainer = Trainer(resume=runs_dir / "o" / LATEST, runs_dir=runs_dir, overrides={"max_steps": 20},
                      on_event=events.append)
    assert trainer.run() == "finished" and trainer.trained.step == 120
    rates = [e.lr for e in events if isinstance(e, Progress)]
    now = trainer.built.schedule.rate(trainer.config, Position(step=100, epoch=0.0))
    assert rates[0] < now and rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(0.0, abs=1e-9)
    assert any("(the rate the run is at)" in e.message for e in events if isinstance(e, Notice))


def test_a_limit_can_be_cleared_and_the_run_trains_until_stopped(repetitive_text, runs_dir):
    path = _finished(repetitive_text, runs_dir)  # its cosine ended at 10% of the peak
    rates: list[float] = []
    trainer: Trainer

    def on_event(e):
        if isinstance(e, Progress):
            rates.append(e.lr)
            if e.step >= 60:
                trainer.request(Stop(save=True))

    trainer = Trainer(resume=path, runs_dir=runs_dir, overrides={"max_steps": 0}, on_event=on_event)
    assert trainer.run() == "stopped" and trainer.trained.step >= 60 and trainer.config.max_steps is None
    # planned as long again: halfway down a cosine from the peak to 10%, then the plateau rule
    assert rates[0] == pytest.approx(0.01 * 0.55, rel=1e-6) and min(rates) > 0


def test_a_finished_run_resumed_without_a_new_limit_says_what_to_give(repetitive_text, runs_dir):
    path = _finished(repetitive_text, runs_dir)
    with pytest.raises(ConfigError, match="already reached max-steps 30: give --max-steps"):
        Trainer(resume=path, runs_dir=runs_dir).run()


def test_keep_schedule_holds_the_rate_where_the_schedule_left_it(repetitive_text, runs_dir):
    path = _finished(repetitive_text, runs_dir, min_lr_ratio=0.0)
    events: list = []
    trainer = Trainer(resume=path, runs_dir=runs_dir, overrides={"max_steps": 5, "keep_schedule": True},
                      on_event=events.append)
    trainer.run()
    assert [e.lr for e in events if isinstance(e, Progress)] == [0.0] * 5
    assert any("stays at 0.00e+00" in e.message for e in events if isinstance(e, Notice))


def test_a_broken_schedule_in_a_checkpoint_is_refused_in_one_line(repetitive_text, runs_dir):
    from charrnn_tui.engine.errors import CheckpointError

    path = _finished(repetitive_text, runs_dir)
    ck = load_checkpoint(path)
    ck["schedule"]["scale"] = 7.0
    save_checkpoint(ck, path)
    with pytest.raises(CheckpointError, match="schedule state is out of range"):
        Trainer(resume=path, runs_dir=runs_dir, overrides={"max_steps": 5}).run()


def test_the_eta_counts_the_time_evaluations_take_besides_training():
    assert schedule.wall_eta(10.0, trained=20.0, overhead=0.0, final_evaluation=0.0) == 10.0
    # evaluations took as long again as training so far, and the last one 4 s: twice the training left, and one more
    assert schedule.wall_eta(10.0, trained=20.0, overhead=20.0, final_evaluation=4.0) == 24.0


def test_a_checkpoint_from_before_schedules_were_saved_resumes_as_it_ran(repetitive_text, runs_dir):
    """Open-ended: from the rate its 10-epoch cosine had reached; validation: the whole split, as it read it."""
    config = tiny_config(repetitive_text, eval_interval=10, report_interval=1e-9)
    step_losses(stop_at=200, config=config, runs_dir=runs_dir, run_name="old")  # five epochs
    path = runs_dir / "old" / LATEST
    ck = load_checkpoint(path)
    del ck["schedule"]
    save_checkpoint(ck, path)
    trainer: Trainer
    seen: list[tuple[float, float]] = []

    def on_event(e):
        if isinstance(e, Progress):
            seen.append((e.epoch, e.lr))
            trainer.request(Stop(save=False))

    trainer = Trainer(resume=path, runs_dir=runs_dir, on_event=on_event)
    trainer.run()
    epoch, rate = seen[0]
    assert 4 < epoch < 6 and rate == pytest.approx(schedule.cosine(0.01, 0.001, epoch / 10), rel=0.01)
    assert trainer.built.schedule.cosine_seconds is None  # its cosine had no time bound
    assert trainer.config.eval_tokens == 0


def test_limits_are_told_as_amounts_more_and_totals():
    config = _preset("small", max_steps=1_500, max_epochs=3.11194, max_time=620.4)
    start = Position(step=500, epoch=1.0, seconds=20.4)
    assert schedule.describe_limits(config, start) == ("1,000 steps more, to max-steps 1,500, 2.11 epochs more, to "
                                                       "max-epochs 3.11, 600s more, to max-time 620s")
    assert schedule.describe_limits(_preset("small")) == "training until stopped"
    assert schedule.limit_reached(config, 0, 3.2, 0.0) == "reached max-epochs 3.11"
    assert schedule.limit_reached(_preset("small", max_time=8.02302), 0, 0.0, 9.0) == "reached max-time 8.0s"


@pytest.mark.parametrize("limit", ["max_steps", "max_epochs", "max_time"])
def test_a_restart_above_the_planned_rate_goes_on_from_the_rate_it_is_at_to_the_floor_at_the_limit(limit):
    """The virtual start of a cosine through the current rate, with a floor that is not 0 (a floor of
    0 hides a wrong scale in the arc's inverse), for each kind of limit on its own."""
    here = Position(step=100, epoch=2.0, seconds=50.0)
    end = {"max_steps": Position(step=300, epoch=2.0, seconds=50.0), "max_epochs": Position(100, 6.0, 50.0),
           "max_time": Position(100, 2.0, 150.0)}[limit]
    config = cfg.TrainConfig(lr=0.01, min_lr_ratio=0.2, warmup_steps=0, **{limit: end.of(limit)})
    plan = Schedule()
    message = plan.restart(config, here, current=0.009, keep=False)
    assert "(the rate the run is at)" in message
    assert plan.rate(config, here) == pytest.approx(0.009, rel=1e-9)  # no jump where it resumes
    assert plan.rate(config, end) == pytest.approx(0.002, rel=1e-9)  # the floor at the new limit
    halfway = Position(**{f: (getattr(here, f) + getattr(end, f)) / 2 for f in ("step", "epoch", "seconds")})
    assert 0.002 < plan.rate(config, halfway) < 0.009
    others = {"step": here.step, "epoch": here.epoch, "seconds": here.seconds}
    field = {"max_steps": "step", "max_epochs": "epoch", "max_time": "seconds"}[limit]
    assert all(getattr(plan.start, f) == v for f, v in others.items() if f != field)  # only its own axis moved
    assert getattr(plan.start, field) < getattr(here, field)


def test_with_two_stop_conditions_the_rate_follows_the_one_that_comes_first():
    config = cfg.TrainConfig(lr=0.01, min_lr_ratio=0.0, warmup_steps=0, max_steps=100, max_time=1000.0)
    halfway_by_steps = Position(step=50, epoch=0.1, seconds=10.0)
    assert schedule.limit_fraction(config, halfway_by_steps) == pytest.approx(0.5)  # not 0.01: time is far off
    assert Schedule().rate(config, halfway_by_steps) == pytest.approx(0.005)
    assert schedule.limit_fraction(config, Position(step=10, epoch=0.1, seconds=900.0)) == pytest.approx(0.9)
    assert schedule.limit_fraction(config, Position(step=200, epoch=1.0, seconds=10.0)) == 1.0  # past: the end
    assert schedule.limit_fraction(cfg.TrainConfig(), halfway_by_steps) is None  # open-ended
