"""Starting a run's engine detached: in a session of its own, with no terminal, so that closing the
terminal (or the app) never stops it. Returns once the run is listening, or says why it failed."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

from charrnn_tui.engine.errors import CharRNNError

START_TIMEOUT = 600.0  # seconds; a big corpus or a batch-size probe takes a while


def launch_engine(train_argv: list[str], *, for_app: bool = False) -> Path:
    """Start `train TRAIN_ARGV` as a detached engine; its run folder once it listens."""
    run_dir, process = start_engine(train_argv, for_app=for_app)
    process.returncode = 0  # it lives on by itself: no "still running" warning when we exit
    return run_dir


def start_engine(train_argv: list[str], *, for_app: bool = False,
                 env: dict[str, str] | None = None) -> tuple[Path, subprocess.Popen[bytes]]:
    """launch_engine, and the engine's process, for a caller that waits for it to end (`tune`'s
    trials). `env`: the engine's environment (default: this one's)."""
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "charrnn_tui.engine", "train", *train_argv, "--headless",
               "--serve-fd", str(write_end), *(["--serve-for-app"] if for_app else [])]
    # Until the engine moves its output to the run's engine.log, it goes to a file (a pipe nobody
    # reads could fill and block it).
    with tempfile.TemporaryFile() as early_output:
        try:
            process = subprocess.Popen(command, start_new_session=True, stdin=subprocess.DEVNULL,
                                       stdout=early_output, stderr=early_output, pass_fds=(write_end,), env=env)
        finally:
            os.close(write_end)
        with os.fdopen(read_end) as ready:
            line = _read_line(ready, START_TIMEOUT)
        if line is None:  # neither ready nor failed in all that time: it is stuck
            process.kill()
            process.wait()
            raise CharRNNError(f"the engine did not start within {START_TIMEOUT:.0f} s")
        if line.startswith("ready "):
            return Path(line.removeprefix("ready ")), process
        if line.startswith("error "):
            process.wait(timeout=30)
            raise CharRNNError(line.removeprefix("error "))
        code = process.wait(timeout=START_TIMEOUT)
        early_output.seek(0)
        lines = early_output.read().decode(errors="replace").strip().splitlines()
    raise CharRNNError(f"the engine exited before it started (exit code {code})"
                       + (f": {lines[-1]}" if lines else ""))


def _read_line(stream, timeout: float) -> str | None:
    """One line from a pipe, or None if none came in time ("" when the writer closed it)."""
    if not select.select([stream], [], [], timeout)[0]:
        return None
    return stream.readline().strip()
