"""A count with its noun, as every message shows one: "1 step", "2 steps", "1,200 steps". No torch
here: the app imports it."""

from __future__ import annotations


def plural(count: float, noun: str, many: str | None = None, spec: str = ",") -> str:
    """`count` formatted with `spec` (thousands separated by default), then `noun`, or its plural
    where the number shown is not 1: `many` where given, else the noun with "es" after s, x and z
    ("processes") and "s" after anything else ("epochs": no "ch" rule). The shown number decides,
    so 1.0004 epochs shown with spec ".3g" is "1 epoch"."""
    shown = format(count, spec)
    if shown == "1":
        return f"{shown} {noun}"
    if many is None:
        many = noun + ("es" if noun.endswith(("s", "x", "z")) else "s")
    return f"{shown} {many}"
