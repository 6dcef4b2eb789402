"""The training loop: truncated BPTT step after step, with reports, evaluations, checkpoints and
samples when they fall due, and requests from other threads applied between steps.

Read `run`, then `_loop`, top to bottom. Around them, each a module of one job: engine/run/run_setup.py
builds the run (`setup` calls it step by step) and engine/run/checkpoints.py restores it;
engine/run/control.py holds the requests and yields what the loop is to do; engine/model/step.py is
the step itself; engine/run/reporting.py the progress reports, engine/run/evaluating.py an
evaluation, engine/run/saving.py writing a checkpoint, engine/run/answers.py the samples and the
answers to keystrokes; engine/run/schedule.py the learning rate and the stop conditions. Only the
thread that calls `run()` touches the model.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.checkpoint import load_checkpoint
from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.events import Event, Notice, SettingsChanged, StateChanged
from charrnn_tui.engine.model.device import release_cached_memory
from charrnn_tui.engine.model.sampling import SampleSettings
from charrnn_tui.engine.protocol import Request, SetEarlyStop, SetSampleInterval, SetTemperature, Stop
from charrnn_tui.engine.run import evaluating, saving, schedule
from charrnn_tui.engine.run.answers import Answers, keep_live_sample, write_whole
from charrnn_tui.engine.run.batch_size import is_out_of_memory
from charrnn_tui.engine.run.checkpoints import resumed_config
from charrnn_tui.engine.run.control import (
    Action,
    Actions,
    Announce,
    AnswerKeystroke,
    Apply,
    ChangeState,
    Controls,
    Evaluate,
    FlushProgress,
    Reply,
    SaveCheckpoint,
    StartSample,
    WritePiece,
)
from charrnn_tui.engine.run.distributed import (
    GATHER,
    REPORT,
    SINGLE,
    STEP,
    STOP,
    DistributedError,
    Peers,
    ProcessGroup,
    World,
    shard,
)
from charrnn_tui.engine.run.reporting import Reports
from charrnn_tui.engine.run.run import EventSink, Run, Trained, learning_rate
from charrnn_tui.engine.run.run_setup import Made, build_run
from charrnn_tui.engine.runs import BEST, LATEST, default_runs_dir, write_status
from charrnn_tui.engine.text.corpus import Corpus

_FINISHED = object()  # what a sample's pieces give once it has finished


@dataclass(frozen=True)
class RunPlan:
    """The run to train, as the command line reads it: a new one from its config (its corpus read
    already, with notes on how the model was fitted to it), or one to resume from its checkpoint
    with the settings given beside --resume. What serving a run (engine/serve/process.py) takes."""

    config: cfg.TrainConfig | None  # None: the checkpoint's, read by set-up
    runs_dir: Path
    resume: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    run_name: str | None = None
    corpus: Corpus | None = None
    notes: tuple[str, ...] = ()

    def trainer(self, on_event: EventSink | None, *, interactive: bool = False, world: World = SINGLE) -> Trainer:
        """The Trainer of this plan. `interactive`: for a UI (a failed save pauses the run);
        `world`: this process's place in a torchrun run (engine/run/distributed.py)."""
        return Trainer(self.config, on_event=on_event, runs_dir=self.runs_dir, run_name=self.run_name,
                       resume=self.resume, overrides=dict(self.overrides), pause_on_save_error=interactive,
                       world=world, corpus=self.corpus, notes=self.notes)


