"""Asks whether to save before quitting when there are unsaved steps."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class QuitScreen(ModalScreen[str]):
    """Dismisses with "save", "discard" or "cancel"."""

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
            yield Static(f"{self.unsaved_steps:,} steps since the last checkpoint.", markup=False)
            yield Static("Save a checkpoint before quitting?  [y] save  [n] don't  [esc] cancel", markup=False)

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)
