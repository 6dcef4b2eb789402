"""`?` (or F1): every key that works where it was pressed (the main screen, the prompt, the runs
screen...) and what it does, read from the bindings (tui/key_help.py). `escape` or `?` closes it."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..key_help import KeySection


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,f1", "dismiss(None)", "Close the help")]

    def __init__(self, sections: list[KeySection]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            yield Static("Keys here: escape or ? closes", id="help-title", markup=False)
            with VerticalScroll(id="help-keys"):
                yield Static(keys_table(self.sections), id="help-table")

    def on_mount(self) -> None:
        self.query_one("#help-keys").focus()  # up, down and page keys scroll a long list


def keys_table(sections: list[KeySection]) -> Table:
    """Two columns, the keys and what they do; each section under its title, a blank line between."""
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", no_wrap=True)
    table.add_column()
    for index, section in enumerate(sections):
        if index:
            table.add_row("", "")
        if section.title:
            table.add_row("", Text(section.title, style="bold underline"))
        for row in section.rows:
            table.add_row(Text(row.keys, style="bold"), Text(row.text))
    return table
