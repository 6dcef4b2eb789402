"""Type a prefix, press Enter, and watch the model continue it. Up and down recall earlier prompts."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Static

from ..run_view import Sample
from ..sample_text import copy_note, sample_body


class PromptInput(Input):
    BINDINGS = [
        Binding("up", "history(-1)", "Earlier prompt", show=False),
        Binding("down", "history(1)", "Later prompt", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(placeholder="press p, type a prompt, Enter: the model continues it", **kwargs)
        self.history: list[str] = []
        self.position = 0

    def remember(self, text: str) -> None:
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self.position = len(self.history)

    def action_history(self, delta: int) -> None:
        if not self.history:
            return
        self.position = max(0, min(len(self.history), self.position + delta))
        self.value = self.history[self.position] if self.position < len(self.history) else ""
        self.cursor_position = len(self.value)


class PromptPanel(Vertical):
    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def compose(self) -> ComposeResult:
        yield PromptInput(id="prompt-input")
        with VerticalScroll(id="prompt-scroll"):
            yield Static(id="prompt-output", markup=False)

    def on_mount(self) -> None:
        self.border_title = "Prompt"
        self.sample_id: int | None = None
        self.shown: tuple[int, bool, bool] = (-1, False, False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value
        if not text.strip():
            return
        prompt_input = self.query_one(PromptInput)
        prompt_input.remember(text)
        prompt_input.value = ""
        self.post_message(self.Submitted(text))

    def show(self, sample: Sample, confidence: bool = False) -> None:
        """Show the latest continuation: the prompt in bold, then the text as it streams in."""
        state = (len(sample.text), sample.done, confidence)
        if sample.sample_id == self.sample_id and state == self.shown:
            return
        self.sample_id, self.shown = sample.sample_id, state
        text = Text()
        if sample.notes:
            text.append("(" + "; ".join(sample.notes) + ")\n", style="dim yellow")
        text.append(sample.prompt, style="bold")
        text.append_text(sample_body(sample, confidence))
        if not sample.done:
            text.append(" ...", style="dim")
        note, style = copy_note(sample)
        if note:
            text.append(f"  ({note})", style=style)
        self.query_one("#prompt-output", Static).update(text)
        self.query_one("#prompt-scroll", VerticalScroll).scroll_end(animate=False)
