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


def key_sections(screen: Screen) -> list[KeySection]:
    """The keys of `screen` as it is now (what it has focused), in sections (see the module's doc),
    rows and keys in the order their class declares them."""
    get_key_display = screen.app.get_key_display
    # A section is a node's keys under one title; declared where: (index in the class's __mro__, in its BINDINGS).
    sections: dict[tuple[DOMNode, str | None], dict[str, list[tuple[tuple[int, int], Binding]]]] = {}
    for active in context_bindings(screen):
        if active.binding.system:
            continue
        node, binding = active.node, active.binding
        owner, index = _declared_by(node, binding)
        where = (type(node).__mro__.index(owner), index)
        sections.setdefault((node, _title(owner)), {}).setdefault(binding.action, []).append((where, binding))

    def section_order(item: tuple[tuple[DOMNode, str | None], dict[str, list[tuple[tuple[int, int], Binding]]]]
                      ) -> tuple[bool, int, int]:
        (node, title), rows = item
        return (title is None, -len(node.ancestors), min(where[0] for keys in rows.values() for where, _ in keys))

    result = []
    for (_, title), rows in sorted(sections.items(), key=section_order):
        ordered = sorted((sorted(keys, key=lambda k: k[0]) for keys in rows.values()), key=lambda keys: keys[0][0])
        result.append(KeySection(title, tuple(
            KeyRow(" ".join(dict.fromkeys(get_key_display(binding) for _, binding in keys)),
                   keys[0][1].tooltip or keys[0][1].description)
            for keys in ordered)))
    return result


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
