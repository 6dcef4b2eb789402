"""Every key that works where the user is, and what it does, read from the bindings themselves so
that the help (`?`, tui/widgets/help_screen.py) cannot drift from them: a key added to a BINDINGS
list shows up, with show=False too, and a key that `check_action` turns off where the user is
(the single-key actions while the prompt has focus) does not.

A row is one action with all its keys ("p /"); its text is the binding's tooltip where it has one
(the longer text), else its description. Rows come in sections, one per title (BINDING_GROUP_TITLE)
of the classes that declare them, so PromptInput's own keys come apart from the editing keys it
inherits from Input; the focused widget's first, the app's last, and Textual's untitled ones
(focus, scrolling, copying) after all the titled ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual import actions
from textual.binding import ActiveBinding, Binding
from textual.dom import DOMNode
from textual.screen import Screen


@dataclass(frozen=True)
class KeyRow:
    keys: str  # as the footer shows them, "p /"
    text: str


@dataclass(frozen=True)
class KeySection:
    title: str | None
    rows: tuple[KeyRow, ...]


def context_bindings(screen: Screen) -> list[ActiveBinding]:
    """What each key does on `screen` now, as Textual dispatches it: the screen's active bindings (the
    focused widget's and its ancestors', the screen's, and the app's unless the screen is modal),
    where a modal screen adds the app's priority bindings, which Textual checks before any other
    and which Screen.active_bindings leaves out there."""
    active = dict(screen.active_bindings)
    if screen.is_modal:
        app = screen.app
        for key, binding in app._bindings:  # the app's bindings with its keymap: Textual has no public view
            _, action, parameters = actions.parse(binding.action)
            if binding.priority and app.check_action(action, parameters) is not False:
                active[key] = ActiveBinding(app, binding, True, binding.tooltip)
    return list(active.values())


# Where a binding is declared: its class's place in the node's __mro__, then its place in BINDINGS.
Where = tuple[int, int]


def key_sections(screen: Screen) -> list[KeySection]:
    """The keys of `screen` as it is now (what it has focused), in sections (see the module's doc),
    rows and keys in the order their classes declare them."""
    sections: dict[tuple[DOMNode, str | None], list[tuple[Where, Binding]]] = {}
    for active in context_bindings(screen):
        if active.binding.system:
            continue
        node, binding = active.node, active.binding
        owner, index = _declared_by(node, binding)
        sections.setdefault((node, _title(owner)), []).append(((type(node).__mro__.index(owner), index), binding))
    ordered = sorted(sections.items(), key=lambda section: _section_order(*section))
    return [KeySection(title, _rows(placed, screen.app.get_key_display)) for (_, title), placed in ordered]


def _section_order(section: tuple[DOMNode, str | None], placed: list[tuple[Where, Binding]]) -> tuple[bool, int, int]:
    """Titled before untitled; the focused widget before its ancestors; a class before its bases."""
    node, title = section
    return title is None, -len(node.ancestors), min(where for where, _ in placed)[0]


def _rows(placed: list[tuple[Where, Binding]], key_display: Callable[[Binding], str]) -> tuple[KeyRow, ...]:
    """One row per action, its keys together ("p /"), in the order they are declared; the text is
    the first one's."""
    by_action: dict[str, list[Binding]] = {}
    for _, binding in sorted(placed, key=lambda item: item[0]):
        by_action.setdefault(binding.action, []).append(binding)
    return tuple(KeyRow(" ".join(dict.fromkeys(map(key_display, bindings))),
                        bindings[0].tooltip or bindings[0].description) for bindings in by_action.values())


def _declared_by(node: DOMNode, binding: Binding) -> tuple[type, int]:
    """The most derived class of `node` whose own BINDINGS hold `binding`'s action (PromptInput's keys
    apart from the text editing keys it inherits from Input), and where in them: the binding's key
    there, else its action's first. A binding added at run time counts as the node's class's, last."""
    for cls in type(node).__mro__:
        own = list(Binding.make_bindings(cls.__dict__.get("BINDINGS", ())))
        same_action = [i for i, b in enumerate(own) if b.action == binding.action]
        if same_action:
            same_key = [i for i in same_action if own[i].key == binding.key]
            return cls, (same_key or same_action)[0]
    return type(node), 1_000_000


def _title(cls: type) -> str | None:
    title = getattr(cls, "BINDING_GROUP_TITLE", None)
    return title if isinstance(title, str) else None
