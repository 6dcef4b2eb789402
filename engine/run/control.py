"""The control plane: requests from other threads (a UI, the run's server), applied by the training
loop between steps, so that only the loop's thread ever touches the model.

Requests are applied at the next step boundary, but those that write with the model (a keystroke's
next tokens, a prompt, a sample), which anyone typing or prompting sends again and again, are served
within a budget: at most REQUEST_SHARE of the training time (earned step by step), the rest waiting
for training to earn it; a prompt or sample is written a piece at a time, in turn with the others.
An evaluation or a save asked for has a budget of its own, of the same share (charged to the
keystrokes', one would hold every keystroke back for ten times its length): served at once while
some is left, else held, one of each kind, until training has earned it (its sender told when it
will come), and one asked for while another is held joins it. None is dropped but by a stop. The
run's own evaluations and checkpoints (its intervals) are not requests: they are not charged.

Nothing a request does can end the run but a device out of memory (the run's own handling, in
Trainer.run): a failure becomes a message to whoever asked, and training goes on.
"""

from __future__ import annotations

import collections
import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from charrnn_tui.engine.config import TrainConfig
from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.events import Event, Notice, SettingsChanged
from charrnn_tui.engine.protocol import (
    MIN_TEMPERATURE,
    AskNextTokens,
    EvaluateNow,
    Pause,
    Prompt,
    Request,
    RequestRefused,
    Resume,
    SampleNow,
    SaveNow,
    SetEarlyStop,
    SetSampleInterval,
    SetTemperature,
    Status,
    Stop,
    TogglePause,
)
from charrnn_tui.engine.run.batch_size import is_out_of_memory
from charrnn_tui.engine.runs import LATEST

# Requests that cost training time (a sample, a validation pass, a save); past this many waiting or
# under way, more are refused, so that a flood of them (a stuck key, a misbehaving client) cannot
# pile up work (or memory) without end.
MAX_QUEUED_WORK = 8
MAX_PER_BOUNDARY = 16  # requests taken between two steps; the rest wait for the next boundary
WORK = (SaveNow, SampleNow, EvaluateNow, Prompt)
BUDGETED = (SampleNow, Prompt, AskNextTokens)  # served within the request budget
HELD_BACK = (SaveNow, EvaluateNow)  # served within a budget of their own (work_budget), held past it
# The loop spends at most this share of the training time on requests, with REQUEST_BURST seconds
# of it banked: the first keystroke or piece is served at once, and an idle hour does not pay for a
# flood later. 0.1: training keeps 1/1.1 = 91% of the wall clock however hard clients ask. 0.2 (the
# most issue 25 allows) would keep 83%, and a step's speed on a shared CPU drifts by more than the
# 3 points left above the 80% promised (bench/request_cost.py measures both). A keystroke costs
# 1-5 ms, so 10% of a 30 ms step still answers a typist at once.
REQUEST_SHARE = 0.1
REQUEST_BURST = 0.1

# Tells one client (the one that asked) something: the server's reply to its sender. Called on the
# loop's thread; must not block.
Reply = Callable[[Notice], None]
TYPING_PAUSE = 30.0  # seconds after a keystroke during which evaluations and samples answer keystrokes
TYPING_CHUNK = 32  # time steps per evaluation call meanwhile (an answer waits for one call at most)


class RequestBudget:
    """The time the loop may spend on requests: `share` of the training time earned, at most
    `burst` seconds banked. Work goes ahead while some is left and is charged what it took (the
    credit can go below zero: one long piece of work is paid back by training before the next)."""

    def __init__(self, share: float = REQUEST_SHARE, burst: float = REQUEST_BURST,
                 clock: Callable[[], float] = time.perf_counter):
        self.share, self.burst, self.clock = share, burst, clock
        self.credit = burst
        self.spent = 0.0  # seconds charged in all (for tests and benchmarks)
        self._depth = 0

    def earn(self, training_seconds: float) -> None:
        self.credit = min(self.burst, self.credit + self.share * max(0.0, training_seconds))

    def allows(self) -> bool:
        return self.credit > 0

    @contextlib.contextmanager
    def spending(self) -> Iterator[None]:
        """Charge the time spent inside; once, when nested (a keystroke answered inside an evaluation
        that a client asked for is part of it)."""
        self._depth += 1
        start = self.clock()
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth:
                took = self.clock() - start
                self.credit -= took
                self.spent += took


