"""The control plane: requests from other threads (a UI, the run's server), applied by the training
loop between steps, so that only the loop's thread ever touches the model."""

from __future__ import annotations

import math
import queue
import threading
import time
from typing import Any

from .cowrite import MAX_TOP
from .events import Notice, SettingsChanged
from .runs import LATEST

# Requests that cost training time (a sample, a validation pass, a save); past this many waiting,
# more are refused, so that a flood of them (a stuck key, a misbehaving client) cannot stall the run.
MAX_QUEUED_WORK = 8
MAX_PER_BOUNDARY = 16  # requests applied between two steps; the rest wait for the next boundary
WORK = frozenset({"save", "sample", "evaluate", "prompt"})
MAX_PROMPT_CHARS = 10_000
MAX_PROMPT_LENGTH = 10_000  # tokens a prompt may ask for
MAX_TEMPERATURE = 10.0
MAX_EARLY_STOP = 10_000
TYPING_PAUSE = 30.0  # seconds after a keystroke during which evaluations and samples answer keystrokes
TYPING_CHUNK = 32  # time steps per evaluation call meanwhile (an answer waits for one call at most)


class RequestRefused(ValueError):
    """A request the run will not take now (too many waiting, too large); its text says why."""


class Controls:
    """Request methods, safe to call from any thread, and the loop's side that serves them.

    Mixed into Trainer: the handlers below act on its state (paused, temperature, the saves and
    samples it knows how to make)."""

    def _init_controls(self) -> None:
        # SimpleQueue: its put is reentrant, so a signal handler may call stop() even while the loop
        # is inside get_nowait() (a Queue would deadlock on its own lock there).
        self._requests: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._queued_work = 0
        self._work_lock = threading.Lock()
        self.paused = False
        self.stop_requested: bool | None = None  # None: keep going; else whether to save
        self._typing: tuple[str, int] | None = None  # the latest text to expect after; older ones are moot
        self.typed_at = -math.inf  # time.monotonic() of the last keystroke answered

    # ---- requests: any thread -----------------------------------------------------------------
    def pause(self) -> None:
        self._put("pause")

    def resume(self) -> None:
        self._put("resume")

    def toggle_pause(self) -> None:
        self._put("toggle_pause")

    def stop(self, save: bool = True, unattended: bool = False) -> None:
        """`unattended`: nobody is left to retry a failed save (the terminal or the parent has gone),
        so the run ends even then, rather than pausing as it does for a UI."""
        self._put("stop", (bool(save), bool(unattended)))

    def save_now(self) -> None:
        self._put("save")

    def sample_now(self) -> None:
        self._put("sample")

    def evaluate_now(self) -> None:
        self._put("evaluate")

    def set_temperature(self, temperature: float) -> None:
        self._put("temperature", float(temperature))

    def set_early_stop(self, evaluations: int | None) -> None:
        """End the run after this many evaluations without a new best (None: never), from now on."""
        if evaluations is not None and not 1 <= evaluations <= MAX_EARLY_STOP:
            raise RequestRefused(f"early stop takes 1 to {MAX_EARLY_STOP:,} evaluations, or none")
        self._put("early_stop", evaluations)

    def prompt(self, text: str, length: int | None = None, temperature: float | None = None) -> None:
        """Continue `text`; at `temperature` instead of the run's when given (the app's comparison of
        temperatures: its samples are marked as such, so viewers can tell them from prompts)."""
        if len(text) > MAX_PROMPT_CHARS or (length is not None and not 0 <= length <= MAX_PROMPT_LENGTH):
            raise RequestRefused(f"prompts are limited to {MAX_PROMPT_CHARS:,} characters and continuations to "
                                 f"{MAX_PROMPT_LENGTH:,} tokens")
        if temperature is not None and not 0 < temperature <= MAX_TEMPERATURE:
            raise RequestRefused(f"temperature must be above 0 and at most {MAX_TEMPERATURE:g}, not {temperature}")
        self._put("prompt", (str(text), length, None if temperature is None else float(temperature)))

    def next_tokens(self, text: str, top: int = 5) -> None:
        """What the model expects after `text` (a NextTokens event). Keystrokes come faster than
        steps: only the latest text waiting is answered."""
        if len(text) > MAX_PROMPT_CHARS or not 1 <= top <= MAX_TOP:
            raise RequestRefused(f"the text is limited to {MAX_PROMPT_CHARS:,} characters and top to 1-{MAX_TOP}")
        with self._work_lock:
            waiting = self._typing is not None
            self._typing = (str(text), int(top))
        if not waiting:
            self._requests.put(("next_tokens", None))

    def _serve_typing(self) -> None:
        """Answer the latest keystroke waiting. Called between steps, and also between the chunks of
        an evaluation or a sample while someone types, so that an answer never waits for those."""
        with self._work_lock:
            typing, self._typing = self._typing, None
        if typing is not None:
            self.typed_at = time.monotonic()
            self._expect(*typing)

    @property
    def typing_now(self) -> bool:
        return time.monotonic() - self.typed_at < TYPING_PAUSE

    def _put(self, name: str, arg: Any = None) -> None:
        """Queue a request; RequestRefused when too much work is waiting already."""
        if name in WORK:
            with self._work_lock:
                if self._queued_work >= MAX_QUEUED_WORK:
                    raise RequestRefused(f"busy: {self._queued_work} requests are waiting; {name} not taken")
                self._queued_work += 1
        self._requests.put((name, arg))

    # ---- the loop's side ---------------------------------------------------------------------
    def _serve_requests(self, block: bool) -> None:
        """Apply the requests waiting, at most MAX_PER_BOUNDARY (while paused, wait a little for one
        first): however fast they come, training goes on between them."""
        for _ in range(MAX_PER_BOUNDARY):
            try:
                name, arg = self._requests.get(timeout=0.05) if block else self._requests.get_nowait()
            except queue.Empty:
                return
            block = False
            if name in WORK:
                with self._work_lock:
                    self._queued_work -= 1
            if not self._apply(name, arg):
                return

    def _apply(self, name: str, arg: Any) -> bool:
        """Carry out one request; False when the loop must look at its state before any more."""
        if name == "pause" or (name == "toggle_pause" and not self.paused):
            if not self.paused:
                if not self._flush_progress():
                    return False
                self.paused = True
                self._set_state("paused")
        elif name in ("resume", "toggle_pause"):
            if self.paused:
                self.paused = False
                self.last_report = time.perf_counter()
                self._set_state("training")
        elif name == "stop":
            save, unattended = arg
            self.stop_requested = save
            if unattended:
                self.pause_on_save_error = False
            return False
        elif name == "save":
            if not self._flush_progress():
                return False
            self._save(LATEST)
        elif name == "sample":
            self._sample(prompt="", source="live")
        elif name == "evaluate":
            if not self._flush_progress():
                return False
            self._evaluate()
        elif name == "temperature":
            if math.isfinite(arg) and arg > 0:
                self.temperature = arg
                self.emit(SettingsChanged(self.temperature, self.config.early_stop))
            else:
                self.emit(Notice(f"temperature must be a positive number, not {arg}", "warning"))
        elif name == "next_tokens":
            self._serve_typing()
        elif name == "early_stop":
            self.config.early_stop = arg  # saved with the config: a resumed run keeps it
            self.emit(SettingsChanged(self.temperature, arg))
            self.emit(Notice(f"early stop after {arg} evaluations without a new best" if arg else "early stop off"))
        elif name == "prompt":
            text, length, temperature = arg
            if temperature is None:
                self._sample(prompt=text, source="prompt", length=length)
            else:
                self._sample(prompt=text, source="temperatures", length=length, temperature=temperature)
        return self.state != "error"
