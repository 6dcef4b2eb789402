"""A sweep: its folder under the runs folder (RUNS/tune-NAME/, each trial a run in it), its
sweep.json (the plan, the space, every trial's settings and losses, the jobs in flight, the time
spent; replaced atomically at every event, so a kill loses nothing of it), and the loop that runs
trials, a few at once, as successive halving (halving.py) decides, until the plan is done or the
budget spent. Interrupted (Ctrl+C, a kill), `tune --resume` reads sweep.json and goes on: the jobs
that were in flight resume from their trials' last checkpoints."""

from __future__ import annotations

import json
import math
import random
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.durations import duration
from charrnn_tui.engine.errors import CharRNNError, ConfigError
from charrnn_tui.engine.runs import (
    BEST,
    LATEST,
    SWEEP,
    SWEEP_LIMIT,
    is_live,
    name_taken_message,
    read_run_file,
    read_status,
    replace_atomically,
    require_own_run_dir,
)
from charrnn_tui.engine.tune.halving import Halving, Plan
from charrnn_tui.engine.tune.space import Settings, Space
from charrnn_tui.engine.tune.trials import (
    Outcome,
    TrialProcess,
    checkpoint_step,
    new_trial_argv,
    outcome,
    resume_argv,
    start,
    validation_losses,
)

VERSION = 1
POLL = 0.2  # seconds between looks at the trials in flight
FINALE_LEAST = 20.0  # seconds of training the plan must leave for its winner to train on
FINALE_MARGIN = 15.0  # seconds of the budget kept from the finale's training: its start-up, last evaluation and save
FINALE_TRAINING = 0.9  # of the finale's seconds given as training time (--max-time): evaluations, samples and
# saves take the rest; the budget stops it if not (its rate then near the cosine's end). At 0.85 with an evaluation
# every 500 steps, tiny-shakespeare's 10-minute sweep ended at 09:19
FINALE_EVALUATIONS = 8  # about as many in a finale (never more often than the preset's): 17 of 111k tokens took 31 s
AFRESH = 2.0  # a finale that trains at least this many times the winner's tokens trains its settings from step 0
# (its own folder, TRIAL-final) rather than resuming it: a resume restarts the rate's cosine from where the rung
# left it at 0, and that costs more than the winner's few tokens are worth. tiny-shakespeare, lstm 1x384, 600 s
# of training on 1 thread, the same seed: 383 steps, resumed to 1,147, resumed for the rest (the tune's rungs and
# finale) 1.4198; one run 1.4107
SAVE_EVERY = 5.0  # seconds between saves of the time spent, between events


@dataclass
class Trial:
    id: int  # 0-based, the order trials were started in (ties go to the lower)
    name: str  # its run folder in the sweep's
    settings: Settings
    steps: int = 0  # steps trained, by its last job's end
    why: str = ""  # why it failed, where it did


