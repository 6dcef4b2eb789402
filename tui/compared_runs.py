"""Other runs' validation curves, read from their metrics.jsonl, to overlay on the loss chart.

Read incrementally: each refresh reads only what was appended since the last (a live run keeps
writing), and starts over when the file was replaced or got shorter (a resumed run rewrites it
without the lines after its checkpoint). Training lines are skipped unparsed: a day-long run has
hundreds of thousands of them.

Another run's file is anything its folder holds: it is opened without following a symbolic link
or blocking on a FIFO, must be a regular file, is read at most READ_LIMIT bytes a refresh, and a
line that is not a validation point of finite numbers (nested brackets, a step of 401 digits,
NaN) is skipped."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from charrnn_tui.engine.runs import METRICS, finite_or_none

MAX_COMPARED = 4  # runs overlaid at once, each in a colour of its own
READ_LIMIT = 8 * 2**20  # bytes read a refresh: the rest of a bigger file comes at the next ones
MAX_STEP = 2**53  # a larger step (or count of tokens) is no run's, and would not convert to a float exactly


@dataclass
class ComparedRun:
    name: str
    folder: Path
    # (step, val_loss, elapsed_s, tokens): tokens trained on by then, None in a line without them
    points: list[tuple[int, float, float, int | None]] = field(default_factory=list)
    _offset: int = 0
    _inode: int | None = None

    def refresh(self) -> bool:
        """Read what was appended; True if there are new points."""
        path = self.folder / METRICS
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return False
        with os.fdopen(fd, "rb") as f:
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):  # a FIFO, a device: nothing to read
                    return False
                if st.st_ino != self._inode or st.st_size < self._offset:  # replaced, or cut: read it again
                    self._inode, self._offset, self.points = st.st_ino, 0, []
                f.seek(self._offset)
                data = f.read(READ_LIMIT)
            except OSError:
                return False
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) == READ_LIMIT:  # one line of megabytes is no metrics line: skip it
                self._offset += len(data)
            return False
        self._offset += end + 1
        before = len(self.points)
        for line in data[:end].splitlines():
            if b'"val_loss"' not in line:
                continue
            point = _validation_point(line)
            if point is not None:
                self.points.append(point)
        return len(self.points) > before


def _validation_point(line: bytes) -> tuple[int, float, float, int | None] | None:
    """(step, val_loss, elapsed_s, tokens) from a metrics line, or None: a training line, one a crash
    cut short, or one whose numbers are not a step from 0 to MAX_STEP and finite floats. Tokens that
    are not a whole number from 0 to MAX_STEP are None: the point is left out of the chart by tokens only."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: a line of nested brackets
        return None
    if not isinstance(record, dict):
        return None
    step = record.get("step")
    loss, elapsed = finite_or_none(record.get("val_loss")), finite_or_none(record.get("elapsed_s", 0.0))
    if type(step) is not int or not 0 <= step <= MAX_STEP or loss is None or elapsed is None:
        return None
    tokens = record.get("tokens")
    return step, loss, elapsed, tokens if type(tokens) is int and 0 <= tokens <= MAX_STEP else None

