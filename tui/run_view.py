"""What the screen shows, kept up to date from engine events. Plain Python: no widgets, no torch."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from dataclasses import dataclass, field

from charrnn_tui.engine import events as ev
from charrnn_tui.engine.history import LossHistory, add_time_point, thin_validation
from charrnn_tui.engine.printable import printable, printable_line

TRAIN_WINDOW = 400  # recent training losses (the label shows the mean of the last 20)
MAX_SAMPLES = 60
MAX_ERRORS = 20

# Temperatures that + and - step through: fine steps where it matters, coarser above 1.
TEMPERATURES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0)


def step_temperature(current: float, direction: int) -> float:
    if direction > 0:
        return next((t for t in TEMPERATURES if t > current + 1e-9), TEMPERATURES[-1])
    return next((t for t in reversed(TEMPERATURES) if t < current - 1e-9), TEMPERATURES[0])


@dataclass
class Sample:
    sample_id: int
    step: int
    prompt: str
    temperature: float
    source: str
    text: str = ""
    notes: tuple[str, ...] = ()
    done: bool = False
    probs: tuple[float, ...] = ()  # the model's probability of each token (engine/events.py SampleText)
    token_lengths: tuple[int, ...] = ()  # empty: one character a token
    longest_copy: int | None = None  # None: not checked (yet)
    copies: tuple[tuple[int, int], ...] = ()  # [start, end) spans of text copied from the corpus


@dataclass
class RunView:
    info: ev.RunInfo | None = None
    state: str = "starting"
    reason: str = ""
    step: int = 0
    epoch: float = 0.0
    tokens_per_s: float = 0.0
    lr: float | None = None  # until the first progress report
    train_seconds: float = 0.0
    eta_seconds: float | None = None
    epoch_eta_seconds: float | None = None
    memory_bytes: int | None = None
    gpu: tuple[int, int, int | None] | None = None  # utilisation %, memory used, total (NVML)
    temperature: float = 0.8
    early_stop: int | None = None
    train_losses: deque[float] = field(default_factory=lambda: deque(maxlen=TRAIN_WINDOW))
    history: LossHistory = field(default_factory=LossHistory)  # the whole run, bounded (the chart's)
    timeline: list[tuple[int, float]] = field(default_factory=list)  # (step, training seconds), thinned
    first_train_loss: float | None = None
    best_train_loss: float | None = None
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    best_val: float | None = None
    best_step: int = 0
    overfitting_since: int | None = None
    last_val_bits: float | None = None
    validating: ev.Validating | None = None  # an evaluation under way, and how far it is
    saved_step: int = 0
    saved_path: str = ""
    saved_at: float | None = None
    samples: dict[int, Sample] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    version: int = 0  # bumped on every change, so widgets redraw only when needed

    @property
    def unsaved_steps(self) -> int:
        return max(0, self.step - self.saved_step)

    @property
    def learning(self) -> bool:
        """Whether the steps change the weights: a learning rate of 0 makes no update (before the
        first report there is no rate yet)."""
        return self.lr is None or self.lr > 0

    @property
    def unit(self) -> str:
        return "tokens" if self.info is not None and self.info.token_kind == "word" else "chars"

    def apply(self, event: ev.Event) -> Sample | None:
        """Fold one engine event in; returns the sample it touched, if any."""
        self.version += 1
        if isinstance(event, ev.Started):
            if isinstance(event.info, ev.RunInfo):  # the wire checks fields by name only
                self._started(event)
        elif isinstance(event, ev.Progress):
            self.step, self.epoch, self.lr = event.step, event.epoch, event.lr
            self.tokens_per_s, self.train_seconds = event.tokens_per_s, event.train_seconds
            self.eta_seconds, self.epoch_eta_seconds = event.eta_seconds, event.epoch_eta_seconds
            self.memory_bytes = event.memory_bytes
            if event.gpu_utilisation is not None:
                self.gpu = (event.gpu_utilisation, event.gpu_memory_used or 0, event.gpu_memory_total)
            self._train_points(event.losses)
            self.history.extend(event.losses)
            if event.losses or not self.timeline:
                self.timeline = add_time_point(self.timeline, event.step, event.train_seconds)
        elif isinstance(event, ev.Evaluated):
            if not self.val_losses or self.val_losses[-1][0] != event.step:  # an attach's welcome repeats one
                self.val_losses = thin_validation([*self.val_losses, (event.step, event.nats)])
            self.best_val, self.last_val_bits = event.best_nats, event.bits
            self.validating = None
            self.best_step, self.overfitting_since = event.best_step, event.overfitting_since
        elif isinstance(event, ev.Validating):
            self.validating = event
        elif isinstance(event, ev.CheckpointSaved):
            if event.kind == "latest":
                self.saved_step, self.saved_path, self.saved_at = event.step, _line(event.path), event.saved_at
        elif isinstance(event, ev.StateChanged):
            self.state, self.reason = _line(event.state), _line(event.reason)
        elif isinstance(event, ev.SettingsChanged):
            if isinstance(event.temperature, (int, float)) and math.isfinite(event.temperature):
                self.temperature = float(event.temperature)
            if event.early_stop is None or isinstance(event.early_stop, int):
                self.early_stop = event.early_stop
        elif isinstance(event, ev.Notice):
            if event.level == "error":
                self.errors = [*self.errors[-(MAX_ERRORS - 1):], _line(event.message)]
        elif isinstance(event, ev.SampleStarted):
            step = event.step if isinstance(event.step, int) else 0  # formatted as numbers when shown
            temperature = float(event.temperature) if isinstance(event.temperature, (int, float)) else 0.0
            sample = Sample(event.sample_id, step, _block(event.prompt), temperature, event.source,
                            notes=tuple(map(_line, event.notes)))
            self.samples[event.sample_id] = sample
            while len(self.samples) > MAX_SAMPLES:
                self.samples.pop(next(iter(self.samples)))
            return sample
        elif isinstance(event, (ev.SampleText, ev.SampleFinished)):
            sample = self.samples.get(event.sample_id)
            if sample is not None:
                if isinstance(event, ev.SampleText):
                    sample.text += _block(event.text)
                    sample.probs += event.probs
                    sample.token_lengths += event.token_lengths
                else:
                    sample.text, sample.done = _block(event.text), True
                    sample.probs, sample.token_lengths = event.probs, event.token_lengths
                    sample.longest_copy, sample.copies = event.longest_copy, event.copies
            return sample
        return None

    def _started(self, event: ev.Started) -> None:
        info = self.info = _shown_info(event.info)
        self.step = self.saved_step = info.resumed_step
        self.temperature = float(info.config.get("temperature", self.temperature))
        self.early_stop = info.config.get("early_stop")
        if info.resumed_step:
            self.saved_at = time.time()
        self._train_points(event.loss_history.get("recent", ()))
        if event.loss_history.get("means") is not None:
            self.history = LossHistory.from_dict(event.loss_history)
        self.timeline = [(int(s), float(t)) for s, t in event.loss_history.get("timeline", [])]
        if event.loss_history.get("first") is not None:
            self.first_train_loss = event.loss_history["first"]
            self.best_train_loss = min(event.loss_history["lows"], default=self.best_train_loss)
        self.val_losses = list(event.val_history)
        if self.val_losses:
            self.best_step, self.best_val = min(self.val_losses, key=lambda p: p[1])
            self.last_val_bits = self.val_losses[-1][1] / math.log(2)
        for i, (step, text) in enumerate(event.samples):
            sample_id = -len(event.samples) + i  # negative: from an earlier session
            self.samples[sample_id] = Sample(sample_id, step, "", 0.0, "earlier", _block(text), done=True)

    def _train_points(self, losses) -> None:
        if not losses:
            return
        if self.first_train_loss is None:
            self.first_train_loss = losses[0]
        low = min(losses)
        self.best_train_loss = low if self.best_train_loss is None else min(self.best_train_loss, low)
        self.train_losses.extend(losses)


# Every string the view keeps from an event is made printable as it is folded in: the app draws from
# the view alone, and an event's text is the run's (a peer's prompt, the model's sample, a corpus's
# name), escape sequences and all. The stand-ins are one character each, so a sample's token lengths
# and copied spans still fit its text.
def _block(text: object) -> str:
    """Text shown as a block (a sample, a prompt): newlines and tabs kept."""
    return printable(text) if isinstance(text, str) else ""


def _line(text: object) -> str:
    return printable_line(text) if isinstance(text, str) else ""


def _shown_info(info: ev.RunInfo) -> ev.RunInfo:
    """The run's description with its words printable; run_dir is kept as it is, since it names
    the folder (for hints and for telling runs apart), and is made printable where it is shown."""
    words = {f.name: _line(getattr(info, f.name)) for f in dataclasses.fields(info)
             if f.name != "run_dir" and isinstance(getattr(info, f.name), str)}
    return dataclasses.replace(info, **words)
