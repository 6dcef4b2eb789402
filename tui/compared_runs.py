"""Other runs' validation curves, read from their metrics.jsonl, to overlay on the loss chart.

Read incrementally: each refresh reads only what was appended since the last (a live run keeps
writing), and starts over when the file was replaced or got shorter (a resumed run rewrites it
without the lines after its checkpoint). Training lines are skipped unparsed: a day-long run has
hundreds of thousands of them."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from charrnn_tui.engine.metrics import METRICS

MAX_COMPARED = 4  # runs overlaid at once, each in a colour of its own


@dataclass
class ComparedRun:
    name: str
    folder: Path
    points: list[tuple[int, float, float]] = field(default_factory=list)  # (step, val_loss, elapsed_s)
    _offset: int = 0
    _inode: int | None = None

    def refresh(self) -> bool:
        """Read what was appended; True if there are new points."""
        path = self.folder / METRICS
        try:
            with path.open("rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                if inode != self._inode or f.seek(0, 2) < self._offset:  # replaced, or cut: read it again
                    self._inode, self._offset, self.points = inode, 0, []
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return False
        end = data.rfind(b"\n")
        if end < 0:
            return False
        self._offset += end + 1
        before = len(self.points)
        for line in data[:end].splitlines():
            if b'"val_loss"' not in line:
                continue
            try:
                record = json.loads(line)
                step, loss = record["step"], float(record["val_loss"])
                elapsed = float(record.get("elapsed_s", 0.0))
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # a training line, or one a crash cut short
            if isinstance(step, int) and math.isfinite(loss) and math.isfinite(elapsed):
                self.points.append((step, loss, elapsed))
        return len(self.points) > before
