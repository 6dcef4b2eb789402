"""Type a prefix, press Enter, and watch the model continue it. Up and down recall earlier prompts.

While typing, the line under the prompt shows what the model expects next (asked on every
keystroke; the engine carries its state) and the typed text shaded by how likely the model found
each token, in the samples' confidence colours. Tab takes the highlighted suggestion. Down (or
ctrl+n, or shift+tab backwards) moves the highlight along the suggestions as in a completion menu:
while one is chosen, Enter takes it instead of sending the prompt, up moves back (past the first,
the choice is let go) and escape lets it go. Typing lets it go too. There is no key per rank: digits
are text, alt+digit reaches Textual as a printable character ("\x1b1" parses as "¡"), and ctrl+p
stays the command palette's."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Static

from charrnn_tui.engine import events as ev
from charrnn_tui.engine.printable import printable, printable_line

from ..run_view import Sample
from ..sample_text import confidence_style, copy_note, sample_body

TITLE_PROMPT_CHARS = 48  # of a prompt in the panel's title


class PromptInput(Input):
    BINDING_GROUP_TITLE = "The prompt"
    BINDINGS = [
        Binding("enter", "submit", "Send the prompt (or take the chosen suggestion)", show=False),
        Binding("up", "up", "Earlier prompt", show=False),
        Binding("down", "down", "Later prompt / choose a suggestion", show=False),
        Binding("tab", "accept", "Take suggestion", tooltip="Add the highlighted next token to the prompt"),
        Binding("ctrl+n", "choose(1)", "Next suggestion", show=False),
        Binding("shift+tab", "choose(-1)", "Previous suggestion", show=False),
        Binding("escape", "let_go", "Let the chosen suggestion go"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(placeholder="press p, type a prompt, Enter: the model continues it", **kwargs)
        self.history: list[str] = []
        self.position = 0
        self.draft = ""  # what was typed before recalling earlier prompts, given back at the bottom

    @property
    def panel(self) -> PromptPanel:
        parent = self.parent
        assert isinstance(parent, PromptPanel), "composed in a PromptPanel"
        return parent

    def remember(self, text: str) -> None:
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self.position = len(self.history)
        self.draft = ""

    def action_accept(self) -> None:
        self.panel.accept_suggestion()

    def action_choose(self, delta: int) -> None:
        self.panel.move_highlight(delta)

    def action_up(self) -> None:
        if self.panel.choosing:
            self.panel.step_choice(-1)
        else:
            self.recall(-1)

    def action_down(self) -> None:
        if self.panel.choosing or self.position >= len(self.history):
            self.panel.step_choice(1)
        else:
            self.recall(1)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "let_go":  # only while a suggestion is chosen; otherwise escape leaves the prompt
            return self.panel.choosing
        return super().check_action(action, parameters)

    def action_let_go(self) -> None:
        self.panel.let_go()

    def on_blur(self) -> None:
        if self.panel.choosing:  # a click elsewhere: the next Enter after p must send, not take
            self.panel.let_go()

    def recall(self, delta: int) -> None:
        """An earlier (-1) or later (+1) prompt; past the latest, the text that was being typed."""
        if not self.history:
            return
        if self.position >= len(self.history):
            self.draft = self.value
        self.position = max(0, min(len(self.history), self.position + delta))
        self.value = self.history[self.position] if self.position < len(self.history) else self.draft
        self.cursor_position = len(self.value)


class PromptPanel(Vertical):
    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Typed(Message):
        """The prompt's text changed: the app asks the engine what comes next."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sample_id: int | None = None
        self.shown: tuple[int, bool, bool] = (-1, False, False)
        self.expectation: ev.NextTokens | None = None  # the engine's answer for the text as it stands
        self.highlight = 0
        self._choosing = False

    def compose(self) -> ComposeResult:
        yield PromptInput(id="prompt-input")
        yield Static(id="suggestions", markup=False)
        with VerticalScroll(id="prompt-scroll"):
            yield Static(id="prompt-output", markup=False)

    def on_mount(self) -> None:
        self.border_title = "Prompt"
        # The newest text stays in view as it streams in and when the panel shrinks (leaving the
        # prompt), until the user scrolls back.
        self.query_one("#prompt-scroll", VerticalScroll).anchor()

    @property
    def choosing(self) -> bool:
        """A suggestion chosen with the arrows: Enter takes it, escape lets it go."""
        return self._choosing

    @choosing.setter
    def choosing(self, value: bool) -> None:
        if value != self._choosing:
            self._choosing = value
            self.query_one(PromptInput).refresh_bindings()  # the footer's escape changes meaning

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self.expectation is not None and self.expectation.text != event.value:
            self.highlight, self.choosing = 0, False
        prompt_input = self.query_one(PromptInput)
        if (prompt_input.position < len(prompt_input.history)
                and prompt_input.value != prompt_input.history[prompt_input.position]):
            prompt_input.position = len(prompt_input.history)  # an edited recall is the text being typed now
        self.post_message(self.Typed(event.value))

    def refresh_suggestions(self) -> None:
        if self.expectation is not None:
            self.query_one("#suggestions", Static).update(
                render_expectation(self.expectation, self.highlight, self.choosing))

    def show_expectation(self, expectation: ev.NextTokens) -> None:
        """What the model expects after the prompt, if the prompt still says what it was asked about."""
        if expectation.text != self.query_one(PromptInput).value:
            return  # an answer to an older keystroke
        suggested = self._suggested() if self.choosing else None
        chosen = suggested.top[self.highlight][0] if suggested is not None else None
        self.expectation = expectation
        tokens = [token for token, _ in expectation.top]
        if chosen is not None and chosen in tokens:
            self.highlight = tokens.index(chosen)  # training reorders the ranks: keep the token chosen
        elif chosen is not None:
            self.highlight, self.choosing = 0, False
        self.highlight = min(self.highlight, max(0, len(tokens) - 1))
        self.refresh_suggestions()

    def has_suggestions(self) -> bool:
        return self._suggested() is not None

    def _suggested(self) -> ev.NextTokens | None:
        """The expectation, where it has suggestions for the prompt as it is now."""
        expectation = self.expectation
        if expectation is not None and expectation.top and expectation.text == self.query_one(PromptInput).value:
            return expectation
        return None

    def move_highlight(self, delta: int) -> None:
        """ctrl+n / shift+tab: round the suggestions, choosing one."""
        suggested = self._suggested()
        if suggested is not None:
            self.highlight = (self.highlight + delta) % len(suggested.top)
            self.choosing = True
            self.refresh_suggestions()

    def step_choice(self, delta: int) -> None:
        """Down / up: the first down chooses the second suggestion (tab already takes the first);
        up from the first lets the choice go."""
        suggested = self._suggested()
        if suggested is None:
            return
        if self.choosing and self.highlight + delta < 0:
            self.let_go()
            return
        self.highlight = max(0, min(len(suggested.top) - 1, self.highlight + delta))
        self.choosing = True
        self.refresh_suggestions()

    def let_go(self) -> None:
        self.highlight, self.choosing = 0, False
        self.refresh_suggestions()

    def accept_suggestion(self) -> None:
        """Append the highlighted suggestion to the prompt (Tab, or Enter while one is chosen): at the
        end, where the model expects it, wherever the cursor is."""
        suggested = self._suggested()
        if suggested is None:
            return
        prompt_input = self.query_one(PromptInput)
        token = suggested.top[self.highlight][0]
        self.highlight, self.choosing = 0, False
        prompt_input.value += token
        prompt_input.cursor_position = len(prompt_input.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.choosing:  # Enter takes the chosen suggestion rather than sending the prompt
            if self.has_suggestions():
                self.accept_suggestion()
            else:
                self.let_go()
            return
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
        # The newest text is kept in view (anchored), so a continuation longer than the panel scrolls its prompt
        # away (4 rows at 80x24): the title keeps it.
        self.border_title = prompt_title(sample.prompt)


def prompt_title(prompt: str) -> Text:
    """The panel's title while it shows a continuation: "Prompt · " and the prompt, on one line; a long
    one by its end, which the continuation follows."""
    shown = printable_line(prompt)
    if len(shown) > TITLE_PROMPT_CHARS:
        shown = "\u2026" + shown[1 - TITLE_PROMPT_CHARS:]
    return Text(f"Prompt \u00b7 {shown}" if shown else "Prompt")


def visible(token: str) -> str:
    """A token as it can be read in a line: spaces and newlines shown, control characters as their
    stand-ins (engine/printable.py: one character each, so token lengths still fit)."""
    return printable(token).replace(" ", "\u2423").replace("\n", "\u23ce").replace("\t", "\u21e5")


def render_expectation(expectation: ev.NextTokens, highlight: int = 0, choosing: bool = False) -> Text:
    """The typed text shaded by the probability of each token (the first has no context to be
    judged by), then the likeliest next tokens with their percentages. While one is chosen with
    the arrows, the line says that Enter takes it."""
    line = Text(no_wrap=True, overflow="ellipsis")
    text, lengths = expectation.text, expectation.token_lengths
    if text and lengths and sum(lengths) == len(text):
        start = lengths[0]
        line.append(visible(text[:start]), style="bold")
        for prob, length in zip(expectation.probs, lengths[1:], strict=False):
            line.append(visible(text[start : start + length]), style=confidence_style(prob))
            start += length
        line.append("  ")
    line.append("enter takes: " if choosing else "next: ", style="dim")
    for rank, (token, prob) in enumerate(expectation.top):
        style = "reverse bold" if rank == highlight else "bold"
        line.append(visible(token), style=style)
        line.append(f" {prob:.0%}  ", style="dim")
    return line
