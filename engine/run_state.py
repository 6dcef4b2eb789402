"""A run as its events tell it: the one fold of the event stream, in bounded memory.

Three keep one: the run's server, for the life of the run, to welcome a client that attaches late
(engine/serve/server.py, RunRecord); each client, for what its callers read (engine/serve/client.py);
and the app, whose RunView draws from one (tui/run_view.py). They differ only in what they add
around it, never in a default or in what an event does. An event from a peer has had its fields
checked by type (protocol.event_from_dict); the fold checks again the fields it keeps (a number
that is not one, words that are not a string), so that no event of the right class can break it.
No torch here.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, overload

from charrnn_tui.engine import events as ev
from charrnn_tui.engine.config import TrainConfig
from charrnn_tui.engine.history import LossHistory, add_time_point, thin_validation
from charrnn_tui.engine.report_history import FIELDS as REPORT_FIELDS
from charrnn_tui.engine.report_history import ReportHistory

MAX_SAMPLES = 60  # samples kept, finished or not: the app's panel shows them; a welcome replays fewer
DEFAULT_TEMPERATURE = TrainConfig.temperature  # until the run says (a run whose config says none samples at it)


@dataclass(eq=False)
class Sample:
    sample_id: int
    step: int
    prompt: str
    temperature: float
    source: str  # as SampleStarted's, or "earlier": one the run kept from before it was resumed
    text: str = ""
    notes: tuple[str, ...] = ()
    done: bool = False
    probs: tuple[float, ...] = ()  # the model's probability of each token (engine/events.py SampleText)
    token_lengths: tuple[int, ...] = ()  # empty: one character a token
    longest_copy: int | None = None  # None: not checked (yet)
    copies: tuple[tuple[int, int], ...] = ()  # [start, end) spans of text copied from the corpus


@dataclass(eq=False)
class RunState:
    """What a client that had watched the run from the start would know of it. `apply` folds in one
    event and returns the sample it touched, if any."""

    info: ev.RunInfo | None = None
    state: str = "starting"  # as StateChanged's
    reason: str = ""
    error: str = ""  # the reason given with the state "error" (a run that fails ends); empty in any other
    step: int = 0
    progress: ev.Progress | None = None  # the last report (epoch, speed, rate... below)
    gpu: tuple[int, int, int | None] | None = None  # utilisation %, memory used, total: the last NVML reading
    temperature: float = DEFAULT_TEMPERATURE
    early_stop: int | None = None  # evaluations without a new best that end the run; None: never
    history: LossHistory = field(default_factory=LossHistory)  # the training losses of the whole run, bounded
    timeline: list[tuple[int, float]] = field(default_factory=list)  # (step, training seconds), thinned
    reports: ReportHistory = field(default_factory=ReportHistory)  # speed, rate, CPU, memory, GPU, binned
    best_train_loss: float | None = None
    val_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, nats), thinned
    best_val: float | None = None
    best_step: int = 0  # the step best.pt holds
    overfitting_since: int | None = None
    last_val_bits: float | None = None
    evaluated: ev.Evaluated | None = None  # the last evaluation
    validating: ev.Validating | None = None  # an evaluation under way, and how far it is
    saved_step: int = 0
    saved_path: str = ""  # of the last latest.pt saved; empty: none since the run (re)started
    saved_at: float | None = None
    samples: dict[int, Sample] = field(default_factory=dict)  # the latest MAX_SAMPLES, oldest first

    # What the fold keeps of an event's words: the words (anything else, nothing). The app's view
    # keeps them printable instead, since it draws from itself alone.
    @staticmethod
    def _text_line(text: object) -> str:
        return text if isinstance(text, str) else ""

    @staticmethod
    def _text_block(text: object) -> str:
        return text if isinstance(text, str) else ""

    @staticmethod
    def _run_info(info: ev.RunInfo) -> ev.RunInfo:
        return info

    # ---- read from the last report ---------------------------------------------------------------
    @property
    def epoch(self) -> float:
        return self.progress.epoch if self.progress else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.progress.tokens_per_s if self.progress else 0.0

    @property
    def lr(self) -> float | None:
        return self.progress.lr if self.progress else None  # until the first report

    @property
    def train_seconds(self) -> float:
        return self.progress.train_seconds if self.progress else 0.0

    @property
    def eta_seconds(self) -> float | None:
        return self.progress.eta_seconds if self.progress else None

    @property
    def epoch_eta_seconds(self) -> float | None:
        return self.progress.epoch_eta_seconds if self.progress else None

    @property
    def memory_bytes(self) -> int | None:
        return self.progress.memory_bytes if self.progress else None

    @property
    def first_train_loss(self) -> float | None:
        return self.history.first

    @property
    def unsaved_steps(self) -> int:
        return max(0, self.step - self.saved_step)

    @property
    def learning(self) -> bool:
        """Whether the steps change the weights: a learning rate of 0 makes no update (before the
        first report there is no rate yet)."""
        return self.lr is None or self.lr > 0

    # ---- the fold ----------------------------------------------------------------------------------
    def apply(self, event: ev.Event) -> Sample | None:
        if isinstance(event, ev.Started):
            self._started(event)
        elif isinstance(event, ev.Progress):
            self._progress(event)
        elif isinstance(event, ev.Evaluated):
            if _whole(event.step) and _number(event.nats, None) is not None:
                # an attach's welcome repeats the last one after the history that holds it
                if not self.val_losses or self.val_losses[-1][0] != event.step:
                    self.val_losses = thin_validation([*self.val_losses, (event.step, float(event.nats))])
                self.best_val, self.last_val_bits = _number(event.best_nats, None), _number(event.bits, None)
                self.best_step = event.best_step if _whole(event.best_step) else 0
                self.overfitting_since = event.overfitting_since if _whole(event.overfitting_since) else None
                self.evaluated, self.validating = event, None
        elif isinstance(event, ev.Validating):
            self.validating = event
        elif isinstance(event, ev.CheckpointSaved):
            if event.kind == "latest" and _whole(event.step):  # best.pt is not where the run goes on from
                self.saved_step, self.saved_path = event.step, self._text_line(event.path)
                self.saved_at = _number(event.saved_at, None)
        elif isinstance(event, ev.StateChanged):
            if isinstance(event.state, str):
                self.state, self.reason = self._text_line(event.state), self._text_line(event.reason)
                self.error = ("" if event.state != "error" else self.reason if isinstance(event.reason, str)
                              else "training failed")
        elif isinstance(event, ev.SettingsChanged):
            self.temperature = _number(event.temperature, self.temperature)
            if event.early_stop is None or _whole(event.early_stop):
                self.early_stop = event.early_stop
        elif isinstance(event, ev.SampleStarted):
            started = Sample(event.sample_id, event.step if _whole(event.step) else 0,
                             self._text_block(event.prompt), _number(event.temperature, 0.0), event.source,
                             notes=tuple(map(self._text_line, event.notes)))
            self._keep(started)
            return started
        elif isinstance(event, (ev.SampleText, ev.SampleFinished)):
            sample = self.samples.get(event.sample_id)
            if sample is None:
                return None
            if isinstance(event, ev.SampleText):
                sample.text += self._text_block(event.text)
                sample.probs += event.probs
                sample.token_lengths += event.token_lengths
            else:
                sample.text, sample.done = self._text_block(event.text), True
                sample.probs, sample.token_lengths = event.probs, event.token_lengths
                sample.longest_copy, sample.copies = event.longest_copy, event.copies
            return sample
        return None  # Notice, NextTokens: one client's business, not the run's

    def _started(self, event: ev.Started) -> None:
        """The run from its start: what it was, what it had done before it was resumed."""
        if not isinstance(event.info, ev.RunInfo):
            return
        info = self.info = self._run_info(event.info)
        config = info.config if isinstance(info.config, dict) else {}
        if _whole(info.resumed_step):  # one of another kind keeps the step known
            self.step = self.saved_step = info.resumed_step
        self.saved_path = ""
        self.saved_at = time.time() if self.step else None  # resumed from a checkpoint of that step
        self.temperature = _number(config.get("temperature", DEFAULT_TEMPERATURE), self.temperature)
        early_stop = config.get("early_stop")
        if early_stop is None or _whole(early_stop):
            self.early_stop = early_stop
        history = event.loss_history if isinstance(event.loss_history, dict) else {}
        self.history = _loss_history(history)
        self.best_train_loss = min(self.history.binned()[2], default=None)
        self.timeline = _timeline(history.get("timeline"))
        self.reports = _report_history(event.reports)
        self.progress = self.gpu = self.evaluated = self.validating = None
        self.val_losses = thin_validation([(s, v) for s, v in event.val_history])
        if self.val_losses:
            self.best_step, self.best_val = min(self.val_losses, key=lambda p: p[1])
            self.last_val_bits = self.val_losses[-1][1] / math.log(2)
        else:
            self.best_step, self.best_val, self.last_val_bits = 0, None, None
        self.overfitting_since = None
        self.samples = {}
        earlier = event.samples[-MAX_SAMPLES:]
        for i, (step, text) in enumerate(earlier):
            sample_id = i - len(earlier)  # negative, the newest -1: from before the run was resumed
            self.samples[sample_id] = Sample(sample_id, step if _whole(step) else 0, "", 0.0, "earlier",
                                             self._text_block(text), done=True)

    def _progress(self, event: ev.Progress) -> None:
        if not _whole(event.step):
            return
        self.progress, self.step = event, event.step
        if event.gpu_utilisation is not None:  # a report without a reading keeps the last one
            self.gpu = (event.gpu_utilisation, event.gpu_memory_used or 0, event.gpu_memory_total)
        losses = event.losses
        if losses:
            self.history.extend(losses)
            low = min(losses)
            self.best_train_loss = low if self.best_train_loss is None else min(self.best_train_loss, low)
        if losses or not self.timeline:  # a report with no new step (paused) adds no time point, but the first
            self.timeline = add_time_point(self.timeline, event.step, event.train_seconds)
        if losses:  # a welcome's report repeats the last one, which the welcome's history holds
            self.reports.add(event.step, {name: _number(getattr(event, name), None) for name in REPORT_FIELDS})

    def _keep(self, sample: Sample) -> None:
        self.samples[sample.sample_id] = sample
        while len(self.samples) > MAX_SAMPLES:  # one that failed half-way never finishes: it goes too
            self.samples.pop(next(iter(self.samples)))


def _loss_history(data: dict[str, Any]) -> LossHistory:
    """The history a Started carries (LossHistory.to_dict), or an empty one (a fresh run's is one too)."""
    if data.get("means") is None:
        return LossHistory()
    try:
        return LossHistory.from_dict(data)
    except (KeyError, TypeError, ValueError):
        return LossHistory()


def _report_history(data: Any) -> ReportHistory:
    """The history a Started carries (ReportHistory.to_dict), or an empty one (a run's own start's)."""
    if not isinstance(data, dict) or "steps" not in data:
        return ReportHistory()
    try:
        return ReportHistory.from_dict(data)
    except (KeyError, TypeError, ValueError):
        return ReportHistory()


def _timeline(points: Any) -> list[tuple[int, float]]:
    try:
        return [(int(s), float(t)) for s, t in points or ()]
    except (TypeError, ValueError):
        return []


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@overload
def _number(value: Any, default: float) -> float: ...
@overload
def _number(value: Any, default: None) -> float | None: ...
def _number(value: Any, default: float | None) -> float | None:
    """A finite number as a float, else `default`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):
            if math.isfinite(float(value)):
                return float(value)
    return default
