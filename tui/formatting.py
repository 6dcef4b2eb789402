"""Short, fixed-width renderings of numbers and sizes for the status panel (its durations are
engine/durations.py's, as the progress line's are)."""

from __future__ import annotations


def si(n: float) -> str:
    """1234 -> 1.2k, 1_500_000 -> 1.5M."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def short_count(n: float) -> str:
    """1.5M, 250k, 90k, 900: a count to three significant digits (as `tune` prints tokens)."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def size_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def lr_text(lr: float | None) -> str:
    """A learning rate: 3.0e-4."""
    if lr is None:
        return "-"
    mantissa, exponent = f"{lr:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"