@dataclass
class SweepState:
    """Everything sweep.json holds."""

    corpus: str  # as shown
    data_argv: list[str]  # the corpus and its flags, given to every trial (and to the winner's command)
    preset: str
    budget_s: float
    plan: Plan
    space: Space
    seed: int
    slots: int  # trials at once
    machine_argv: list[str]  # --threads, --device: how trials use the machine, not what they are
    spent_s: float = 0.0
    trials: list[Trial] = field(default_factory=list)
    halving: Halving | None = None
    default: Settings | None = None  # the first trial's: what a default run would train
    sampler_state: Any = None  # random.Random's state after the last draw: a resume draws the same next trial
    winner: dict[str, Any] | None = None  # the sweep's result once it has ended: trial, loss, checkpoint, command
    speed: float = 0.0  # tokens/s a slot trains, as the probe measured (0: a sweep from before it was kept)
    job_seconds: float = 0.0  # the start-up the plan counted per job
    # the winner trained on for the budget the plan left (`Sweep._finale`): trial (id), seconds, run
    # (the folder it trains in: the trial's, or TRIAL-final where it trains afresh), then done, loss
    # (its best validation loss after it) and steps (the run's)
    finale: dict[str, Any] | None = None

    def finale_of(self, trial_id: int) -> dict[str, Any] | None:
        """The finale `trial_id` has trained, or None (none, another trial's, or not done)."""
        finale = self.finale
        return finale if finale is not None and finale["trial"] == trial_id and finale["done"] else None

    def result_steps(self, trial: Trial) -> int:
        """The steps `trial`'s result trained: its finale's where that is its result, else its own."""
        finale = self.finale_of(trial.id)
        if finale is not None and finale["steps"] and self.result_run(trial) == finale["run"]:
            return int(finale["steps"])
        return trial.steps

    def result_run(self, trial: Trial) -> str:
        """The folder (in the sweep's) holding `trial`'s result: its finale's where that trained it
        afresh to a loss at most its own, else its own."""
        finale = self.finale_of(trial.id)
        if finale is None or finale["run"] == trial.name or finale["loss"] is None:
            return trial.name
        own = self.decisions.winner()
        return finale["run"] if own is None or own[0] != trial.id or finale["loss"] <= own[2] else trial.name

    def __post_init__(self) -> None:
        if self.halving is None:
            self.halving = Halving(self.plan)

    @property
    def decisions(self) -> Halving:
        assert self.halving is not None, "__post_init__ made it"
        return self.halving

    def steps_for(self, trial: Trial, rung: int) -> int:
        """The steps that bring `trial` to rung `rung`'s tokens (a whole step over, never under)."""
        return -(-self.plan.rungs[rung] // trial.settings.step_tokens)

    def to_dict(self) -> dict[str, Any]:
        h = self.decisions
        return {
            "version": VERSION, "corpus": self.corpus, "data_argv": self.data_argv, "preset": self.preset,
            "budget_s": self.budget_s, "spent_s": round(self.spent_s, 3), "seed": self.seed, "slots": self.slots,
            "machine_argv": self.machine_argv,
            "plan": {"rungs": list(self.plan.rungs), "trials": self.plan.trials, "eta": self.plan.eta},
            "space": self.space.to_dict(),
            # "state" is for readers (the app's leaderboard): a resume recomputes it from the reports
            "trials": [{"id": t.id, "name": t.name, "settings": t.settings.to_dict(), "steps": t.steps, "why": t.why,
                        "state": h.state(t.id)} for t in self.trials],
            "reports": [{str(t): _loss_out(loss) for t, loss in rung.items()} for rung in h.reports],
            "promoted": [sorted(rung) for rung in h.promoted], "started": h.started,
            "running": {str(t): rung for t, rung in h.running.items()},
            "default": self.default.to_dict() if self.default else None, "sampler_state": self.sampler_state,
            "winner": self.winner, "speed": self.speed, "job_seconds": self.job_seconds, "finale": self.finale,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepState:
        if data.get("version") != VERSION:
            raise ConfigError(f"{SWEEP} is of version {data.get('version')!r}; this charrnn-tui reads {VERSION}")
        plan = Plan(tuple(data["plan"]["rungs"]), int(data["plan"]["trials"]), int(data["plan"]["eta"]))
        halving = Halving(plan, reports=[{int(t): _loss_in(v) for t, v in rung.items()} for rung in data["reports"]],
                          promoted=[set(rung) for rung in data["promoted"]], started=int(data["started"]),
                          running={int(t): int(r) for t, r in data["running"].items()})
        trials = [Trial(int(t["id"]), str(t["name"]), Settings.from_dict(t["settings"]), int(t["steps"]),
                        str(t.get("why", ""))) for t in data["trials"]]
        state = data.get("sampler_state")
        return cls(corpus=str(data["corpus"]), data_argv=[str(a) for a in data["data_argv"]],
                   preset=str(data["preset"]), budget_s=float(data["budget_s"]), plan=plan,
                   space=Space.from_dict(data["space"]), seed=int(data["seed"]), slots=int(data["slots"]),
                   machine_argv=[str(a) for a in data["machine_argv"]], spent_s=float(data["spent_s"]),
                   trials=trials, halving=halving,
                   default=Settings.from_dict(data["default"]) if data.get("default") else None,
                   sampler_state=_tuples(state) if state is not None else None,
                   winner=data.get("winner") if isinstance(data.get("winner"), dict) else None,
                   speed=float(data.get("speed", 0.0)), job_seconds=float(data.get("job_seconds", 0.0)),
                   finale=_finale_in(data.get("finale"), [t.name for t in trials]))


def _loss_out(loss: float | None) -> float | str | None:
    return loss if loss is None or math.isfinite(loss) else "diverged"  # JSON has no NaN nor infinity


def _loss_in(value: Any) -> float | None:
    return math.inf if value == "diverged" else None if value is None else float(value)


def _tuples(value: Any) -> Any:
    """random.Random.setstate wants the tuples JSON made lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def save(folder: Path, state: SweepState) -> None:
    """sweep.json, replaced atomically (fsynced first): a kill leaves the old one or the new one."""
    data = json.dumps(state.to_dict(), indent=1).encode("utf-8")
    replace_atomically(folder / SWEEP, lambda f: f.write(data))


def load(folder: Path) -> SweepState:
    """A sweep's state from its folder's sweep.json; ConfigError saying why it cannot be read."""
    require_own_run_dir(folder)
    data, problem = read_run_file(folder / SWEEP, SWEEP_LIMIT)
    if data is None:
        raise ConfigError(f"{folder}: no sweep to resume ({problem or f'no {SWEEP}'})")
    try:
        return SweepState.from_dict(json.loads(data))
    except (ValueError, KeyError, TypeError, RecursionError, AttributeError) as e:
        raise ConfigError(f"{folder / SWEEP} cannot be read ({type(e).__name__}: {e})") from None




def _finale_in(data: Any, names: list[str]) -> dict[str, Any] | None:
    """sweep.json's finale, checked: None, or a trial id in range (of the trials `names`), a run that
    is a folder's name (the trial's own where a sweep from before does not say), numbers where
    numbers go."""
    if data is None:
        return None
    if not isinstance(data, dict) or type(data.get("trial")) is not int or not 0 <= data["trial"] < len(names):
        raise ValueError("finale: not a finale of one of the trials")
    loss, steps, run = data.get("loss"), data.get("steps"), data.get("run", names[data["trial"]])
    if not isinstance(run, str) or run in ("", ".", "..") or Path(run).name != run:
        raise ValueError("finale: its run is not a folder's name")
    return {"trial": data["trial"], "seconds": float(data.get("seconds", 0.0)), "run": run,
            "done": data.get("done") is True,
            "loss": _loss_in(loss) if isinstance(loss, (int, float)) and not isinstance(loss, bool) else None,
            "steps": steps if type(steps) is int else None}


def next_settings(state: SweepState) -> Settings:
    """A new trial's settings: the default run's first, then draws from the space, seeded, never a
    repeat of an earlier trial's (redrawn, a few times)."""
    if not state.trials and state.default is not None:
        return state.default
    rng = random.Random(state.seed)
    if state.sampler_state is not None:
        rng.setstate(state.sampler_state)
    seen = {t.settings for t in state.trials}
    settings = state.space.sample(rng)
    for _ in range(20):
        if settings not in seen:
            break
        settings = state.space.sample(rng)
    state.sampler_state = rng.getstate()
    return settings


@dataclass
class Job:
    trial: Trial
    rung: int
    process: TrialProcess
    target: int  # the step it trains to
    slot: int  # which share of the machine: on several GPUs, which GPU
    tokens: int = 0  # what it trains: its rung's tokens less those of the rung below
    began: float = field(default_factory=time.monotonic)


class Sweep:
    """Runs a sweep from its state until done, the budget spent or `interrupt` set; `say` gets one
    line per trial event; `env_for_slot(slot)` is the environment of a trial in that slot (None:
    this one's; on several GPUs, one GPU a slot)."""

    def __init__(self, folder: Path, state: SweepState, say: Callable[[str], None],
                 env_for_slot: Callable[[int], dict[str, str] | None] = lambda slot: None, cores: int = 1):
        self.folder, self.state, self.say = folder, state, say
        self.env_for_slot = env_for_slot
        self.jobs: dict[int, Job] = {}
        self.interrupt = threading.Event()
        self.announced: dict[int, str] = {}
        self.stopping = False  # the jobs in flight are being stopped: what they leave is resumed later
        self.measured = [0.0, 0.0, 0.0]  # wall-clock seconds, tokens and count of the jobs done in this session
        self.finale: TrialProcess | None = None  # the winner training on, once the plan is done
        self.cores = cores  # what the finale trains on: the whole machine's share, not a trial's

    def run(self) -> str:
        """Train until the plan is done ("done"), the budget is spent ("budget spent") or `interrupt`
        is set ("interrupted"); the trials started here have ended when it returns."""
        state, h = self.state, self.state.decisions
        began, spent_before, saved = time.monotonic(), state.spent_s, 0.0
        self._announced_so_far()
        try:
            while True:
                state.spent_s = spent_before + time.monotonic() - began
                self._collect()
                if self.interrupt.is_set():
                    return "interrupted"
                if state.spent_s >= state.budget_s:  # a finale still going is stopped: its best.pt stands
                    return "budget spent"
                if self.finale is not None:  # the plan is done: the winner trains on until it ends
                    if not self.finale.running():
                        self._finale_ended()
                        return "done"
                else:
                    self._fill_slots()
                    planned = not self.jobs and not h.running and h.started >= state.plan.trials and not h.promotable()
                    if planned and not self._start_finale():
                        return "done"
                if time.monotonic() - saved > SAVE_EVERY:
                    save(self.folder, state)
                    saved = time.monotonic()
                time.sleep(POLL)
        finally:
            self._stop_all()
            state.spent_s = spent_before + time.monotonic() - began
            save(self.folder, state)

    # ---- jobs -------------------------------------------------------------------------------------
    def _fill_slots(self) -> None:
        h = self.state.decisions
        while len(self.jobs) < self.state.slots and not self.interrupt.is_set():
            waiting = [t for t in h.running if t not in self.jobs]  # stopped half-way earlier: resumed first
            if waiting:
                trial_id, rung = waiting[0], h.running[waiting[0]]
            else:
                job = h.next_job()
                if job is None:
                    return
                trial_id, rung = job
                if trial_id == len(self.state.trials):  # a new trial
                    settings = next_settings(self.state)
                    self.state.trials.append(Trial(trial_id, f"trial-{trial_id + 1:02d}", settings))
            self._start(self.state.trials[trial_id], rung)

    def _start(self, trial: Trial, rung: int) -> None:
        state = self.state
        target = state.steps_for(trial, rung)
        run_dir = self.folder / trial.name
        slot = min(set(range(state.slots)) - {j.slot for j in self.jobs.values()})
        if is_live(run_dir):  # started by a tune killed while it waited for it: waited for here
            self.jobs[trial.id] = Job(trial, rung, TrialProcess(run_dir), target, slot)
            self.say(f"{trial.name} still training from before; waiting for it")
            return
        done = checkpoint_step(run_dir) if run_dir.is_dir() else None
        if done is not None and done >= target:  # it got there before the sweep could tell: read it
            self._record(trial, rung, outcome(run_dir, target))
            return
        if done is None:
            if run_dir.exists():  # stopped before its first checkpoint: a fresh folder
                trial.name = _next_attempt(self.folder, trial.name)
            argv = new_trial_argv(state.data_argv, state.preset, trial.settings, self.folder, trial.name, target,
                                  state.machine_argv)
            how = f"started: {trial.settings.label()}"
        else:
            argv = resume_argv(run_dir, target - done, state.machine_argv)
            promoted = rung > 0 and done <= state.steps_for(trial, rung - 1)
            how = f"promoted to rung {rung + 1}" if promoted else f"resumed at step {done:,}"
        began = time.monotonic()  # the engine's start-up is part of what a job costs
        try:
            process = start(argv, env=self.env_for_slot(slot))
        except CharRNNError as e:
            if done is None and name_taken_message(trial.name, self.folder) in str(e):
                # An earlier tune, killed as it started this trial, left its engine starting: it made
                # the folder since. The next look waits for it (live) or starts afresh beside it.
                self.say(f"{trial.name} was being started by an earlier tune; looking again")
                return
            self._record(trial, rung, Outcome(None, None, str(e)))
            return
        below = state.plan.rungs[rung - 1] if rung > 0 else 0
        self.jobs[trial.id] = Job(trial, rung, process, target, slot, tokens=state.plan.rungs[rung] - below,
                                  began=began)
        self.say(f"{trial.name} {how} (to {_tokens(state.plan.rungs[rung])} tokens, step {target:,})")
        save(self.folder, state)

    def _collect(self) -> None:
        """Read the results of the jobs whose engines have ended."""
        for trial_id, job in list(self.jobs.items()):
            if job.process.running():
                continue
            del self.jobs[trial_id]
            result = outcome(job.process.run_dir, job.target)
            if result.stopped and self.stopping:
                job.trial.steps = checkpoint_step(job.process.run_dir) or job.trial.steps
                continue  # stays a running job, resumed by `tune --resume`
            if result.loss is not None and job.tokens:
                self.measured[0] += time.monotonic() - job.began
                self.measured[1] += job.tokens
                self.measured[2] += 1
            self._record(job.trial, job.rung, result)
            self._replan()

    def _record(self, trial: Trial, rung: int, result: Outcome) -> None:
        h = self.state.decisions
        if result.stopped:  # stopped by someone else (`charrnn-tui stop`): it is resumed as it is
            trial.steps = checkpoint_step(self.folder / trial.name) or trial.steps
            self.say(f"{trial.name} stopped before rung {rung + 1}; resuming it")
            save(self.folder, self.state)
            return
        h.report(trial.id, rung, result.loss)
        trial.steps = result.step or trial.steps
        rung_words = f"rung {rung + 1} ({_tokens(self.state.plan.rungs[rung])} tokens)"
        if result.loss is None:
            trial.why = result.why
            self.say(f"{trial.name} failed before {rung_words}: {result.why}")
        elif not math.isfinite(result.loss):
            self.say(f"{trial.name} diverged before {rung_words}: pruned")
        else:
            self.say(f"{trial.name} {rung_words}: val {result.loss:.4f}")
        self.announced[trial.id] = h.state(trial.id)
        self._announce_changes()
        save(self.folder, self.state)

    def _announce_changes(self) -> None:
        """A line for each trial newly pruned, promoted or finished."""
        h = self.state.decisions
        for trial in self.state.trials:
            now = h.state(trial.id)
            if now == self.announced.get(trial.id):
                continue
            self.announced[trial.id] = now
            rung = h.top_rung(trial.id)
            if now == "pruned" and rung is not None:
                self.say(f"{trial.name} pruned at rung {rung + 1}")

    def _replan(self) -> None:
        """Fewer trials, then fewer rungs, where the jobs done so far say the plan would overrun the
        budget: the speed probe cannot see engines' start-up on a busy machine, nor evaluations and
        saves, nor other work that starts after it. The plan's own model of a job (its tokens at the
        probe's speed and a start-up) is scaled by how much longer the jobs done took than it said;
        a sweep that did not keep the probe's figures folds start-up into a cost per token."""
        seconds, tokens, jobs = self.measured
        if not tokens:
            return
        state, before = self.state, self.state.plan
        if state.speed > 0:
            slower = seconds / (tokens / state.speed + jobs * state.job_seconds)
            per_token, job_tokens = slower / state.speed, state.speed * state.job_seconds
            why = f"the jobs so far took {slower:.1f}x what the plan said, start-up included"
        else:
            per_token, job_tokens = seconds / tokens, 0.0
            why = f"jobs here take {per_token * 1e6:.0f} s per million tokens, start-up included"
        after = state.decisions.replan(per_token, state.slots, state.budget_s - state.spent_s, job_tokens)
        if after != before:
            state.plan = after
            self.say(f"re-planned: {_plan_words(after)}, not {_plan_words(before)} ({why})")

    def _announced_so_far(self) -> None:
        """What a resumed sweep's trials already were: only changes from here get a line."""
        for trial in self.state.trials:
            self.announced[trial.id] = self.state.decisions.state(trial.id)

    # ---- the finale ---------------------------------------------------------------------------------
    def _start_finale(self) -> bool:
        """The plan done with budget left: its winner trains on for it, on every core the sweep had,
        so that the sweep's result has the budget's whole worth of training rather than the top
        rung's. Where the time left trains AFRESH times the winner's tokens or more, its settings
        train from step 0 in a folder of their own (TRIAL-final: one cosine over the time, as the
        reproduce command trains them); else the trial is resumed (`train --resume TRIAL --max-time
        LEFT`, a new cosine over it). False where there is no winner, too little time left, or the
        finale has been trained."""
        state, best = self.state, self.state.decisions.winner()
        seconds = round(state.budget_s - state.spent_s - FINALE_MARGIN, 1)
        if best is None or seconds < FINALE_LEAST or (state.finale or {}).get("done"):
            return False
        trial = state.trials[best[0]]
        if state.finale is not None and state.finale["trial"] == trial.id:  # a killed tune's finale
            run = state.finale["run"]
            if is_live(self.folder / run):
                self.finale = TrialProcess(self.folder / run)
                self.say(f"{run} still training on from before; waiting for it")
                return True
            if checkpoint_step(self.folder / run) is not None:  # resumed for the time now left
                return self._launch_finale(trial, run, seconds, afresh=False)
        training = seconds * FINALE_TRAINING
        if self.slot_speed() * training < AFRESH * state.plan.rungs[best[1]]:
            return self._launch_finale(trial, trial.name, seconds, afresh=False)
        run = f"{trial.name}-final"
        if (self.folder / run).exists():  # a killed tune's, stopped before its first checkpoint
            run = _next_attempt(self.folder, run)
        return self._launch_finale(trial, run, seconds, afresh=True)

    def slot_speed(self) -> float:
        """Tokens a second one slot trains: as the jobs done in this session did (start-up included:
        a busy machine shows here), else as the probe measured (0 for a sweep from before it was kept)."""
        seconds, tokens, _ = self.measured
        return tokens / seconds if seconds > 0 and tokens > 0 else self.state.speed

    def _launch_finale(self, trial: Trial, run: str, seconds: float, *, afresh: bool) -> bool:
        state = self.state
        training = seconds * FINALE_TRAINING
        if afresh:
            argv = fresh_finale_argv(state, trial.settings, self.folder, run, training, self.cores)
        else:
            argv = finale_argv(self.folder / run, training, state.machine_argv, self.cores)
        argv += ["--eval-interval", str(finale_eval_interval(self.slot_speed() * state.slots, state.preset,
                                                             trial.settings, training))]
        try:
            self.finale = start(argv, env=self.env_for_slot(0))
        except CharRNNError as e:
            self.say(f"{trial.name} could not train on: {e}")
            return False
        state.finale = {"trial": trial.id, "seconds": seconds, "run": run, "done": False, "loss": None,
                        "steps": None}
        threads = f"on {self.cores} thread{'s' if self.cores > 1 else ''}"
        if afresh:
            self.say(f"{trial.name} leads: its settings train afresh for the {duration(seconds)} left, in {run}, "
                     f"{threads}")
        else:
            self.say(f"{trial.name} leads: it trains on for the {duration(seconds)} left, {threads}")
        save(self.folder, state)
        return True

    def _finale_ended(self) -> None:
        """Read what the finale came to: the winner's best validation loss now (its best.pt's)."""
        assert self.state.finale is not None and self.finale is not None
        trial = self.state.trials[self.state.finale["trial"]]
        run_dir = self.finale.run_dir
        self.finale = None
        if self.interrupt.is_set():
            return  # Ctrl+C: a resume trains it on for the time then left
        finite = [loss for loss in validation_losses(run_dir).values() if math.isfinite(loss)]
        best, steps = min(finite, default=None), checkpoint_step(run_dir)
        if run_dir.name == trial.name:  # resumed: the trial's own steps; afresh, the finale's are its run's
            trial.steps = steps or trial.steps
        self.state.finale.update(done=True, loss=best, steps=steps)
        if best is not None:
            self.say(f"{run_dir.name} trained on to step {steps or 0:,}: best val {best:.4f}")
        else:
            status = read_status(run_dir)
            why = status.get("reason") or status.get("state")
            self.say(f"{trial.name} trained on without a validation loss ({why})")
        save(self.folder, self.state)

    def _stop_all(self) -> None:
        if self.finale is not None:
            self.say("stopping the winner's training on (saving)")
            self.finale.stop()
            self.finale.wait()
            self._finale_ended()
        if not self.jobs:
            return
        self.stopping = True
        self.say(f"stopping {', '.join(j.trial.name for j in self.jobs.values())} (saving)")
        for job in self.jobs.values():
            job.process.stop()
        for job in self.jobs.values():
            job.process.wait()
        self._collect()
        for trial_id in list(self.jobs):  # ended but read as unfinished: kept for a resume
            self.jobs.pop(trial_id)

    # ---- results --------------------------------------------------------------------------------
    def state_of(self, trial: Trial) -> str:
        state = self.state.decisions.state(trial.id)
        return "stopped" if state == "running" and trial.id not in self.jobs else state


def winner_command(state: SweepState, trial: Trial, rung: int) -> str:
    """The `charrnn-tui train` command that trains the winner's settings for as many tokens (its
    finale's included)."""
    finale = state.finale_of(trial.id)
    steps = state.result_steps(trial) if finale is not None else state.steps_for(trial, rung)
    words = ["charrnn-tui", "train", *state.data_argv, "--preset", state.preset, *trial.settings.flags(),
             "--max-steps", str(steps)]
    return shlex.join(words)


def finale_eval_interval(speed: float, preset: str, settings: Settings, seconds: float) -> int:
    """Steps between a finale's evaluations: about FINALE_EVALUATIONS over its `seconds` of training
    at `speed` tokens a second (the trials', all slots together: a guess at the whole machine's),
    never more often than `preset`'s interval. Its best.pt needs few: the cosine ends at its best."""
    interval = cfg.apply_preset(cfg.TrainConfig(), preset).eval_interval
    steps = speed * seconds / settings.step_tokens
    return max(interval, round(steps / FINALE_EVALUATIONS))


def fresh_finale_argv(state: SweepState, settings: Settings, folder: Path, name: str, seconds: float,
                      cores: int) -> list[str]:
    """`train` arguments that train `settings` from step 0 for `seconds` on `cores` threads, in the
    sweep's folder as `name` (a device given to the sweep kept)."""
    return [*state.data_argv, "--preset", state.preset, *settings.flags(), "--max-time", f"{seconds:.0f}",
            "--runs-dir", str(folder), "--name", name, "--threads", str(cores), *_device_argv(state.machine_argv)]


def finale_argv(run_dir: Path, seconds: float, machine_argv: list[str], cores: int) -> list[str]:
    """`train` arguments that train the winner on for `seconds` more on `cores` threads (a device given
    to the sweep kept)."""
    return ["--resume", str(run_dir), "--runs-dir", str(run_dir.parent), "--max-time", f"{seconds:.0f}",
            "--threads", str(cores), *_device_argv(machine_argv)]


def continuation_argv(folder: Path, trial: str, machine_argv: list[str], cores: int) -> list[str]:
    """The `train` arguments that carry the winner on as an ordinary run (`tune --continue`): resumed
    from its last checkpoint with its stop conditions lifted (`--max-time 0`: until stopped, the
    schedule restarted open-ended, engine/run/run_setup.py), on the whole machine's `cores` rather
    than the share a trial had (a device given to the sweep is kept)."""
    return ["--resume", str(folder / trial), "--max-time", "0", "--threads", str(cores), *_device_argv(machine_argv),
            "--runs-dir", str(folder.parent)]


def _device_argv(machine_argv: list[str]) -> list[str]:
    """`--device D` where the sweep was given one (its trials' share of the machine is not kept)."""
    return machine_argv[machine_argv.index("--device"):][:2] if "--device" in machine_argv else []


def winner_checkpoint(folder: Path, state: SweepState, trial: Trial) -> Path:
    run = folder / state.result_run(trial)
    return run / BEST if (run / BEST).is_file() else run / LATEST


def _next_attempt(folder: Path, name: str) -> str:
    """trial-05-r2, -r3...: a new folder for a trial whose first job left none worth resuming."""
    base = name.split("-r")[0]
    n = 2
    while (folder / f"{base}-r{n}").exists():
        n += 1
    return f"{base}-r{n}"


def _plan_words(plan: Plan) -> str:
    """`9 trials on rungs of 10k, 30k, 90k`."""
    return f"{plan.trials} trials on rung{'s' if len(plan.rungs) > 1 else ''} of {', '.join(map(_tokens, plan.rungs))}"


def _tokens(n: float) -> str:
    """1.5M, 250k, 900: a token count, short."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


tokens_label = _tokens
