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

The loop's side is generators of Actions: what the loop is to do (flush the progress, save, evaluate,
answer a keystroke, write a piece of a sample, change its state or settings, tell everyone). The loop
(Trainer.pull) does each and sends back what came of it, or throws back what it raised, so these
functions hold the queue, the budgets and the order of the work, and never call into the Trainer.
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
from typing import Any, TypeVar

from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.events import Event, Notice
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
    SetTemperature,
    Setting,
    Status,
    Stop,
    TogglePause,
)
from charrnn_tui.engine.run.batch_size import is_out_of_memory
from charrnn_tui.engine.run.run import Trained

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


# ---- what the loop is asked to do, and answers ------------------------------------------------
@dataclass(frozen=True)
class FlushProgress:
    """Report the steps not reported yet; answered False when that found a NaN and failed the run."""


@dataclass(frozen=True)
class SaveCheckpoint:
    """Write the latest checkpoint."""


@dataclass(frozen=True)
class Evaluate:
    """A validation pass now."""


@dataclass(frozen=True)
class AnswerKeystroke:
    """The likeliest next tokens after `text` (engine/model/cowrite.py)."""

    text: str
    top: int


@dataclass(frozen=True)
class StartSample:
    """Begin a sample; answered with its pieces (a generator the loop made), which WritePiece writes."""

    prompt: str
    source: str
    length: int | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class WritePiece:
    """Write the next piece of a sample; answered False once it has finished."""

    pieces: Generator[None, None, None]


@dataclass(frozen=True)
class ChangeState:
    """The run is now paused, or training again (its report clock restarts: a pause is no report's)."""

    state: str


@dataclass(frozen=True)
class Announce:
    """An event for everyone (a Notice nobody in particular asked for)."""

    event: Event


@dataclass(frozen=True)
class Apply:
    """A request whose effect is the loop's own: a setting (temperature, early stop, the live samples'
    interval), or an unattended stop (a save that fails then ends the run rather than pausing it)."""

    request: Setting | Stop


Action = (FlushProgress | SaveCheckpoint | Evaluate | AnswerKeystroke | StartSample | WritePiece | ChangeState
          | Announce | Apply)
T = TypeVar("T")
Actions = Generator[Action, Any, T]  # what the loop sends back: see each action


@dataclass
class _Job:
    """A sample or prompt being written, a piece per turn."""

    pieces: Generator[None, None, None]
    reply: Reply | None
    what: str


