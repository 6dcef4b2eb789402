"""Text from outside (a file, a run's server, the model) made safe to show on a terminal.

A terminal obeys the control characters in what it is sent: ESC starts sequences that set the
window title, move the cursor, rewrite the screen or, on some terminals, answer back as typed
input; CR and BS overwrite what was written. So every string that came from a file, a peer or a
model goes through `printable` before it reaches a terminal (the app, `runs`, `sample`, the
progress line, error messages). No torch here: the app imports it.

Each character is replaced by exactly one character, so the offsets into a sample (its tokens'
lengths, its copied spans) still point at the same text once it is made printable:
- C0 controls (U+0000-U+001F) become their Unicode control pictures, U+2400-U+241F: ESC shows as
  "␛", BEL as "␇", CR as "␍". Newline and tab are kept where a block of text is shown
  (`keep_newlines`, for sample text), and pictured ("␊", "␉") in a one-line context.
- DEL (U+007F) becomes "␡" (U+2421).
- C1 controls (U+0080-U+009F) have no pictures: they become U+FFFD "�". U+009B is a one-byte CSI
  that some terminals act on as ESC [.
- Bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) become "�"
  too: they make a terminal that reorders text show something else than the string holds (a run
  name that reads backwards, "Trojan source"), and nothing this program shows needs them. The
  marks U+200E, U+200F and U+061C are kept: they reorder no text, only nudge punctuation.
- Lone surrogates (a file name not in the locale's encoding, as Python decodes it) become "�",
  since writing them to a UTF-8 stream raises UnicodeEncodeError.
Everything else (letters of any script, emoji, joiners) is left as it is.
"""

from __future__ import annotations

import re

STAND_IN = "\ufffd"  # for characters that have no picture of their own

_OTHER = "\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE_IN_LINE = re.compile(f"[\x00-\x1f{_OTHER}]")
_UNSAFE_IN_BLOCK = re.compile(f"[\x00-\x08\x0b-\x1f{_OTHER}]")  # newline (0x0a) and tab (0x09) kept


def _table(keep_newlines: bool) -> dict[int, str]:
    table = {c: chr(0x2400 + c) for c in range(0x20)}  # U+2400 is NUL's picture, U+241F US's
    table[0x7F] = "\u2421"
    table.update({c: STAND_IN for c in range(0x80, 0xA0)})
    table.update({c: STAND_IN for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]})
    table.update({c: STAND_IN for c in range(0xD800, 0xE000)})
    if keep_newlines:
        del table[ord("\n")], table[ord("\t")]
    return table


_BLOCK = _table(keep_newlines=True)
_LINE = _table(keep_newlines=False)


def printable(text: str, keep_newlines: bool = True) -> str:
    """`text` with every control, bidi-override and lone-surrogate character replaced by one visible
    stand-in (see the module's doc); newline and tab are kept unless `keep_newlines` is False.
    Text that needs nothing replaced is returned as it is (the common case: one search, no copy)."""
    if not isinstance(text, str):  # a peer's field that should have been a string
        text = str(text)
    pattern = _UNSAFE_IN_BLOCK if keep_newlines else _UNSAFE_IN_LINE
    if pattern.search(text) is None:
        return text
    return text.translate(_BLOCK if keep_newlines else _LINE)


def printable_line(text: str) -> str:
    """`printable` for a one-line context (a table cell, an error message): newline and tab pictured."""
    return printable(text, keep_newlines=False)


def percent(fraction: float) -> str:
    """0.1 -> '10%', 0.001 -> '0.1%' (not '0%'), 0.125 -> '12.5%'."""
    return f"{fraction * 100:.3g}%"
