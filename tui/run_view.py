"""What the screen shows, kept up to date from engine events: the run's one fold (engine/run_state.py)
and what only the screen needs. Plain Python: no widgets, no torch."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

from charrnn_tui.engine import events as ev
from charrnn_tui.engine.printable import printable, printable_line
from charrnn_tui.engine.run_state import MAX_SAMPLES, RunState, Sample

__all__ = ["MAX_ERRORS", "MAX_SAMPLES", "TEMPERATURES", "TRAIN_WINDOW", "RunView", "Sample", "step_temperature"]

TRAIN_WINDOW = 400  # recent training losses (the label shows the mean of the last 20)
MAX_ERRORS = 20

# Temperatures that + and - step through: fine steps where it matters, coarser above 1.
TEMPERATURES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0)


def step_temperature(current: float, direction: int) -> float:
    if direction > 0:
        return next((t for t in TEMPERATURES if t > current + 1e-9), TEMPERATURES[-1])
    return next((t for t in reversed(TEMPERATURES) if t < current - 1e-9), TEMPERATURES[0])


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
    words: dict[str, Any] = {f.name: _line(getattr(info, f.name)) for f in dataclasses.fields(info)
                             if f.name != "run_dir" and isinstance(getattr(info, f.name), str)}
    return dataclasses.replace(info, **words)


@dataclass(eq=False)
class RunView(RunState):
    """The run as engine/run_state.py folds it, with what only the screen needs besides: the errors
    to list, a version that says when to redraw, and every word made printable as it is folded in."""

    errors: list[str] = field(default_factory=list)
    version: int = 0  # bumped on every change, so widgets redraw only when needed

    _text_line = staticmethod(_line)
    _text_block = staticmethod(_block)
    _run_info = staticmethod(_shown_info)

    @property
    def unit(self) -> str:
        return "tokens" if self.info is not None and self.info.token_kind == "word" else "chars"

    @property
    def train_losses(self) -> list[float]:
        """The latest TRAIN_WINDOW training losses, oldest first."""
        recent = self.history.recent
        return list(itertools.islice(recent, max(0, len(recent) - TRAIN_WINDOW), None))

    def apply(self, event: ev.Event) -> Sample | None:
        """Fold one engine event in; returns the sample it touched, if any."""
        self.version += 1
        if isinstance(event, ev.Notice):
            if event.level == "error":
                self.errors = [*self.errors[-(MAX_ERRORS - 1):], _line(event.message)]
            return None
        return super().apply(event)