class Trainer:
    """A run's life: set up, the loop (or, in a follower of a distributed run, `_follow`), the end.
    Its public side: `run()`, and `request()` from any thread; `setup()`, `step()`,
    `serve_requests()`, `pull()` and `close()` are the pieces `run()` is made of, for tests and
    benches that drive a run a piece at a time."""

    def __init__(
        self,
        config: cfg.TrainConfig | None = None,
        *,
        on_event: EventSink | None = None,
        runs_dir: Path | None = None,
        run_name: str | None = None,
        resume: Path | None = None,
        overrides: dict[str, Any] | None = None,
        pause_on_save_error: bool = False,
        world: World = SINGLE,
        corpus: Corpus | None = None,
        notes: tuple[str, ...] = (),
    ):
        if config is None and resume is None:
            raise ValueError("Trainer needs a config or a checkpoint to resume")
        if config is not None:  # else set-up reads the checkpoint's
            self.config = config
        self.on_event = on_event or (lambda event: None)
        self.runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
        self.run_name = run_name
        self.resume_path = Path(resume) if resume else None
        self.overrides = overrides or {}
        self.loaded_corpus = corpus  # the config's corpus, read already (the command line fits the model to it)
        self.start_notes = notes  # said once the run has started (how the command line fitted its model)
        # A UI pauses when a checkpoint cannot be written (disk full), so the user can free space
        # and press save; headless, training goes on (the previous checkpoint is intact).
        self.pause_on_save_error = pause_on_save_error
        self.state = "starting"
        self.error = ""
        # Under torchrun: rank 0 runs `_loop` and commands the others, which run `_follow`
        # (engine/run/distributed.py): set-up makes `peers` their ProcessGroup. One process: SINGLE, Alone.
        self.world = world
        self.made = Made()  # what set-up has made so far: `device`, `peers`, `built` read it
        self.trained = Trained()  # how far it has come: a resume restores it (engine/run/checkpoints.py)
        self.saved_step = 0
        self.temperature = config.temperature if config is not None else 1.0  # a resumed run's: set-up reads it
        # The leader's, once set-up has built the run: samples and keystrokes' answers
        # (engine/run/answers.py), the progress reports (engine/run/reporting.py).
        self.answers: Answers | None = None
        self.reports: Reports | None = None
        self.early_stopped: str | None = None  # why --early-stop ended the run
        self.next_sample_at = 0.0  # time.monotonic() when the next live sample falls due
        # Called at the start and at each progress report, with the speed since the last one, on
        # the training thread (engine/run/threads.py).
        self.balance_threads: Callable[[float | None], None] | None = None
        self.controls = Controls(self.trained)  # the requests' queue and budgets (engine/run/control.py)

    def run(self) -> str:
        """Set up, train until a stop condition or a stop request, and return the final state."""
        try:
            if self._run_until_out_of_memory():
                self._recover_from_out_of_memory()
        finally:
            self.close()
        return self.state

    def _run_until_out_of_memory(self) -> bool:
        """The run, to its end (False) or until the device ran out of memory (True). That is handled
        by the caller, once this except block has let go of the error, its traceback and so the
        failed step's frames, with their tensors and graph: saving while they are alive could run
        out of memory again."""
        try:
            self.setup()
            if self.world.leader:
                plan = [*self.start_notes, *self.made.plan_notes]  # how the defaults suit this text: one line
                if plan:
                    self.emit(Notice("; ".join(plan)))
                self._loop()
            else:
                self._follow()
        except DistributedError as e:  # the group is broken (peers.waiting is False): nobody to tell
            self._remove_empty_run_dir()  # another rank failed to set up: rank 0 made a folder for nothing
            run_dir = self.built.run_dir if self.built is not None else None
            message = f"{e}; {saving.last_checkpoint_note(self.saved_step, run_dir)}" if self.world.leader else str(e)
            self._fail(message)
            raise DistributedError(message) from None
        except CharRNNError as e:
            self._remove_empty_run_dir()
            self._fail(str(e))
            raise
        except Exception as e:
            if not is_out_of_memory(e):
                self._fail(f"{type(e).__name__}: {e}")
                raise
            return True  # and Python drops `e` as the block ends
        return False

    def _recover_from_out_of_memory(self) -> None:
        """Save the last whole step if there is one, and end the run with an error that says what to
        change. Called outside any except block: nothing holds the failed step any more, and what it
        allocated is collected (cycles included) and handed back before the save."""
        gc.collect()
        if self.device is not None:  # None: set-up ran out of memory before choosing it
            release_cached_memory(self.device)
        # Distributed, a step that failed may have left the other ranks inside the all-reduce:
        # only a failure between steps (evaluating, sampling) can still gather them to save.
        if self.peers.waiting and saving.worth_saving_after_out_of_memory(self.built, self.trained, self.saved_step):
            release_cached_memory(self._built().device)
            try:
                if self._report():  # read the pending losses first: never save over a NaN
                    self._save(LATEST)
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
        self._remove_empty_run_dir()
        if self.state == "error":  # the save found a NaN loss: that is the error to report
            raise CharRNNError(self.error)
        message = saving.out_of_memory_advice(self.config, self.saved_step, self.device)
        self._fail(message)
        raise CharRNNError(message)

    def close(self) -> None:
        """Let go of what the run holds: the other processes (the followers wait for a command), the
        copy index, the metrics log, and the run folder's lock, once its final status is written."""
        if self.world.leader:
            self.peers.release()
        run = self.built  # None, or with the leader's parts still None, if set-up failed on the way
        if run is not None and run.copy_index is not None:
            run.copy_index.close()
        if run is not None and run.metrics is not None:
            run.metrics.close()
        if run is not None and run.lock is not None:
            self._write_final_status(run)
            run.lock.release()

    def _write_final_status(self, run: Run) -> None:
        """How the run ended, for `charrnn-tui runs` (a run's server writes it too while it lives;
        this covers runs trained from Python with no server)."""
        trained = self.trained
        info, run_dir = run.info, run.run_dir
        if info is None or run_dir is None or not run_dir.is_dir():
            return
        write_status(run_dir, {
            **info.status_fields(), "state": self.state, "reason": self.error, "step": trained.step,
            "best_val": trained.best_val if math.isfinite(trained.best_val) else None, "pid": None,
            "updated": time.time(), "viewers": 0,
        })

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self) -> None:
        """Build the run, or rebuild it from its checkpoint and restore it (engine/run/run_setup.py
        build_run, which keeps each part in `made` as soon as it exists); then the leader's answers
        and reports."""
        checkpoint = None
        if self.resume_path is not None:
            checkpoint = load_checkpoint(self.resume_path)
            self.config = resumed_config(checkpoint, self.overrides)
        corpus, self.loaded_corpus = self.loaded_corpus, None  # its text is the run's split's once read
        build_run(self.config, checkpoint, self.world, corpus=corpus, resume_path=self.resume_path,
                  overrides=self.overrides, run_name=self.run_name, runs_dir=self.runs_dir, trained=self.trained,
                  emit=self.emit, made=self.made)
        run = self._built()
        self.temperature = run.config.temperature
        if not self.world.leader:
            return
        self.saved_step = self.trained.step
        self.answers = Answers(run, self.emit)
        assert run.metrics is not None, "the leader's set-up has opened the log"
        self.reports = Reports(run, run.metrics, self.emit, self.made.gpu_monitor, self.balance_threads)

    # ---- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        trained, run, reports = self.trained, self._built(), self._reports()
        config = run.config
        self._set_state("training")
        reports.start(trained)  # this session's speed and ETA count from here
        self.next_sample_at = time.monotonic()  # the first live sample straight away: noise
        if self.balance_threads is not None:
            self.balance_threads(None)  # no speed yet

        while True:
            self.serve_requests(block=self.controls.paused)
            if self.state == "error":  # a NaN found while serving a request
                return
            if self.controls.stop_requested is not None:
                self.pull(self.controls.drop())  # stopping now: not after the prompts set aside
                if self._stop_on_request():
                    return
                continue  # the final save failed: paused, so the user can free space and retry
            if self.controls.paused:
                continue
            if self._limit_reached():
                self.pull(self.controls.finish())  # asked for before the end: the budget kept training, which is over
                if self._finish():
                    return
                continue

            # Training time is the steps themselves (and the read-back in reports), never the
            # requests, evaluations, samples and saves served between them.
            started = time.perf_counter()
            self.step()
            trained.train_seconds += time.perf_counter() - started

            due_report = (time.perf_counter() - reports.last_report >= config.report_interval
                          or run.train_step.log.full)
            due_eval = trained.step % config.eval_interval == 0
            due_checkpoint = config.checkpoint_interval and trained.step % config.checkpoint_interval == 0
            due_sample = config.sample_interval and time.monotonic() >= self.next_sample_at
            if due_report or due_eval or due_checkpoint or due_sample or self._limit_reached():
                started, trained_before = time.perf_counter(), trained.train_seconds
                if not self._report():
                    return
                if due_eval:
                    self._evaluate()
                if due_checkpoint:
                    self._save(LATEST)
                if self.state == "error":  # a save found non-finite weights
                    return
                if due_sample:  # a failed one is a warning: training goes on
                    write_whole(self._sample_pieces("", "live"), self._serve_typing, self.emit)
                # the report's read-back counts as training (it waits for the steps to finish)
                reports.overhead_seconds += time.perf_counter() - started - (trained.train_seconds - trained_before)

    def step(self, lr: float | None = None) -> None:
        """One step; the leader of a distributed run first tells the followers to take it too."""
        trained, run = self.trained, self._built()
        if lr is None:
            lr = learning_rate(run, trained)
            run.peers.step(lr)
        position = run.batcher.state_dict()
        batch = run.batcher.next()
        state = None if batch.reset else trained.train_state
        try:
            with run.peers.stepping():
                state = run.train_step(shard(batch, self.world), state, lr)
        except RuntimeError as e:
            if is_out_of_memory(e) and not run.train_step.updating:
                run.batcher.load_state_dict(position)  # not trained on: a save after this resumes here
            lost = None if is_out_of_memory(e) else run.peers.lost(e)
            if lost is not None:  # DDP's all-reduce found a rank gone
                raise lost from None
            raise
        trained.train_state = state if run.batcher.carries_state else None
        trained.step += 1
        trained.tokens_seen += batch.predictions
        if self.reports is not None:  # the leader's: the speed at the next report
            self.reports.tokens_since_report += batch.predictions

    def _follow(self) -> None:
        """A follower's whole loop: do what the leader says, at its step boundaries, until it stops."""
        run = self._built()
        group, train_step = run.peers, run.train_step
        assert isinstance(group, ProcessGroup), "a follower is in a group"
        self._set_state("training")
        while True:
            command, lr = group.receive()
            if command == STEP:
                self.step(lr)
            elif command == REPORT:
                train_step.log.add_up_losses(group.sum_)
                train_step.log.read()
            elif command == GATHER:
                group.collect_state(self.trained.carried_state())
            elif command == STOP:
                self._set_state("stopped")
                group.close()
                return

    def _report(self) -> bool:
        """Send the losses since the last report (engine/run/reporting.py); False when a loss or
        gradient norm went NaN/inf and the run stopped."""
        failure = self._reports().report(self.trained)
        if failure is not None:
            self._fail(f"{failure}; stopped without saving. {saving.last_good_checkpoint(self.saved_step)}")
            return False
        return True

    def _flush_progress(self) -> bool:
        """Report what is pending; False if that found a NaN/inf and failed the run."""
        return self.built is None or self._report()

    def _evaluate(self) -> None:
        """Evaluate (engine/run/evaluating.py), answering keystrokes meanwhile; a new best is saved."""
        run, reports = self._built(), self._reports()
        assert run.metrics is not None, "the leader's set-up has opened the log"
        between = self._serve_typing if self.controls.typing_now else None
        evaluation = evaluating.evaluate_run(run, self.trained, run.metrics, reports.mean_train_loss(), between,
                                             self.emit)
        reports.evaluated(evaluation.seconds)
        if evaluation.is_best:
            self._save(BEST)
        if evaluation.early_stop is not None:
            self.early_stopped = evaluation.early_stop

    def _sample_pieces(self, prompt: str, source: str, length: int | None = None,
                       temperature: float | None = None) -> Generator[None, None, str]:
        """A sample with the run's settings (engine/run/answers.py), a piece per iteration; a live
        one is kept for the checkpoint, and sets the time of the next."""
        run, trained = self._built(), self.trained
        config = run.config
        if source == "live":  # first, so that a sample that fails is not retried at every step
            self.next_sample_at = time.monotonic() + config.sample_interval
        settings = SampleSettings(
            length=config.sample_length if length is None else length,
            temperature=self.temperature if temperature is None else temperature, top_k=config.top_k,
            top_p=config.top_p,
        )
        assert self.answers is not None, "the leader's set-up has made them"
        text = yield from self.answers.sample(trained.step, prompt, source, settings)
        if source == "live":
            trained.samples = keep_live_sample(trained.samples, trained.step, text)
        return text

    def _save(self, name: str) -> bool:
        """Write a checkpoint (engine/run/saving.py); False if it could not be written (and, for a
        UI, training is paused)."""
        if self.state == "error":
            return False  # never write weights from a failed run over a good checkpoint
        saved = saving.save(self._built(), self.trained, name, self.saved_step, self.emit)
        if saved.failure:
            self._fail(saved.failure)
        elif not saved.written and self.pause_on_save_error and not self.controls.paused:
            self.controls.paused = True
            self._set_state("paused", "checkpoint failed")
        elif saved.written and name == LATEST:
            self.saved_step = self.trained.step
        return saved.written

    # ---- requests -----------------------------------------------------------------------------
    def request(self, request: Request, reply: Reply | None = None) -> None:
        """Queue a request for the loop; safe from any thread (engine/run/control.py says what is
        refused, and how each is served)."""
        self.controls.request(request, reply)

    def serve_requests(self, block: bool = False) -> None:
        """Serve the requests waiting, within their budgets (`block`: wait for one, as when paused)."""
        self.pull(self.controls.serve(block))

    def _serve_typing(self) -> None:
        self.pull(self.controls.serve_typing())

    def pull(self, actions: Actions[None]) -> None:
        """Do what the controls ask, one action at a time, sending each back what came of it, or the
        error it raised (they tell whoever asked, or raise it on: a device out of memory)."""
        answer: Any = None
        error: Exception | None = None
        while True:
            try:
                action = actions.throw(error) if error is not None else actions.send(answer)
            except StopIteration:
                return
            answer, error = None, None
            try:
                answer = self._do(action)
            except Exception as e:  # noqa: BLE001 - thrown back into the controls, which decide
                error = e

    def _do(self, action: Action) -> Any:
        match action:
            case FlushProgress():
                return self._flush_progress()
            case SaveCheckpoint():
                return self._save(LATEST)
            case Evaluate():
                self._evaluate()
            case AnswerKeystroke(text=text, top=top):
                assert self.answers is not None, "the leader's set-up has made them"
                self.answers.expect(text, top)
            case StartSample(prompt=prompt, source=source, length=length, temperature=temperature):
                return self._sample_pieces(prompt, source, length, temperature)
            case WritePiece(pieces=pieces):
                return next(pieces, _FINISHED) is not _FINISHED
            case ChangeState(state=state):
                if state == "training":
                    self._reports().last_report = time.perf_counter()  # the time paused is no report's
                self._set_state(state)
            case Announce(event=event):
                self.emit(event)
            case Apply(request=request):
                self._apply(request)
        return None

    def _apply(self, request: Request) -> None:
        """A request that changes the loop's own settings."""
        config = self.config
        match request:
            case SetTemperature(temperature=temperature):
                self.temperature = temperature
                self.emit(SettingsChanged(self.temperature, config.early_stop))
            case SetEarlyStop(evaluations=evaluations):
                config.early_stop = evaluations  # saved with the config: a resumed run keeps it
                self.emit(SettingsChanged(self.temperature, evaluations))
                self.emit(Notice(f"early stop after {plural(evaluations, 'evaluation')} without a new best"
                                 if evaluations else "early stop off"))
            case SetSampleInterval(seconds=seconds):
                config.sample_interval = seconds  # saved with the config: a resumed run keeps it
                self.next_sample_at = time.monotonic() + seconds
                self.emit(Notice(f"a live sample every {seconds:g} s" if seconds else "live samples off"))
            case Stop(unattended=True):
                self.pause_on_save_error = False  # nobody to free space and press save: a failed save ends it

    # ---- how a run ends -----------------------------------------------------------------------
    def _finish(self) -> bool:
        """Evaluate, save and finish; False when the save failed and a UI wants the run kept, paused."""
        trained = self.trained
        if not self._flush_progress():
            return True
        if not trained.val_history or trained.val_history[-1][0] != trained.step:
            self._evaluate()
        if not self._save_final():
            if self.pause_on_save_error:
                return False
            self._fail_unsaved()
            return True
        self._set_state("finished", self._limit_reached() or "")
        return True

    def _stop_on_request(self) -> bool:
        """Save if asked and stop; False when the save failed and a UI wants the run kept, paused."""
        if not self._flush_progress():
            return True
        if self.controls.stop_requested and not self._save_final():
            if self.pause_on_save_error:
                self.controls.stop_requested = None
                self.emit(Notice("could not save, so training is paused, not stopped: free space and press "
                                 "save, or quit without saving", "warning"))
                return False
            self._fail_unsaved()
            return True
        self._set_state("stopped")
        return True

    def _save_final(self) -> bool:
        # A failed write loses nothing when the latest checkpoint already holds every step.
        return self._save(LATEST) or self.trained.step == self.saved_step

    def _fail_unsaved(self) -> None:
        # Headless, nobody can retry the save: end as an error so the exit status says so.
        if self.state != "error":  # else the save found non-finite weights: that is the error to report
            self._fail(saving.steps_lost(self.saved_step, self.trained.step))

    def _remove_empty_run_dir(self) -> None:
        if self.resume_path is None and self.built is not None:  # a resumed run's folder holds its checkpoints
            saving.remove_empty_run_dir(self.built.run_dir)

    def _limit_reached(self) -> str | None:
        run, trained = self._built(), self.trained
        return self.early_stopped or schedule.limit_reached(run.config, trained.step, run.batcher.epoch_float,
                                                            trained.train_seconds)

    def _fail(self, message: str) -> None:
        self.state = "error"
        self.controls.failed = True  # it serves nothing more
        self.error = message
        self.emit(Notice(message, "error"))
        self.emit(StateChanged("error", message))

    def _set_state(self, state: str, reason: str = "") -> None:
        self.state = state
        self.emit(StateChanged(state, reason))

    def emit(self, event: Event) -> None:
        self.on_event(event)

    @property
    def built(self) -> Run | None:
        """What set-up builds (engine/run/run.py), read by the loop; None until it has (a failure
        before leaves nothing worth saving)."""
        return self.made.run

    @property
    def device(self) -> torch.device | None:
        """Picked first, before the run is built: None until then."""
        return self.made.device

    @property
    def peers(self) -> Peers:
        """The other processes of a distributed run (its ProcessGroup, once set-up has made it), or Alone."""
        return self.made.peers

    def _built(self) -> Run:
        assert self.built is not None, "set-up has built the run"
        return self.built

    def _reports(self) -> Reports:
        assert self.reports is not None, "the leader's set-up has made them"
        return self.reports
