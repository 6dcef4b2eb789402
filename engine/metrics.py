"""metrics.jsonl in every run folder: one JSON object per progress report and per evaluation.

Training lines: {"step", "elapsed_s", "tokens", "lr", "train_loss", "grad_norm"}, the loss the mean
over the steps since the previous line (nats per token). Validation lines: {"step", "elapsed_s",
"tokens", "lr", "val_loss"}. Appended and flushed as they come; a resumed run first drops the lines
after its checkpoint's step, which a run killed after its last save had written.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"


class MetricsLog:
    def __init__(self, run_dir: Path, resumed_step: int | None = None):
        self.path = run_dir / METRICS
        if resumed_step is not None:
            self._drop_after(resumed_step)
        self.file = None
        with contextlib.suppress(OSError):  # a read-only folder: the run goes on without it
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self.file = os.fdopen(fd, "a", encoding="utf-8")

    def train(self, step: int, elapsed_s: float, tokens: int, lr: float, loss: float, grad_norm: float) -> None:
        self._write({"step": step, "elapsed_s": round(elapsed_s, 3), "tokens": tokens, "lr": lr,
                     "train_loss": loss, "grad_norm": grad_norm})

    def validation(self, step: int, elapsed_s: float, tokens: int, lr: float, loss: float) -> None:
        self._write({"step": step, "elapsed_s": round(elapsed_s, 3), "tokens": tokens, "lr": lr, "val_loss": loss})

    def _write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            return
        with contextlib.suppress(OSError):
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None

    def _drop_after(self, step: int) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return
        kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
        if len(kept) == len(lines):
            return
        tmp = self.path.with_name(f".{METRICS}.tmp-{os.getpid()}")
        with contextlib.suppress(OSError):
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, self.path)


def _step_of(line: str) -> int | None:
    try:
        step = json.loads(line).get("step")
    except (ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    records = []
    with contextlib.suppress(OSError):
        for line in (run_dir / METRICS).read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records
