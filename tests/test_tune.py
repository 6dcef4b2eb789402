"""`tune`: the search space from the corpus and the budget, successive halving's decisions on
synthetic losses, and the command end to end on a tiny corpus (a sweep, a kill and a resume, bad input)."""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import time

import pytest
from helpers import cli_command, run_cli, wait_until

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.tune.halving import Halving, Plan, plan, ranked
from charrnn_tui.engine.tune.space import TOKENS_PER_WEIGHT, default_settings, search_space

SHAKESPEARE = cfg.REFERENCE_CHARS


# ---- the space ------------------------------------------------------------------------------------
def test_the_width_follows_the_corpus_by_its_fourth_root():
    small = search_space("small", 179_000, 160_000, "char", 50_000_000)
    reference = search_space("small", SHAKESPEARE, 1_000_000, "char", 50_000_000)
    assert reference.hidden == (192, 768)  # the preset's 384, halved and doubled
    assert small.hidden == (128, 480)  # 384 x (179k / 1.1M)^0.25 = 243: 128 to 480
    assert small.layers == (1,) and reference.layers == (1, 2)  # a second layer only for a text that suits the model
    assert search_space("large", 30_000_000, 27_000_000, "char", 10**9).layers == (1, 2, 3)


def test_no_trial_is_wider_than_the_budget_can_train():
    space = search_space("small", SHAKESPEARE, 1_000_000, "char", 2_000_000)
    limit = 2_000_000 // TOKENS_PER_WEIGHT
    model = cfg.ModelConfig(kind="lstm", layers=1, embedding=space.embedding)
    assert cfg.recurrent_parameters(model, space.widest(1)) <= limit < cfg.recurrent_parameters(
        model, space.widest(1) + 32)
    rng = random.Random(0)
    assert all(s.hidden <= space.widest(s.layers) for s in (space.sample(rng) for _ in range(200)))


def test_dropout_and_the_window_follow_the_epochs_and_updates_the_budget_buys():
    once = search_space("small", SHAKESPEARE, 1_000_000, "char", 900_000)  # under an epoch: little to over-fit
    often = search_space("small", SHAKESPEARE, 1_000_000, "char", 50_000_000)
    assert once.dropout == (0.0, 0.1) and often.dropout == (0.1, 0.5)
    assert once.seq_len == (64,)  # 900k tokens are 440 steps of 16 x 128: too few updates to halve them
    assert often.seq_len == (64, 128)
    assert search_space("small", SHAKESPEARE, 200_000, "word", 50_000_000).seq_len == (32, 64)


