"""A sweep's trials as processes: each an ordinary run (`charrnn-tui train`, detached as the app
starts one: engine/serve/launch.py) in the sweep's folder, trained to a number of steps and read
back from its own files (status.json, metrics.jsonl) when it ends. A promotion is `train --resume`
with the steps it lacks."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.runs import LATEST, METRICS, is_live, read_run_file, read_status
from charrnn_tui.engine.serve.launch import start_engine
from charrnn_tui.engine.tune.space import Settings

METRICS_LIMIT = 64 * 2**20  # bytes of a trial's metrics.jsonl read back (a line per report: kilobytes a minute)
STOP_WAIT = 60.0  # seconds a trial asked to stop may take to save before it is killed
DIVERGED = re.compile(r"(loss|gradient norm) became")  # the trainer's words when training blew up


@dataclass
class Outcome:
    """How a trial's job ended: the best validation loss it reached by the job's step (what its
    best.pt holds; inf: it diverged), or None with why (it failed, or stopped before the step)."""

    loss: float | None
    step: int | None
    why: str = ""
    stopped: bool = False  # ended before its step without failing (asked to stop): it can be resumed


class TrialProcess:
    """A trial's engine, started here (a process to wait for) or found live by a resumed sweep
    (its pid from status.json; only its lock says when it has ended)."""

    def __init__(self, run_dir: Path, process: subprocess.Popen[bytes] | None = None):
        self.run_dir, self.process = run_dir, process

    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return is_live(self.run_dir)

    def stop(self) -> None:
        """Ask it to save and end (SIGTERM, which an engine takes as `stop`)."""
        pid = self.process.pid if self.process is not None else read_status(self.run_dir).get("pid")
        if isinstance(pid, int) and pid > 0 and pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)

    def wait(self, timeout: float = STOP_WAIT) -> None:
        """Until it has ended; killed after `timeout`."""
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            return
        deadline = time.monotonic() + timeout
        while is_live(self.run_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = read_status(self.run_dir).get("pid")
        if is_live(self.run_dir) and isinstance(pid, int) and pid > 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def new_trial_argv(data_argv: list[str], preset: str, settings: Settings, sweep_dir: Path, name: str,
                   steps: int, machine_argv: list[str]) -> list[str]:
    """`train` arguments for a trial's first rung: the corpus flags, the preset, the settings."""
    return [*data_argv, "--preset", preset, *settings.flags(), "--max-steps", str(steps),
            "--runs-dir", str(sweep_dir), "--name", name, *machine_argv]


def resume_argv(run_dir: Path, more_steps: int, machine_argv: list[str]) -> list[str]:
    """`train` arguments that take a trial on by `more_steps` (a promotion, or a stopped job)."""
    return ["--resume", str(run_dir), "--runs-dir", str(run_dir.parent), "--max-steps", str(more_steps),
            *machine_argv]


def start(argv: list[str], env: dict[str, str] | None = None) -> TrialProcess:
    """Start a trial's engine; returns once its run is listening. CharRNNError when it could not start."""
    run_dir, process = start_engine(argv, env=env)
    return TrialProcess(run_dir, process)


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the trial's latest.pt (None without one): where a resume starts."""
    from charrnn_tui.engine.checkpoint import load_checkpoint

    if not (run_dir / LATEST).is_file():
        return None
    try:
        step = load_checkpoint(run_dir / LATEST).get("step")
    except CharRNNError:
        return None
    return step if isinstance(step, int) else None


def validation_losses(run_dir: Path) -> dict[int, float]:
    """step -> validation loss from the trial's metrics.jsonl (NaN and infinities as they are)."""
    data, _ = read_run_file(run_dir / METRICS, METRICS_LIMIT)
    losses: dict[int, float] = {}
    for line in (data or b"").decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError, RecursionError):  # RecursionError: a line of nested brackets
            record = json.loads(line)
            if not isinstance(record, dict):  # a line that is JSON but no record ("[1]", "3"): skipped, not a crash
                continue
            step, loss = record.get("step"), record.get("val_loss")
            if type(step) is int and isinstance(loss, (int, float)) and not isinstance(loss, bool):
                losses[step] = float(loss)
    return losses


def outcome(run_dir: Path, target_step: int) -> Outcome:
    """What a trial's job to `target_step` came to, read from its folder once its engine has ended."""
    status = read_status(run_dir)
    reason = status.get("reason") if isinstance(status.get("reason"), str) else ""
    if status.get("state") == "error" and DIVERGED.search(reason or ""):
        return Outcome(math.inf, status.get("step") if isinstance(status.get("step"), int) else None, "diverged")
    losses = validation_losses(run_dir)
    reached = [step for step in losses if step >= target_step]
    if reached:
        return Outcome(best_by(losses, min(reached)), min(reached))
    if status.get("state") == "error":
        return Outcome(None, None, reason or "ended with an error")
    if status.get("state") == "stopped":
        return Outcome(None, None, "stopped before its rung", stopped=True)
    return Outcome(None, None, f"ended ({status.get('state') or 'no status'}) without a validation loss at step "
                               f"{target_step:,}", stopped=status.get("state") in ("crashed", "training", "paused"))


def best_by(losses: dict[int, float], step: int) -> float:
    """The trial's loss as a rung judges it: the best validation loss by `step`, not the one at it. A
    small text over-fits within a rung (the jokes at word level: 4.21 at 790k tokens, 4.87 at 2.4M),
    and what a trial gives its user is its best.pt; every trial has had the same tokens to reach it.
    A loss at `step` that is not finite (it diverged there) stands: a diverged trial ranks last."""
    at = losses[step]
    if not math.isfinite(at):
        return at
    return min(loss for s, loss in losses.items() if s <= step and math.isfinite(loss))
