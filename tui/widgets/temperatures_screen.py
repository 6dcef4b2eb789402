"""One prefix continued at three temperatures, side by side (stacked when the terminal is narrow):
what temperature does to the same model, at the same moment of training."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical, VerticalScroll
from textual.events import Resize
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Static

from charrnn_tui.engine.printable import printable

from ..run_view import Sample
from ..sample_text import copy_note, sample_body

TEMPERATURES = (0.5, 1.0, 1.5)
SIDE_BY_SIDE_WIDTH = 120  # columns; narrower, the three are stacked


def column_id(temperature: float) -> str:
    return "t-" + f"{temperature:g}".replace(".", "_")


class TemperaturesScreen(ModalScreen[None]):
    """Shows what the engine sends back for its requests: `show` takes each sample of source
    "temperatures" whose prompt is this screen's prefix, the latest per temperature. `t` asks the
    app for three more (Again), which asks the engine."""

    class Again(Message):
        """Continue the prefix at the three temperatures again."""

        def __init__(self, prefix: str) -> None:
            super().__init__()
            self.prefix = prefix

    BINDING_GROUP_TITLE = "Three temperatures"
    BINDINGS = [
        Binding("escape,q", "dismiss(None)", "Close"),
        Binding("t", "again", "Again", tooltip="Continue the prefix again at the three temperatures"),
    ]

    def __init__(self, prefix: str, confidence: bool = False) -> None:
        super().__init__()
        self.prefix = prefix
        self.confidence = confidence
        self.shown: dict[float, Sample] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="temperatures-dialog"):
            shown = repr(self.prefix) if self.prefix else "a new line"
            yield Static(f"The same prefix, {shown}, at three temperatures: t again, escape closes",
                         id="temperatures-title", markup=False)
            with Container(id="temperatures-columns"):
                for t in TEMPERATURES:
                    with VerticalScroll(id=column_id(t), classes="temperature-column") as column:
                        column.border_title = f"T {t:g}"
                        yield Static("...", classes="temperature-text", markup=False)

    def on_mount(self) -> None:
        self._layout(self.app.size.width)

    def on_resize(self, event: Resize) -> None:
        self._layout(event.size.width)

    def _layout(self, width: int) -> None:
        self.set_class(width < SIDE_BY_SIDE_WIDTH, "-stacked")

    def action_again(self) -> None:
        self.shown.clear()
        for t in TEMPERATURES:
            self.query_one(f"#{column_id(t)} .temperature-text", Static).update("...")
        self.post_message(self.Again(self.prefix))

    def show(self, sample: Sample) -> None:
        if sample.source != "temperatures" or sample.prompt != printable(self.prefix):  # the view's is printable
            return
        temperature = min(TEMPERATURES, key=lambda t: abs(t - sample.temperature))
        if abs(temperature - sample.temperature) > 1e-6:
            return
        self.shown[temperature] = sample
        text = Text()
        text.append(sample.prompt, style="bold")
        text.append_text(sample_body(sample, self.confidence))
        if not sample.done:
            text.append(" ...", style="dim")
        note, style = copy_note(sample)
        if note:
            text.append(f"\n({note})", style=style)
        self.query_one(f"#{column_id(temperature)} .temperature-text", Static).update(text)