def test_the_sampler_is_seeded_and_stays_in_its_ranges():
    space = search_space("small", SHAKESPEARE, 1_000_000, "char", 50_000_000)
    draws = [space.sample(random.Random(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    for s in (space.sample(random.Random(seed)) for seed in range(100)):
        assert space.hidden[0] <= s.hidden <= space.hidden[1] and s.hidden % 32 == 0
        assert space.lr[0] * 0.99 <= s.lr <= space.lr[1] * 1.01 and space.dropout[0] <= s.dropout <= space.dropout[1]
        assert s.layers in space.layers and s.seq_len in space.seq_len
        assert s.batch_size == cfg.fitted_batch_size(16, s.seq_len, 1_000_000)
    assert type(space).from_dict(json.loads(json.dumps(space.to_dict()))) == space


def test_the_first_trial_is_the_default_run():
    space = search_space("small", 179_000, 160_000, "char", 50_000_000)
    default = default_settings(space, 179_000)
    assert (default.layers, default.hidden, default.dropout, default.lr) == (1, 256, 0.25, 8e-3)  # fit_to_corpus's


# ---- successive halving ---------------------------------------------------------------------------
def run_to_the_end(halving: Halving, losses: dict[int, list[float | None]]) -> list[tuple[int, int]]:
    """Play a sweep: each job reports the synthetic loss of its trial at its rung; the jobs in order."""
    jobs = []
    while (job := halving.next_job()) is not None:
        trial, rung = job
        jobs.append(job)
        halving.report(trial, rung, losses[trial][rung])
    return jobs


def test_a_plan_spends_the_budget_on_as_many_trials_as_fit_then_on_longer_rungs():
    p = plan(4_000_000, 100_000)  # one slot: the makespan is the tokens
    # 17 trials fit at 100k (9 + 3 x 2 + 1 x 6 = 33 first rungs); the first rung then grows to fill the budget
    assert p == Plan((4_000_000 // 33, 3 * (4_000_000 // 33), 9 * (4_000_000 // 33)), 17)
    assert p.tokens() <= 4_000_000
    assert plan(4_000_000, 100_000, slots=2).trials > p.trials  # two slots, more trials
    assert plan(1_100_000, 250_000) == Plan((275_000,), 2)  # two trials on one rung: a plain comparison,
    # the first rung no more than a quarter of the budget
    assert plan(999_999, 250_000) is None  # a first-rung job over a quarter of the budget: too short
    assert plan(4_000_000, 100_000, job_tokens=50_000).trials < p.trials  # engines' start-up counted
    big = plan(10**10, 100_000)
    assert big.trials == 81 and len(big.rungs) == 5 and big.tokens() <= 10**10 and big.rungs[0] > 2 * 100_000


def test_the_best_third_of_each_rung_goes_on_and_the_rest_are_pruned():
    curves = {t: [2.0 - 0.01 * t, 1.8 - 0.01 * t, 1.6 - 0.01 * t] for t in range(9)}  # higher ids are better
    h = Halving(Plan((10, 30, 90), 9))
    jobs = run_to_the_end(h, curves)
    assert sorted(t for t, r in jobs if r == 1) == [6, 7, 8] and [t for t, r in jobs if r == 2] == [8]
    assert [h.state(t) for t in range(9)] == ["pruned"] * 6 + ["pruned", "pruned", "finished"]
    assert h.winner() == (8, 2, pytest.approx(1.52))


def test_decisions_are_made_at_equal_tokens_not_on_a_trial_that_is_ahead():
    # trial 0 is best at rung 0 but worst at rung 1: rung 1 compares it only with others at rung 1
    curves = {0: [1.0, 1.9, 1.0], 1: [1.5, 1.4, 1.3], 2: [1.6, 9, 9], 3: [1.7, 9, 9], 4: [1.8, 9, 9],
              5: [1.9, 9, 9], 6: [1.2, 1.5, 9], 7: [2.0, 9, 9], 8: [2.1, 9, 9]}
    h = Halving(Plan((10, 30, 90), 9))
    jobs = run_to_the_end(h, curves)
    assert [t for t, r in jobs if r == 2] == [1] and h.winner() == (1, 2, 1.3)


def test_ties_go_to_the_trial_started_first():
    h = Halving(Plan((10, 30), 3))
    run_to_the_end(h, {0: [1.5, 1.0], 1: [1.5, 1.0], 2: [1.5, 1.0]})
    assert h.promoted[0] == {0} and h.winner() == (0, 1, 1.0)
    assert ranked({3: 1.0, 1: 1.0, 2: 0.5}) == [2, 1, 3]


def test_a_diverged_or_failed_trial_is_never_promoted():
    h = Halving(Plan((10, 30), 3))
    run_to_the_end(h, {0: [math.nan, 0.1], 1: [None, 0.1], 2: [math.inf, 0.1]})
    assert h.promoted[0] == set() and h.winner() is None
    assert [h.state(t) for t in range(3)] == ["diverged", "failed", "diverged"]
    h = Halving(Plan((10, 30), 3))
    jobs = run_to_the_end(h, {0: [math.nan, 9], 1: [2.0, 1.0], 2: [None, 9]})
    assert (1, 1) in jobs and h.winner() == (1, 1, 1.0)


def test_a_trial_goes_on_as_soon_as_it_is_sure_to_and_is_pruned_as_soon_as_it_cannot():
    h = Halving(Plan((10, 30, 90), 9))
    for t, loss in enumerate((1.0, 5.0, 2.0, 3.0, 4.0, 6.0)):
        assert h.next_job() == (t, 0)
        h.report(t, 0, loss)
    assert h.state(4) == "pruned" and h.state(5) == "pruned"  # three better already: out, whatever comes
    assert h.state(3) == "waiting" and h.state(0) == "waiting"  # three to come could push even trial 0 out
    assert h.next_job() == (6, 0)
    h.report(6, 0, 7.0)
    assert h.next_job() == (0, 1)  # rank 0, two to come: sure of a place in the three, before new trials
    assert h.state(0) == "running" and h.next_job() == (7, 0)


def test_the_decisions_are_those_of_synchronous_halving_whatever_the_order_of_reports():
    rng = random.Random(3)
    for _ in range(30):
        losses = {t: [rng.uniform(1, 3), rng.uniform(1, 3), rng.uniform(1, 3)] for t in range(9)}
        order = list(range(9))
        rng.shuffle(order)
        h = Halving(Plan((10, 30, 90), 9))
        pending: list[tuple[int, int]] = []
        started = []
        while (job := h.next_job()) is not None or pending:
            if job is not None:
                pending.append(job)
                started.append(job[0])
                if len(pending) < 2:  # two slots: a report comes when both are busy
                    continue
            trial, rung = pending.pop(rng.randrange(len(pending)))
            h.report(trial, rung, losses[trial][rung])
        first = sorted(range(9), key=lambda t: (losses[t][0], t))[:3]
        second = sorted(first, key=lambda t: (losses[t][1], t))[:1]
        assert h.promoted[0] == set(first) and h.promoted[1] == set(second)
        assert h.winner() == (second[0], 2, losses[second[0]][2])


def test_asha_on_partial_rungs_would_promote_early_arrivals():
    """Why halving.py waits until a promotion is sure: the rule of ASHA proper (the best third of
    those reported so far) spends the rung's three promotions on trials 2, 3 and 4 when the best
    arrive last, where the sure rule picks 6, 7 and 8."""
    losses = {t: 2.0 - 0.01 * t for t in range(9)}
    reported: dict[int, float | None] = {}
    asha = []
    for t in range(9):
        reported[t] = losses[t]
        asha += [b for b in ranked(reported)[: len(reported) // 3] if b not in asha][: 3 - len(asha)]
    assert asha == [2, 3, 4]
    h = Halving(Plan((10, 30), 9))
    run_to_the_end(h, {t: [losses[t], 1.0] for t in range(9)})
    assert h.promoted[0] == {6, 7, 8}


# ---- trials are runs ------------------------------------------------------------------------------
def test_runs_lists_a_sweeps_trials_and_finds_them_by_sweep_and_trial(tmp_path, runs_dir):
    from charrnn_tui.engine.runs import list_runs, named_run, resolve_run, write_status

    trial = runs_dir / "tune-x" / "trial-01"
    trial.mkdir(parents=True, mode=0o700)
    (runs_dir / "tune-x").chmod(0o700)
    runs_dir.chmod(0o700)
    write_status(trial, {"state": "finished", "step": 5})
    (runs_dir / "tune-x" / "sweep.json").write_text("{}")
    plain = runs_dir / "plain" / "inner"  # a folder of folders with no sweep.json is not looked into
    plain.mkdir(parents=True, mode=0o700)
    write_status(plain, {"state": "finished", "step": 1})
    assert [e.name for e in list_runs(runs_dir)] == ["tune-x/trial-01"]
    assert named_run("tune-x/trial-01", runs_dir) == trial
    assert resolve_run("tune-x/trial-01", runs_dir, live=False) == trial
    assert named_run("plain/inner", runs_dir) == runs_dir / "plain-inner"  # not a sweep: as before
    (runs_dir / "tune-x").chmod(0o777)  # a sweep others could plant runs in is not read
    assert list_runs(runs_dir) == []
    (runs_dir / "tune-x").chmod(0o700)


def test_a_jobs_outcome_is_read_from_the_trials_own_files(tmp_path):
    from charrnn_tui.engine.runs import write_status
    from charrnn_tui.engine.tune.trials import outcome

    def trial(status: dict, *val: tuple[int, float]):
        folder = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        folder.mkdir(mode=0o700)
        write_status(folder, status)
        lines = [json.dumps({"step": s, "train_loss": 9.0}) + "\n" + json.dumps({"step": s, "val_loss": v})
                 for s, v in val]
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        return folder

    done = outcome(trial({"state": "finished", "step": 30}, (10, 2.0), (30, 1.5)), 30)
    assert (done.loss, done.step) == (1.5, 30)
    assert outcome(trial({"state": "finished", "step": 31}, (20, 2.0), (31, 1.4)), 30).loss == 1.4  # first past it
    over_fit = outcome(trial({"state": "finished", "step": 60}, (20, 2.0), (40, 1.3), (60, 1.8), (80, 1.1)), 60)
    assert (over_fit.loss, over_fit.step) == (1.3, 60)  # the best by its step (its best.pt's), not the last
    late_nan = outcome(trial({"state": "finished", "step": 60}, (20, 2.0), (60, math.nan)), 60)
    assert math.isnan(late_nan.loss)  # diverged at its rung: it ranks last whatever it reached before
    blew = outcome(trial({"state": "error", "reason": "loss became nan at step 7; stopped without saving."}), 30)
    assert blew.loss == math.inf and blew.why == "diverged"
    failed = outcome(trial({"state": "error", "reason": "out of memory"}, (10, 2.0)), 30)
    assert failed.loss is None and failed.why == "out of memory" and not failed.stopped
    stopped = outcome(trial({"state": "stopped", "step": 12}, (10, 2.0)), 30)
    assert stopped.loss is None and stopped.stopped  # resumed later, not a failure
    killed = outcome(trial({"state": "training", "step": 12}), 30)  # its engine died without a word
    assert killed.stopped


def test_sweep_json_keeps_what_a_resume_needs(tmp_path):
    from charrnn_tui.engine.tune.sweep import SweepState, Trial, load, next_settings, save

    space = search_space("tiny", 2_700, 2_400, "char", 100_000)
    state = SweepState(corpus="abc", data_argv=["/x/abc.txt"], preset="tiny", budget_s=60.0,
                       plan=Plan((100, 300), 3), space=space, seed=5, slots=2, machine_argv=["--threads", "1"],
                       default=default_settings(space, 2_700), speed=12_345.5, job_seconds=4.0)
    for _ in range(3):
        state.trials.append(Trial(len(state.trials), f"trial-{len(state.trials) + 1:02d}", next_settings(state)))
        state.decisions.next_job()
    state.decisions.report(0, 0, 1.5)
    state.decisions.report(1, 0, math.nan)
    folder = tmp_path / "sweep"
    folder.mkdir(mode=0o700)
    save(folder, state)
    again = load(folder)
    assert again.trials == state.trials and again.trials[0].settings == state.default
    assert again.decisions.reports[0][0] == 1.5 and again.decisions.state(1) == "diverged"
    assert again.decisions.running == {2: 0} and again.decisions.started == 3
    assert again.sampler_state == state.sampler_state
    assert (again.speed, again.job_seconds) == (12_345.5, 4.0)  # what a re-plan scales by the jobs measured
    straight = next_settings(state)  # a resumed sweep draws the trial a straight one would
    assert next_settings(again) == straight


# ---- the command ----------------------------------------------------------------------------------
TINY_TUNE = ["--preset", "tiny", "--first-rung", "10", "--parallel", "2", "--headless"]


def sweep_json(folder) -> dict:
    return json.loads((folder / "sweep.json").read_text())


def test_bad_input_is_one_line_and_exit_2(tmp_path, repetitive_text, runs_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    runs_dir.mkdir(mode=0o700)
    for argv, words in (
        ([str(empty), "--budget", "1m"], "no text to train on"),
        ([str(repetitive_text), "--budget", "1s"], "too short for two trials"),
        ([str(repetitive_text), "--budget", "1m", "--bogus"], "--bogus"),
        ([str(repetitive_text)], "needs --budget"),
        (["--resume", "nothing-here"], "no such sweep"),
    ):
        done = run_cli("tune", *argv, *TINY_TUNE, "--runs-dir", str(runs_dir))
        assert done.returncode == 2, (argv, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr, done.stderr
    assert list(runs_dir.iterdir()) == []  # nothing made for bad input


def test_a_killed_tune_resumes_and_names_a_winner_among_its_trials(repetitive_text, runs_dir):
    """One sweep, killed (kill -9) once its first trial has started, then resumed: the trials are
    runs (`runs` lists them, `sample SWEEP/TRIAL` reads one), the winner comes with its command."""
    from charrnn_tui.engine.runs import is_live

    command = [*cli_command(), "tune", str(repetitive_text), "--budget", "60s", *TINY_TUNE,
               "--runs-dir", str(runs_dir), "--name", "sweep"]
    tune = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (runs_dir / "sweep" / "trial-01").is_dir(), "a trial started", timeout=60)
        time.sleep(1.0)
    finally:
        tune.send_signal(signal.SIGKILL)
        first, _ = tune.communicate()
    assert "trial-01 started: lstm" in first
    before = sweep_json(runs_dir / "sweep")
    assert before["winner"] is None and before["started"] >= 1
    done = run_cli("tune", "--resume", "sweep", "--budget", "20s", "--runs-dir", str(runs_dir), timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any("trial-01 rung 1" in line and "val" in line for line in lines)
    assert next(line for line in lines if line.startswith("TRIAL")).split()[:3] == ["TRIAL", "MODEL", "DROPOUT"]
    after = sweep_json(runs_dir / "sweep")
    # the same sweep, gone on: trial-01 continued in its own folder, not started afresh beside it
    assert after["trials"][0]["settings"] == before["trials"][0]["settings"]
    assert after["trials"][0]["name"] == "trial-01"
    assert after["spent_s"] > before["spent_s"] and after["reports"][0]
    winner = after["winner"]
    assert winner is not None and (runs_dir / "sweep" / winner["trial"] / "best.pt").is_file()
    assert winner["command"].startswith(f"charrnn-tui train {repetitive_text} --preset tiny --model lstm")
    assert f"  reproduce:  {winner['command']}" in lines
    assert not any(is_live(p) for p in (runs_dir / "sweep").iterdir() if p.is_dir())
    listed = {r["name"]: r for r in json.loads(run_cli("runs", "--json", "--runs-dir", str(runs_dir)).stdout)}
    assert listed["sweep/trial-01"]["state"] in ("finished", "stopped")
    sample = run_cli("sample", "sweep/trial-01", "-n", "20", "--runs-dir", str(runs_dir))
    assert sample.returncode == 0, sample.stderr  # a trial is reached by its SWEEP/TRIAL name


def test_ctrl_c_stops_the_trials_and_says_how_to_resume(repetitive_text, runs_dir):
    from charrnn_tui.engine.runs import is_live

    command = [*cli_command(), "tune", str(repetitive_text), "--budget", "5m", *TINY_TUNE,
               "--first-rung", "2000", "--runs-dir", str(runs_dir), "--name", "sweep"]
    tune = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (runs_dir / "sweep" / "trial-01" / "engine.sock").exists(), "a trial training",
                   timeout=60)
        tune.send_signal(signal.SIGINT)
        out, err = tune.communicate(timeout=90)
    finally:
        if tune.poll() is None:  # the test failed: no tune outlives it (its trials: conftest's fixture)
            tune.kill()
            tune.communicate()
    assert tune.returncode == 130, err
    assert "tune --resume sweep" in out
    trials = [p for p in (runs_dir / "sweep").iterdir() if p.is_dir()]
    assert trials and not any(is_live(p) for p in trials)  # every trial it started has ended
    assert sweep_json(runs_dir / "sweep")["running"]  # the stopped job waits for --resume


def test_continue_trains_the_winner_on_as_an_ordinary_run(repetitive_text, runs_dir):
    """`tune --continue`: once the sweep has its winner, the tune process becomes the winner's
    `train --resume` (exec: the same pid) with no stop condition; SIGTERM saves and stops it. The
    sweep is one whose budget is spent (tests/sweep_fixtures.py, trial-02 the best at the top rung),
    its winner a real run of a few steps: a real sweep's plan on this loaded machine is not sure
    to finish a rung in a short budget."""
    from sweep_fixtures import make_sweep

    from charrnn_tui.engine.runs import is_live, read_status

    folder = runs_dir / "sweep"
    state = make_sweep(folder, curves=False)
    trained = run_cli("train", str(repetitive_text), "--preset", "tiny", *state.trials[1].settings.flags(),
                      "--max-steps", "3", "--runs-dir", str(folder), "--name", "trial-02", "--headless")
    assert trained.returncode == 0, trained.stderr
    trial = folder / "trial-02"
    command = [*cli_command(), "tune", "--resume", "sweep", "--budget", "0s", "--continue", "--headless",
               "--runs-dir", str(runs_dir)]
    tune = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        # past its 3 steps, and past its own first evaluations: no stop condition holds it
        wait_until(lambda: is_live(trial) and (read_status(trial).get("step") or 0) > 20,
                   "the winner training past its sweep's steps", timeout=90)
        assert read_status(trial).get("pid") == tune.pid  # exec'd: the tune process is the winner's run
        assert sweep_json(folder)["winner"]["continued"] is True  # what the app follows
        tune.send_signal(signal.SIGTERM)
        out, _ = tune.communicate(timeout=90)
    finally:
        if tune.poll() is None:
            tune.kill()
            tune.communicate()
    assert "winner: trial-02" in out and "train --resume sweep/trial-02 " in out and "--max-time 0" in out, out
    status = read_status(trial)
    assert status.get("state") == "stopped" and status["step"] > 20, status
    assert not is_live(trial)


def test_a_trials_validation_losses_skip_lines_that_are_not_records(tmp_path):
    """metrics.jsonl is read back for the sweep's decisions: a line that is JSON but no record, or a
    boolean step, is skipped; a NaN loss is kept (it ranks the trial as diverged)."""
    from charrnn_tui.engine.tune.trials import validation_losses

    (tmp_path / "metrics.jsonl").write_text(
        '[1, 2]\n3\n"text"\n{"step": true, "val_loss": 1.0}\n[[[[\n'
        '{"step": 10, "val_loss": 2.5}\n{"step": 20, "val_loss": NaN}\n{"step": 30, "loss": 1.9}\n')
    losses = validation_losses(tmp_path)
    assert list(losses) == [10, 20] and losses[10] == 2.5 and math.isnan(losses[20])


def _finale_after_trial_02(text, runs_dir, state):
    """The fixture sweep's winner, trial-02, given a real folder (3 steps), then `tune --resume` with
    36 s more: the plan is done, so the finale is all it trains."""
    folder = runs_dir / "sweep"
    trained = run_cli("train", str(text), "--preset", "tiny", *state.trials[1].settings.flags(),
                      "--max-steps", "3", "--runs-dir", str(folder), "--name", "trial-02", "--headless")
    assert trained.returncode == 0, trained.stderr
    done = run_cli("tune", "--resume", "sweep", "--budget", "36s", "--headless", "--runs-dir", str(runs_dir),
                   timeout=180)
    assert done.returncode == 0, done.stderr
    return done


def test_a_sweep_whose_plan_ends_early_trains_its_winner_on_for_the_budget_left(repetitive_text, runs_dir):
    """The finale: the plan done with budget left, the winner goes on (`train --resume TRIAL
    --max-time LEFT`, every core) and the sweep's result is its best validation loss after it; the
    reproduce command counts its steps. The sweep of tests/sweep_fixtures.py, plan done, given 36 s
    more: 21 s of training (15 s kept for start-up, the last evaluation and the save)."""
    from sweep_fixtures import make_sweep

    from charrnn_tui.engine.durations import duration
    from charrnn_tui.engine.runs import is_live
    from charrnn_tui.engine.tune.sweep import FINALE_MARGIN

    folder = runs_dir / "sweep"
    state = make_sweep(folder, curves=False)
    done = _finale_after_trial_02(repetitive_text, runs_dir, state)
    finale = sweep_json(folder)["finale"]
    assert finale["trial"] == 1 and finale["done"] is True
    assert 30 - FINALE_MARGIN <= finale["seconds"] <= 36 - FINALE_MARGIN
    assert finale["steps"] > 3 and math.isfinite(finale["loss"])  # trained on, and read back
    out, left = done.stdout, duration(finale["seconds"])
    assert f"trial-02 leads: it trains on for the {left} left, on " in out, out
    assert f"then trained on for the budget left ({left})" in out and f"best val {finale['loss']:.4f}" in out, out
    winner = sweep_json(folder)["winner"]
    assert winner["val_loss"] <= finale["loss"] and winner["command"].endswith(f"--max-steps {finale['steps']}")
    assert not is_live(folder / "trial-02")
    again = run_cli("tune", "--resume", "sweep", "--budget", "36s", "--headless", "--runs-dir", str(runs_dir))
    assert again.returncode == 0 and "trains on" not in again.stdout  # trained on once, not again


def test_a_finale_with_time_for_many_times_the_winners_tokens_trains_its_settings_afresh(repetitive_text,
                                                                                         runs_dir):
    """Where the time left trains AFRESH times the winner's tokens or more (a big text: its rungs train
    little of it), the finale trains the winner's settings from step 0 in TRIAL-final (one cosine
    over the time, not the rung's restarted): its best.pt is the sweep's result where it beats the
    trial's own, the reproduce command counts its steps, and the trial's own steps stay its own. The
    sweep of tests/sweep_fixtures.py told the probe ran fast enough for it."""
    from sweep_fixtures import make_sweep

    from charrnn_tui.engine.runs import is_live

    folder = runs_dir / "sweep"
    state = make_sweep(folder, curves=False)
    data = sweep_json(folder)
    data["reports"][0]["4"], data["running"] = None, {}  # trial-05 failed too, and trial-01 (sent on with
    data["reports"][1]["0"], data["promoted"][0] = 2.4, [0, 1]  # trial-02) lost rung 2: the plan is done
    (folder / "sweep.json").write_text(json.dumps({**data, "speed": 1e6, "data_argv": [str(repetitive_text)]}))
    done = _finale_after_trial_02(repetitive_text, runs_dir, state)
    after = sweep_json(folder)
    finale, winner = after["finale"], after["winner"]
    assert finale is not None, done.stdout
    assert finale["trial"] == 1 and finale["run"] == "trial-02-final" and finale["done"] is True
    assert "trial-02 leads: its settings train afresh for the " in done.stdout, done.stdout
    assert "in trial-02-final" in done.stdout and f"best val {finale['loss']:.4f}" in done.stdout, done.stdout
    fresh = json.loads((folder / "trial-02-final" / "status.json").read_text())
    assert fresh["step"] == finale["steps"] and math.isfinite(finale["loss"])
    assert after["trials"][1]["steps"] == state.trials[1].steps  # the trial's own steps
    assert finale["loss"] < 1.87, "the repetitive text is learnt in 20 s"  # the fixture's rung-2 loss
    assert winner["run"] == "trial-02-final" and winner["val_loss"] == finale["loss"]
    assert winner["checkpoint"] == str(folder / "trial-02-final" / "best.pt")
    assert winner["command"].endswith(f"--max-steps {finale['steps']}")
    assert not is_live(folder / "trial-02-final")


def test_a_finale_evaluates_about_eight_times_never_more_often_than_its_preset():
    """tiny-shakespeare's finale evaluated every 500 steps: 17 times, 31 s of its 7 minutes."""
    from charrnn_tui.engine.tune.space import Settings
    from charrnn_tui.engine.tune.sweep import FINALE_EVALUATIONS, finale_eval_interval

    settings = Settings("lstm", 1, 384, 64, 0.0, 8e-3, 64, 16)
    steps = 20_000 * 900 / settings.step_tokens
    assert finale_eval_interval(20_000.0, "small", settings, 900.0) == round(steps / FINALE_EVALUATIONS) > 500
    assert finale_eval_interval(20_000.0, "small", settings, 10.0) == 500  # a short finale: the preset's
    assert finale_eval_interval(20_000.0, "tiny", settings, 10.0) == 1000
    assert finale_eval_interval(0.0, "small", settings, 900.0) == 500  # no speed known


def test_the_finale_goes_by_the_speed_the_jobs_showed_once_there_are_some(tmp_path, monkeypatch):
    """A busy machine (CI beside a sweep) trains slower than the probe said: the finale's choice
    (afresh or resumed) and its evaluations follow what the jobs done took, start-up included."""
    from sweep_fixtures import make_sweep

    from charrnn_tui.engine.tune.sweep import Sweep
    from charrnn_tui.engine.tune.trials import TrialProcess

    state = make_sweep(tmp_path / "sweep", curves=False)
    state.speed = 50_000.0
    sweep = Sweep(tmp_path / "sweep", state, say=lambda line: None)
    assert sweep.slot_speed() == 50_000.0  # no job done yet: the probe's
    sweep.measured = [20.0, 200_000.0, 2.0]
    assert sweep.slot_speed() == 10_000.0
    started: list[list[str]] = []

    def start(argv, env=None):
        started.append(argv)
        return TrialProcess(tmp_path / "sweep" / "x")

    monkeypatch.setattr("charrnn_tui.engine.tune.sweep.start", start)
    assert sweep._start_finale() and "--name" in started[-1]  # 10k tokens/s for 246 s: over twice rung 2's 90k
    state.finale, sweep.measured = None, [200.0, 20_000.0, 2.0]  # 100 tokens/s: the trial is resumed
    assert sweep._start_finale() and started[-1][0] == "--resume"


def test_a_finale_in_sweep_json_is_checked_as_it_is_read(tmp_path):
    from sweep_fixtures import make_sweep

    from charrnn_tui.engine.errors import ConfigError
    from charrnn_tui.engine.tune.sweep import finale_argv, load

    folder = tmp_path / "sweep"
    make_sweep(folder, curves=False)
    data = sweep_json(folder)
    for bad in ({"trial": 99}, {"trial": "1"}, [1], {"trial": True}):
        (folder / "sweep.json").write_text(json.dumps({**data, "finale": bad}))
        with pytest.raises(ConfigError, match="cannot be read"):
            load(folder)
    for bad in ("../x", "a/b", "", ".", 7):
        (folder / "sweep.json").write_text(json.dumps({**data, "finale": {"trial": 1, "run": bad}}))
        with pytest.raises(ConfigError, match="cannot be read"):
            load(folder)
    (folder / "sweep.json").write_text(json.dumps({**data, "finale": {"trial": 1, "seconds": 20, "loss": "x"}}))
    assert load(folder).finale == {"trial": 1, "seconds": 20.0, "run": "trial-02", "done": False, "loss": None,
                                   "steps": None}  # a sweep.json from before fresh finales: the trial's own folder
    argv = finale_argv(folder / "trial-02", 21.4, ["--threads", "1", "--device", "cpu"], 2)
    assert argv[argv.index("--max-time") + 1] == "21" and argv[argv.index("--threads") + 1] == "2"
    assert argv[-2:] == ["--device", "cpu"]


def test_a_text_big_for_the_budget_is_searched_in_a_share_of_it(repetitive_text, runs_dir, monkeypatch):
    """Where the plan's top rung would train few epochs of the text (tiny-shakespeare in 10 minutes:
    2.4), the search is planned for SEARCH_SHARE of the budget and the winner trains on for the rest.
    Here the tiny text is made "big" by asking for a million epochs at the top."""
    import io

    from charrnn_tui.engine.cli import tune_command
    from charrnn_tui.engine.cli.main import parse
    from charrnn_tui.engine.tune.halving import Plan

    runs_dir.mkdir(mode=0o700)
    argv = ["tune", str(repetitive_text), "--budget", "3m", *TINY_TUNE]
    _, usual = tune_command.new_sweep(parse([*argv, "--name", "usual"]), runs_dir, io.StringIO())
    monkeypatch.setattr(tune_command, "TOP_EPOCHS", 10**6)
    out = io.StringIO()
    _, shared = tune_command.new_sweep(parse([*argv, "--name", "shared"]), runs_dir, out)
    assert "the search takes 40% of the budget and its winner trains on for the rest" in out.getvalue()
    assert shared.plan.makespan(2) < 0.5 * Plan(usual.plan.rungs, usual.plan.trials).makespan(2)
