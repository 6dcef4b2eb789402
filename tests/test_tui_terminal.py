"""End to end in a real terminal: tmux runs `charrnn-tui`, send-keys types, capture-pane reads."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from helpers import cli_command

from charrnn_tui.engine.checkpoint import load_checkpoint

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (`apt-get install tmux`; .ci/run "
                                                     "installs it where it can)")


class Terminal:
    def __init__(self, command: str, width: int = 80, height: int = 24):
        self.socket = f"charrnn-test-{uuid.uuid4().hex[:8]}"
        self.run("new-session", "-d", "-s", "main", "-x", str(width), "-y", str(height), command)

    def run(self, *args: str) -> str:
        return subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=30).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "main")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "main", *keys)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{self.screen()}")

    def close(self) -> None:
        self.run("kill-server")


@pytest.fixture
def terminal():
    opened: list[Terminal] = []

    def open_terminal(command: str) -> Terminal:
        opened.append(Terminal(command))
        return opened[-1]

    yield open_terminal
    for t in opened:
        t.close()


def test_real_terminal_train_pause_prompt_and_quit(terminal, tmp_path: Path, repetitive_text: Path):
    runs = tmp_path / "runs"
    exe = shlex.join(cli_command())
    command = (f"{exe} {repetitive_text} --preset tiny --hidden 32 --embedding 16 --seq-len 16 --batch-size 4 "
               f"--threads 1 --device cpu --sample-interval 2 --sample-length 40 --eval-interval 50 "
               f"--runs-dir {runs} --name e2e; echo EXIT-STATUS-$?; sleep 30")
    t = terminal(command)
    screen = t.wait_for("TRAINING")
    assert "Loss (nats/char)" in screen and "Samples" in screen and "Prompt" in screen
    assert "space Pause" in screen  # the footer
    t.wait_for("bits/char")  # a validation has run

    t.keys("Space")
    t.wait_for("PAUSED")
    t.keys("+")
    t.wait_for("temp   0.90")

    t.keys("p")
    time.sleep(0.3)
    t.keys("-l", "the lazy ")
    t.keys("Enter")
    screen = t.wait_for("the lazy ")
    assert "esc Leave prompt" in screen
    t.keys("Escape")
    time.sleep(0.5)  # else Escape and q arrive together, as the escape sequence of Alt+q
    t.wait_for("space Resume")  # the footer is back to the single-key bindings

    t.keys("q")
    t.wait_for("Save a checkpoint before quitting?")
    t.keys("y")
    screen = t.wait_for("EXIT-STATUS-0")
    assert "Traceback" not in screen
    checkpoint = load_checkpoint(runs / "e2e" / "latest.pt")
    assert checkpoint["step"] > 0


def _app_command(corpus: Path, runs: Path, name: str) -> str:
    exe = shlex.join(cli_command())
    return (f"{exe} {corpus} --preset tiny --hidden 32 --embedding 16 --seq-len 16 --batch-size 4 --threads 1 "
            f"--device cpu --sample-interval 0 --checkpoint-interval 0 --runs-dir {runs} --name {name}")


def _pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _wait_gone(pattern: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _pids(pattern):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pattern} still running")
        time.sleep(0.2)


@pytest.mark.skipif(shutil.which("pgrep") is None, reason="needs pgrep to find the app's process")
def test_dropped_session_sighup_saves_and_exits(terminal, tmp_path: Path, repetitive_text: Path):
    runs = tmp_path / "runs-hup"
    t = terminal(_app_command(repetitive_text, runs, "hup"))
    t.wait_for("TRAINING")
    t.wait_for("bits/char")
    assert not (runs / "hup" / "latest.pt").exists()  # periodic checkpoints are off
    t.close()  # the terminal vanishes, as when an SSH connection drops: SIGHUP
    _wait_gone(str(runs))
    assert load_checkpoint(runs / "hup" / "latest.pt")["step"] > 0


@pytest.mark.skipif(shutil.which("pgrep") is None, reason="needs pgrep to find the app's process")
def test_sigterm_saves_exits_and_restores_the_terminal(terminal, tmp_path: Path, repetitive_text: Path):
    runs = tmp_path / "runs-term"
    t = terminal(_app_command(repetitive_text, runs, "term") + "; echo EXIT-STATUS-$?; sleep 30")
    t.wait_for("TRAINING")
    t.wait_for("bits/char")
    for pid in _pids(f"python.*{runs}"):  # the app, not the shell around it
        subprocess.run(["kill", "-TERM", str(pid)])
    screen = t.wait_for("EXIT-STATUS-0")
    assert "TRAINING" not in screen  # the app's screen is gone: the terminal is back to the shell
    assert load_checkpoint(runs / "term" / "latest.pt")["step"] > 0