@dataclass
class _Job:
    """A sample or prompt being written, a piece per turn (Trainer._sample_pieces)."""

    pieces: Generator[None, None, None]
    reply: Reply | None
    what: str


class Controls:
    """Request methods, safe to call from any thread, and the loop's side that serves them.

    Mixed into Trainer: the handlers below act on its state (paused, temperature, the saves and
    samples it knows how to make)."""

    # What the run it is mixed into holds and does (engine/run/trainer.py's Trainer, with
    # engine/run/run_setup.py): named here for the type checker, set and defined there.
    config: TrainConfig
    state: str
    temperature: float
    pause_on_save_error: bool
    last_report: float
    step: int
    train_seconds: float
    next_sample_at: float

    if TYPE_CHECKING:
        def emit(self, event: Event) -> None: ...
        def _set_state(self, state: str, reason: str = "") -> None: ...
        def _flush_progress(self) -> bool: ...
        def _save(self, name: str) -> bool: ...
        def _evaluate(self) -> None: ...
        def _expect(self, text: str, top: int) -> None: ...
        def _sample_pieces(self, prompt: str, source: str, length: int | None = None,
                           temperature: float | None = None) -> Generator[None, None, None]: ...

    def _init_controls(self) -> None:
        # SimpleQueue: its put is reentrant, so a signal handler may call stop() even while the loop
        # is inside get_nowait() (a Queue would deadlock on its own lock there).
        self._requests: queue.SimpleQueue[tuple[Request, Reply | None]] = queue.SimpleQueue()
        self._queued_work = 0
        self._work_lock = threading.Lock()
        self.paused = False
        self.stop_requested: bool | None = None  # None: keep going; else whether to save
        # The latest text to expect after (with who typed it); older ones are moot.
        self._typing: tuple[AskNextTokens, Reply | None] | None = None
        self.typed_at = -math.inf  # time.monotonic() of the last keystroke answered
        self.request_budget = RequestBudget()
        self.work_budget = RequestBudget()  # for evaluations and saves asked for (HELD_BACK)
        self._held: dict[type[Request], Reply | None] = {}  # HELD_BACK requests waiting for work_budget, one a kind
        self._work_last: tuple[type[Request], int, float] | None = None  # the last one served: kind, step, seconds
        self._work_took: dict[type[Request], float] = {}  # seconds the last of each kind took
        self._budget_trained: float | None = None  # train_seconds when the budget last earned
        self._deferred: collections.deque[tuple[Request, Reply | None]] = collections.deque()  # budgeted, waiting
        self._jobs: collections.deque[_Job] = collections.deque()  # samples and prompts under way
        self._jobs_turn = False  # whether a piece of a job goes before the next request set aside

    # ---- requests: any thread -----------------------------------------------------------------
    def request(self, request: Request, reply: Reply | None = None) -> None:
        """Queue a request for the loop (engine/protocol.py defines them); safe from any thread, and
        from a signal handler for Stop. RequestRefused when it is out of range, or when too much work
        is waiting or under way already. `reply`: how to tell the one who asked what became of it
        (it failed, a temperature was raised); without it, a Notice to everyone. Keystrokes come
        faster than steps: of the AskNextTokens waiting, only the latest is answered."""
        request.check()
        if isinstance(request, Status):
            raise RequestRefused("status is the server's to answer")
        if isinstance(request, AskNextTokens):
            with self._work_lock:
                waiting = self._typing is not None
                self._typing = (request, reply)
            if not waiting:
                self._requests.put((request, None))
            return
        if isinstance(request, WORK):
            with self._work_lock:
                if self._queued_work >= MAX_QUEUED_WORK:
                    raise RequestRefused(f"busy: {plural(self._queued_work, 'request')} waiting; "
                                         f"{request.name} not taken")
                self._queued_work += 1
        self._requests.put((request, reply))

    def _serve_typing(self) -> None:
        """Answer the latest keystroke waiting. Called between steps, and also between the chunks of
        an evaluation or a live sample while someone types, so that an answer never waits for those.
        Its time is charged to the request budget; a failure is told to the typist."""
        with self._work_lock:
            typing, self._typing = self._typing, None
        if typing is not None:
            request, reply = typing
            self.typed_at = time.monotonic()
            with self.request_budget.spending():
                try:
                    self._expect(request.text, request.top)
                except Exception as e:
                    if is_out_of_memory(e):
                        raise  # the run's own handling: it saves and ends (Trainer.run)
                    self._tell(reply, f"no next tokens for the text typed: {_describe(e)}; training goes on")

    @property
    def typing_now(self) -> bool:
        return time.monotonic() - self.typed_at < TYPING_PAUSE

    def _work_done(self) -> None:
        with self._work_lock:
            self._queued_work -= 1

    def _tell(self, reply: Reply | None, message: str, level: str = "warning") -> None:
        """A message for whoever asked, or for everyone when nobody in particular did."""
        notice = Notice(message, level)
        if reply is None:
            self.emit(notice)
            return
        with contextlib.suppress(Exception):  # a reply that fails only loses the message
            reply(notice)

    # ---- the loop's side ---------------------------------------------------------------------
    def _serve_requests(self, block: bool) -> None:
        """Between two steps: apply the requests waiting (at most MAX_PER_BOUNDARY; while paused,
        wait a little for one first), but set aside those BUDGETED, and serve those while the budget
        allows; an evaluation or a save asked for (HELD_BACK) goes by work_budget instead. While
        paused there is no training to keep: one piece of work per turn, without the budget, so that
        resume or stop are still seen between pieces."""
        trained = self.train_seconds
        if self._budget_trained is not None:
            self.request_budget.earn(trained - self._budget_trained)
            self.work_budget.earn(trained - self._budget_trained)
        self._budget_trained = trained
        block = block and not (self._deferred or self._jobs or self._held)
        for _ in range(MAX_PER_BOUNDARY):
            try:
                request, reply = self._requests.get(timeout=0.05) if block else self._requests.get_nowait()
            except queue.Empty:
                break
            block = False
            if isinstance(request, BUDGETED):
                self._deferred.append((request, reply))
            elif isinstance(request, HELD_BACK):
                if not self._take_work(request, reply):
                    return
            elif not self._apply(request, reply):
                return
        if self._held and (self.paused or self.work_budget.allows()) and not self._serve_held():
            return
        while self._deferred or self._jobs:
            if not self.paused and not self.request_budget.allows():
                return  # the rest waits for training to earn the time
            if not self._serve_one() or self.paused:
                return

    def _take_work(self, request: Request, reply: Reply | None) -> bool:
        """An evaluation or a save asked for: served now while work_budget allows (or while paused:
        there is no training to keep), else held until it does; one asked for while another is held
        joins it. Its sender is told when it will come. False as _apply."""
        kind = type(request)
        if kind in self._held:
            self._work_done()  # the held one answers both: everyone sees its Evaluated or CheckpointSaved
            self._tell(reply, self._held_message(kind, joined=True), "information")
            return True
        if self.paused or self.work_budget.allows():
            return self._serve_work(kind, reply)
        self._held[kind] = reply
        self._tell(reply, self._held_message(kind, joined=False), "information")
        return True

    def _serve_held(self) -> bool:
        """The evaluation or save held longest; False as _apply."""
        kind = next(iter(self._held))
        return self._serve_work(kind, self._held.pop(kind))

    def _serve_work(self, kind: type[Request], reply: Reply | None) -> bool:
        """Carry out an evaluation or a save asked for, charged to work_budget unless paused."""
        budget = self.work_budget
        start = budget.clock()
        with contextlib.nullcontext() if self.paused else budget.spending():
            carried_on = self._apply(kind(), reply)
        took = budget.clock() - start
        self._work_last, self._work_took[kind] = (kind, self.step, took), took
        return carried_on

    def _held_message(self, name: type[Request], joined: bool) -> str:
        """One line: why a kind of work waits, and for about how long (in training time, and the
        step), counting what is held before it at what it took last time."""
        budget = self.work_budget
        head = f"{_A[name]} is held already, and yours joins it" if joined else f"{_WHAT[name]} is held"
        why = f"evaluations and saves asked for get {budget.share:.0%} of the training time"
        if self._work_last is not None:
            kind, step, took = self._work_last
            why += f", and the last ({_A[kind]}, step {step:,}) took {took:.1f} s"
        if budget.share <= 0:
            return f"{head}: {why}; it follows when the run pauses or ends"
        ahead = list(self._held)
        ahead = ahead[:ahead.index(name)] if name in ahead else ahead
        wait = max(0.0, sum(self._work_took.get(k, 0.0) for k in ahead) - budget.credit) / budget.share
        step, trained = self.step, self.train_seconds
        near = f", near step {step + math.ceil(wait * step / trained):,}" if step > 0 and trained > 0 else ""
        return f"{head}: {why}; it follows after about {wait:.1f} s more training{near}"

    def _serve_one(self) -> bool:
        """One request set aside or one piece of a sample under way, in turn (a keystroke does not
        wait for a long prompt, nor a prompt for a typist who never stops), charged to the budget.
        False when the loop must look at its state before any more."""
        with self.request_budget.spending():
            self._jobs_turn = not self._jobs_turn
            if self._deferred and not (self._jobs_turn and self._jobs):
                return self._apply(*self._deferred.popleft())
            job = self._jobs.popleft()
            try:
                next(job.pieces)
            except StopIteration:
                self._work_done()
            except Exception as e:
                self._work_done()
                if is_out_of_memory(e):
                    raise  # the run's own handling: it saves and ends (Trainer.run)
                self._tell(job.reply, f"{job.what} failed: {_describe(e)}; training goes on")
            else:
                self._jobs.append(job)  # in turn with the others
            return self.state != "error"

    def _finish_requests(self) -> None:
        """Training is over (a stop condition): what was asked before is served, without a budget."""
        while self._held:
            if not self._serve_held():
                return
        while self._deferred or self._jobs:
            if not self._serve_one():
                return

    def _drop_requests(self) -> None:
        """A stop: what was set aside is dropped, each asker told; samples under way end where
        they are (their viewers get what was written)."""
        while self._held:
            kind, reply = self._held.popitem()
            self._work_done()
            if not (kind is SaveNow and self.stop_requested):  # a stop that saves serves it
                self._tell(reply, f"the run stopped before {_WHAT[kind]} was served")
        while self._deferred:
            request, reply = self._deferred.popleft()
            if isinstance(request, WORK):
                self._work_done()
            if not isinstance(request, AskNextTokens):
                self._tell(reply, f"the run stopped before {_WHAT.get(type(request), request.name)} was served")
        while self._jobs:
            job = self._jobs.popleft()
            self._work_done()
            with contextlib.suppress(Exception):
                job.pieces.close()  # a generator: its cleanup finishes the sample
            self._tell(job.reply, f"the run stopped before {job.what} was done")

    def _apply(self, request: Request, reply: Reply | None = None) -> bool:
        """Carry out one request; False when the loop must look at its state before any more. A
        request that fails is told to whoever asked, and training goes on; only a device out of
        memory goes to the run's own handling (Trainer.run: it saves and ends)."""
        try:
            return self._carry_out(request, reply)
        except Exception as e:
            if isinstance(request, (SampleNow, Prompt)):  # failed before its job was queued: no job counts it
                self._work_done()
            if is_out_of_memory(e):
                raise
            self._tell(reply, f"{_WHAT.get(type(request), request.name)} failed: {_describe(e)}; training goes on")
            return self.state != "error"
        finally:
            if isinstance(request, (SaveNow, EvaluateNow)):  # a sample or prompt is work until its job ends
                self._work_done()

    def _carry_out(self, request: Request, reply: Reply | None) -> bool:
        match request:
            case Pause() | TogglePause() if not self.paused:
                if not self._flush_progress():
                    return False
                self.paused = True
                self._set_state("paused")
            case Pause():
                pass
            case Resume() | TogglePause():
                if self.paused:
                    self.paused = False
                    self.last_report = time.perf_counter()
                    self._set_state("training")
            case Stop(save=save, unattended=unattended):
                self.stop_requested = save
                if unattended:
                    self.pause_on_save_error = False
                return False
            case SaveNow():
                if not self._flush_progress():
                    return False
                self._save(LATEST)
            case SampleNow():
                self._jobs.append(_Job(self._sample_pieces(prompt="", source="live"), reply, "the sample"))
            case EvaluateNow():
                if not self._flush_progress():
                    return False
                self._evaluate()
            case SetTemperature(temperature=temperature):
                self.temperature = self._lowest_temperature(temperature, reply)
                self.emit(SettingsChanged(self.temperature, self.config.early_stop))
            case AskNextTokens():
                self._serve_typing()
            case SetEarlyStop(evaluations=evaluations):
                self.config.early_stop = evaluations  # saved with the config: a resumed run keeps it
                self.emit(SettingsChanged(self.temperature, evaluations))
                self.emit(Notice(f"early stop after {plural(evaluations, 'evaluation')} without a new best"
                                 if evaluations else "early stop off"))
            case SetSampleInterval(seconds=seconds):
                self.config.sample_interval = seconds  # saved with the config: a resumed run keeps it
                self.next_sample_at = time.monotonic() + seconds
                self.emit(Notice(f"a live sample every {seconds:g} s" if seconds else "live samples off"))
            case Prompt(text=text, length=length, temperature=None):
                pieces = self._sample_pieces(prompt=text, source="prompt", length=length)
                self._jobs.append(_Job(pieces, reply, "the prompt's continuation"))
            case Prompt(text=text, length=length, temperature=temperature) if temperature is not None:
                pieces = self._sample_pieces(prompt=text, source="temperatures", length=length,
                                             temperature=self._lowest_temperature(temperature, reply))
                self._jobs.append(_Job(pieces, reply, "the prompt's continuation"))
        return self.state != "error"

    def _lowest_temperature(self, temperature: float, reply: Reply | None) -> float:
        """A temperature under MIN_TEMPERATURE raised to it, and the asker told."""
        if temperature >= MIN_TEMPERATURE:
            return temperature
        self._tell(reply, f"temperature {temperature:g} is below {MIN_TEMPERATURE:g}, the lowest this run samples "
                          f"at (lower is greedy sampling already): {MIN_TEMPERATURE:g} is used", "information")
        return MIN_TEMPERATURE


_WHAT: dict[type[Request], str] = {
    SaveNow: "the save", SampleNow: "the sample", EvaluateNow: "the evaluation", Prompt: "the prompt",
    SetTemperature: "the temperature", AskNextTokens: "the next tokens", SetEarlyStop: "early stop"}
_A: dict[type[Request], str] = {SaveNow: "a save", EvaluateNow: "an evaluation"}


def _describe(error: Exception) -> str:
    """A failure in a line: the engine's own errors say what to do; anything else, what it was."""
    return str(error) if isinstance(error, CharRNNError) else f"{type(error).__name__}: {str(error)[:200]}"
