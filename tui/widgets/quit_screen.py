"""Asks whether to save before stopping the run when there are unsaved steps (`d` detaches instead)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from charrnn_tui.engine.counts import plural


class QuitScreen(ModalScreen[str]):
    """Dismisses with "save", "discard" or "cancel"."""

    BINDING_GROUP_TITLE = "Quitting"
    BINDINGS = [
        Binding("y,enter", "choose('save')", "Save and quit"),
        Binding("n", "choose('discard')", "Quit without saving"),
        Binding("escape,c", "choose('cancel')", "Cancel"),
    ]

    def __init__(self, unsaved_steps: int) -> None:
        super().__init__()
        self.unsaved_steps = unsaved_steps

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-dialog"):
            yield Static(f"Quitting stops the run; {plural(self.unsaved_steps, 'step')} since the last checkpoint.",
                         markup=False)
            yield Static("Save a checkpoint before stopping?  [y] save  [n] don't  [esc] cancel", markup=False)
            yield Static("(To leave it training instead, cancel and press d.)", markup=False)

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)