class Controls:
    """The requests' queue, safe to put to from any thread, and the budgets and order by which the
    loop serves them. The Trainer holds one; it reads the run's progress (`trained`: the training
    time earned, the step named in messages) and is told when the run has failed (`failed`)."""

    def __init__(self, trained: Trained):
        self.trained = trained
        self.failed = False  # set by the loop when the run fails: nothing more is served
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

    # ---- the loop's side ---------------------------------------------------------------------
    def serve_typing(self) -> Actions[None]:
        """Answer the latest keystroke waiting. Served between steps, and also between the chunks of
        an evaluation or a live sample while someone types, so that an answer never waits for those.
        Its time is charged to the request budget; a failure is told to the typist."""
        with self._work_lock:
            typing, self._typing = self._typing, None
        if typing is not None:
            request, reply = typing
            self.typed_at = time.monotonic()
            with self.request_budget.spending():
                try:
                    yield AnswerKeystroke(request.text, request.top)
                except Exception as e:
                    if is_out_of_memory(e):
                        raise  # the run's own handling: it saves and ends (Trainer.run)
                    yield from self._tell(reply, f"no next tokens for the text typed: {_describe(e)}; training goes on")

    @property
    def typing_now(self) -> bool:
        return time.monotonic() - self.typed_at < TYPING_PAUSE

    def _work_done(self) -> None:
        with self._work_lock:
            self._queued_work -= 1

    def _tell(self, reply: Reply | None, message: str, level: str = "warning") -> Actions[None]:
        """A message for whoever asked, or for everyone when nobody in particular did."""
        notice = Notice(message, level)
        if reply is None:
            yield Announce(notice)
            return
        with contextlib.suppress(Exception):  # a reply that fails only loses the message
            reply(notice)

    def serve(self, block: bool) -> Actions[None]:
        """Between two steps: apply the requests waiting (at most MAX_PER_BOUNDARY; while paused,
        wait a little for one first), but set aside those BUDGETED, and serve those while the budget
        allows; an evaluation or a save asked for (HELD_BACK) goes by work_budget instead. While
        paused there is no training to keep: one piece of work per turn, without the budget, so that
        resume or stop are still seen between pieces."""
        trained = self.trained.train_seconds
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
                if not (yield from self._take_work(request, reply)):
                    return
            elif not (yield from self._apply(request, reply)):
                return
        if self._held and (self.paused or self.work_budget.allows()) and not (yield from self._serve_held()):
            return
        while self._deferred or self._jobs:
            if not self.paused and not self.request_budget.allows():
                return  # the rest waits for training to earn the time
            if not (yield from self._serve_one()) or self.paused:
                return

    def _take_work(self, request: Request, reply: Reply | None) -> Actions[bool]:
        """An evaluation or a save asked for: served now while work_budget allows (or while paused:
        there is no training to keep), else held until it does; one asked for while another is held
        joins it. Its sender is told when it will come. False as _apply."""
        kind = type(request)
        if kind in self._held:
            self._work_done()  # the held one answers both: everyone sees its Evaluated or CheckpointSaved
            yield from self._tell(reply, self._held_message(kind, joined=True), "information")
            return True
        if self.paused or self.work_budget.allows():
            return (yield from self._serve_work(kind, reply))
        self._held[kind] = reply
        yield from self._tell(reply, self._held_message(kind, joined=False), "information")
        return True

    def _serve_held(self) -> Actions[bool]:
        """The evaluation or save held longest; False as _apply."""
        kind = next(iter(self._held))
        return (yield from self._serve_work(kind, self._held.pop(kind)))

    def _serve_work(self, kind: type[Request], reply: Reply | None) -> Actions[bool]:
        """Carry out an evaluation or a save asked for, charged to work_budget unless paused."""
        budget = self.work_budget
        start = budget.clock()
        with contextlib.nullcontext() if self.paused else budget.spending():
            carried_on = yield from self._apply(kind(), reply)
        took = budget.clock() - start
        self._work_last, self._work_took[kind] = (kind, self.trained.step, took), took
        return carried_on

    def _held_message(self, name: type[Request], joined: bool) -> str:
        """One line: why a kind of work waits, and for about how long (in training time, and the
        step), counting what is held before it at what it took last time."""
        budget = self.work_budget
        head = f"{_A[name]} is held already, and yours joins it" if joined else f"{name.described()} is held"
        why = f"evaluations and saves asked for get {budget.share:.0%} of the training time"
        if self._work_last is not None:
            kind, step, took = self._work_last
            why += f", and the last ({_A[kind]}, step {step:,}) took {took:.1f} s"
        if budget.share <= 0:
            return f"{head}: {why}; it follows when the run pauses or ends"
        ahead = list(self._held)
        ahead = ahead[:ahead.index(name)] if name in ahead else ahead
        wait = max(0.0, sum(self._work_took.get(k, 0.0) for k in ahead) - budget.credit) / budget.share
        step, trained = self.trained.step, self.trained.train_seconds
        near = f", near step {step + math.ceil(wait * step / trained):,}" if step > 0 and trained > 0 else ""
        return f"{head}: {why}; it follows after about {wait:.1f} s more training{near}"

    def _serve_one(self) -> Actions[bool]:
        """One request set aside or one piece of a sample under way, in turn (a keystroke does not
        wait for a long prompt, nor a prompt for a typist who never stops), charged to the budget.
        False when the loop must look at its state before any more."""
        with self.request_budget.spending():
            self._jobs_turn = not self._jobs_turn
            if self._deferred and not (self._jobs_turn and self._jobs):
                return (yield from self._apply(*self._deferred.popleft()))
            job = self._jobs.popleft()
            try:
                more = yield WritePiece(job.pieces)
            except Exception as e:
                self._work_done()
                if is_out_of_memory(e):
                    raise  # the run's own handling: it saves and ends (Trainer.run)
                yield from self._tell(job.reply, f"{job.what} failed: {_describe(e)}; training goes on")
            else:
                if more:
                    self._jobs.append(job)  # in turn with the others
                else:
                    self._work_done()
            return not self.failed

    def finish(self) -> Actions[None]:
        """Training is over (a stop condition): what was asked before is served, without a budget."""
        while self._held:
            if not (yield from self._serve_held()):
                return
        while self._deferred or self._jobs:
            if not (yield from self._serve_one()):
                return

    def drop(self) -> Actions[None]:
        """A stop: what was set aside is dropped, each asker told; samples under way end where
        they are (their viewers get what was written)."""
        while self._held:
            kind, reply = self._held.popitem()
            self._work_done()
            if not (kind is SaveNow and self.stop_requested):  # a stop that saves serves it
                yield from self._tell(reply, f"the run stopped before {kind.described()} was served")
        while self._deferred:
            request, reply = self._deferred.popleft()
            if isinstance(request, WORK):
                self._work_done()
            if not isinstance(request, AskNextTokens):
                what = request.described()
                yield from self._tell(reply, f"the run stopped before {what} was served")
        while self._jobs:
            job = self._jobs.popleft()
            self._work_done()
            with contextlib.suppress(Exception):
                job.pieces.close()  # a generator: its cleanup finishes the sample
            yield from self._tell(job.reply, f"the run stopped before {job.what} was done")

    def _apply(self, request: Request, reply: Reply | None = None) -> Actions[bool]:
        """Carry out one request; False when the loop must look at its state before any more. A
        request that fails is told to whoever asked, and training goes on; only a device out of
        memory goes to the run's own handling (Trainer.run: it saves and ends)."""
        try:
            return (yield from self._carry_out(request, reply))
        except Exception as e:
            if isinstance(request, (SampleNow, Prompt)):  # failed before its job was queued: no job counts it
                self._work_done()
            if is_out_of_memory(e):
                raise
            yield from self._tell(reply, f"{request.described()} failed: {_describe(e)}; "
                                         "training goes on")
            return not self.failed
        finally:
            if isinstance(request, (SaveNow, EvaluateNow)):  # a sample or prompt is work until its job ends
                self._work_done()

    def _carry_out(self, request: Request, reply: Reply | None) -> Actions[bool]:
        match request:
            case Pause() | TogglePause() if not self.paused:
                if not (yield FlushProgress()):
                    return False
                self.paused = True
                yield ChangeState("paused")
            case Pause():
                pass
            case Resume() | TogglePause():
                if self.paused:
                    self.paused = False
                    yield ChangeState("training")
            case Stop(save=save, unattended=unattended):
                self.stop_requested = save
                if unattended:
                    yield Apply(request)
                return False
            case SaveNow():
                if not (yield FlushProgress()):
                    return False
                yield SaveCheckpoint()
            case SampleNow():
                pieces = yield StartSample(prompt="", source="live")
                self._jobs.append(_Job(pieces, reply, "the sample"))
            case EvaluateNow():
                if not (yield FlushProgress()):
                    return False
                yield Evaluate()
            case SetTemperature(temperature=temperature):
                yield Apply(SetTemperature((yield from self._lowest_temperature(temperature, reply))))
            case AskNextTokens():
                yield from self.serve_typing()
            case Setting():
                yield Apply(request)
            case Prompt(text=text, length=length, temperature=None):
                pieces = yield StartSample(prompt=text, source="prompt", length=length)
                self._jobs.append(_Job(pieces, reply, "the prompt's continuation"))
            case Prompt(text=text, length=length, temperature=temperature) if temperature is not None:
                lowest = yield from self._lowest_temperature(temperature, reply)
                pieces = yield StartSample(prompt=text, source="temperatures", length=length, temperature=lowest)
                self._jobs.append(_Job(pieces, reply, "the prompt's continuation"))
        return not self.failed

    def _lowest_temperature(self, temperature: float, reply: Reply | None) -> Actions[float]:
        """A temperature under MIN_TEMPERATURE raised to it, and the asker told."""
        if temperature >= MIN_TEMPERATURE:
            return temperature
        yield from self._tell(reply, f"temperature {temperature:g} is below {MIN_TEMPERATURE:g}, the lowest this run "
                                     f"samples at (lower is greedy sampling already): {MIN_TEMPERATURE:g} is used",
                              "information")
        return MIN_TEMPERATURE


_A: dict[type[Request], str] = {SaveNow: "a save", EvaluateNow: "an evaluation"}


def _describe(error: Exception) -> str:
    """A failure in a line: the engine's own errors say what to do; anything else, what it was."""
    return str(error) if isinstance(error, CharRNNError) else f"{type(error).__name__}: {str(error)[:200]}"
