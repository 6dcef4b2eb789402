"""metrics.jsonl in every run folder: one JSON object per progress report and per evaluation.

Training lines: {"step", "elapsed_s", "tokens", "lr", "train_loss", "grad_norm"}, the loss the mean
over the steps since the previous line (nats per token). Validation lines: {"step", "elapsed_s",
"tokens", "lr", "val_loss"}. Appended and flushed as they come; a resumed run first drops the lines
after its checkpoint's step, which a run killed after its last save had written.

With --tensorboard the same numbers also go to TensorBoard event files in RUN/tensorboard
(loss/train, loss/val, lr, grad_norm by step), through torch's SummaryWriter, which needs the
optional tensorboard package.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charrnn_tui.engine.errors import ConfigError
from charrnn_tui.engine.runs import METRICS, open_in_run, replace_atomically

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

TENSORBOARD = "tensorboard"
MISSING_TENSORBOARD = "--tensorboard needs TensorBoard, which is not installed: pip install 'charrnn-tui[tensorboard]'"


def require_tensorboard() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(MISSING_TENSORBOARD)


def tensorboard_writer(run_dir: Path, resumed_step: int | None = None) -> SummaryWriter:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's module imports the tensorboard package
        raise ConfigError(MISSING_TENSORBOARD) from None
    # A resumed run purges what its event files hold after its checkpoint, as metrics.jsonl drops it.
    purge = None if resumed_step is None else resumed_step + 1
    return SummaryWriter(log_dir=str(run_dir / TENSORBOARD), flush_secs=10, purge_step=purge)


class MetricsLog:
    def __init__(self, run_dir: Path, resumed_step: int | None = None, tensorboard: bool = False):
        self.path = run_dir / METRICS
        if resumed_step is not None:
            self._drop_after(resumed_step)
        self.writer = tensorboard_writer(run_dir, resumed_step) if tensorboard else None
        self.file = None
        # A read-only folder, or a symbolic link planted in the file's place (never written
        # through): the run goes on without it.
        with contextlib.suppress(OSError):
            self.file = os.fdopen(open_in_run(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a", encoding="utf-8")

    def train(self, step: int, elapsed_s: float, tokens: int, lr: float, loss: float, grad_norm: float) -> None:
        self._write({"step": step, "elapsed_s": round(elapsed_s, 3), "tokens": tokens, "lr": lr,
                     "train_loss": loss, "grad_norm": grad_norm})
        if self.writer is not None:
            for tag, value in (("loss/train", loss), ("lr", lr), ("grad_norm", grad_norm)):
                self.writer.add_scalar(tag, value, step)

    def validation(self, step: int, elapsed_s: float, tokens: int, lr: float, loss: float) -> None:
        self._write({"step": step, "elapsed_s": round(elapsed_s, 3), "tokens": tokens, "lr": lr, "val_loss": loss})
        if self.writer is not None:
            self.writer.add_scalar("loss/val", loss, step)

    def _write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            return
        with contextlib.suppress(OSError):
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(OSError):
                self.writer.close()
            self.writer = None
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None

    def _drop_after(self, step: int) -> None:
        lines = _read_lines(self.path)
        if lines is None:
            return
        kept = [line for line in lines if (at := _step_of(line)) is not None and at <= step]
        if len(kept) == len(lines):
            return
        data = "".join(line + "\n" for line in kept).encode("utf-8")
        with contextlib.suppress(OSError):
            replace_atomically(self.path, lambda f: f.write(data), durable=False)


def _read_lines(path: Path) -> list[str] | None:
    """The lines of a metrics.jsonl, or None: not through a symbolic link, never a FIFO or device."""
    try:
        with os.fdopen(open_in_run(path, os.O_RDONLY), encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return None


def _step_of(line: str) -> int | None:
    try:
        step = json.loads(line).get("step")
    except (ValueError, AttributeError, RecursionError):  # RecursionError: a line of nested brackets
        return None
    return step if type(step) is int else None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    records = []
    for line in _read_lines(run_dir / METRICS) or []:
        with contextlib.suppress(ValueError, RecursionError):
            records.append(json.loads(line))
    return records
