"""Lengths of time as they are shown: one way for the engine's progress line and the app's status,
one for how long ago a run was active (`runs` and the app's runs screen). No torch here: the app
imports it."""

from __future__ import annotations


def duration(seconds: float | None) -> str:
    """05:07, 1:02:03, and from a day on 1d02h (a fixed-width column stays narrow); "-" for none.
    Whole seconds, rounded down; a negative one (clocks that disagree) is 0."""
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h >= 24:
        return f"{h // 24}d{h % 24:02d}h"
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def age(seconds: float) -> str:
    """How long ago, in its largest whole unit: 12s ago, 5m ago, 3h ago, 2d ago."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"
