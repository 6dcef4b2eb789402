"""Other runs' validation curves, read from their metrics.jsonl, to overlay on the loss chart.

Read incrementally: each refresh reads only what was appended since the last (a live run keeps
writing), and starts over when the file got shorter (a resumed run drops the lines after its
checkpoint)."""

from __future__ import annotations

import json
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

    def refresh(self) -> bool:
        """Read what was appended; True if there are new points."""
        path = self.folder / METRICS
        try:
            with path.open("rb") as f:
                if f.seek(0, 2) < self._offset:  # rewritten shorter: read it again
                    self._offset, self.points = 0, []
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
            try:
                record = json.loads(line)
                step, loss = record["step"], float(record["val_loss"])
                elapsed = float(record.get("elapsed_s", 0.0))
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # a training line, or one a crash cut short
            if isinstance(step, int):
                self.points.append((step, loss, elapsed))
        return len(self.points) > before
