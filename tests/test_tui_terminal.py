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
    t.wait_for("esc Leave prompt")  # focused: what follows is text, not keys
    t.keys("-l", "the lazy ")
    t.keys("Enter")
    screen = t.wait_for("the lazy ")
    assert "esc Leave prompt" in screen
    t.keys("Escape")
    time.sleep(0.5)  # else Escape and q arrive together, as the escape sequence of Alt+q
    t.wait_for("space Resume")  # the footer is back to the single-key bindings

    t.keys("q")
    t.wait_for("Save a checkpoint before stopping?")
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


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cli_command(), *args], capture_output=True, text=True, timeout=120)


def _status(runs: Path, name: str) -> dict:
    import json

    listed = json.loads(_cli("runs", "--json", "--runs-dir", str(runs)).stdout)
    return next(r for r in listed if r["name"] == name)


def _wait_status(runs: Path, name: str, condition, what: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = _status(runs, name)
        if condition(status):
            return status
        assert time.monotonic() < deadline, f"{what}: {status}"
        time.sleep(0.3)


@pytest.mark.skipif(shutil.which("pgrep") is None, reason="needs pgrep to find the engine's process")
def test_detach_attach_hang_up_stop_and_crash_in_a_real_terminal(terminal, tmp_path: Path, repetitive_text: Path):
    runs = tmp_path / "runs-live"
    train = ["train", str(repetitive_text), "--preset", "tiny", "--hidden", "32", "--embedding", "16", "--seq-len",
             "16", "--batch-size", "4", "--threads", "1", "--device", "cpu", "--sample-interval", "2",
             "--checkpoint-interval", "0", "--runs-dir", str(runs), "--name", "live"]
    started = _cli(*train, "--detach")
    assert started.returncode == 0, started.stderr
    assert "run live is training in the background" in started.stdout and "charrnn-tui attach live" in started.stdout

    exe = shlex.join(cli_command())
    attach = f"{exe} attach --runs-dir {runs}; echo EXIT-STATUS-$?; sleep 30"
    t = terminal(attach)
    t.wait_for("TRAINING")
    assert "live" in t.wait_for("d Detach")
    t.wait_for("bits/char")  # the history arrived and goes on
    assert _status(runs, "live")["viewers"] == 1
    t.keys("d")
    screen = t.wait_for("EXIT-STATUS-0")
    assert "Traceback" not in screen
    step = _wait_status(runs, "live", lambda s: s["viewers"] == 0, "the viewer to leave")["step"]
    _wait_status(runs, "live", lambda s: s["state"] == "training" and s["step"] > step, "training on, detached")

    t2 = terminal(attach)  # again, then the terminal goes away: SIGHUP to the app
    t2.wait_for("TRAINING")
    _wait_status(runs, "live", lambda s: s["viewers"] == 1, "the second app to attach")
    t2.close()
    step = _wait_status(runs, "live", lambda s: s["viewers"] == 0, "the closed terminal's app to leave")["step"]
    _wait_status(runs, "live", lambda s: s["state"] == "training" and s["step"] > step,
                 "the run to train on after its terminal was closed")

    stopped = _cli("stop", "live", "--runs-dir", str(runs))
    assert stopped.returncode == 0 and "run live stopped at step" in stopped.stdout, stopped.stderr
    assert not _pids(f"--name live.*{runs}") and not _pids(f"{runs}.*--name live")
    assert _status(runs, "live")["state"] == "stopped"
    assert load_checkpoint(runs / "live" / "latest.pt")["step"] > 0

    resumed = _cli("train", "--resume", "live", "--runs-dir", str(runs), "--threads", "1", "--detach")
    assert resumed.returncode == 0, resumed.stderr
    _wait_status(runs, "live", lambda s: s["state"] == "training", "the resumed run")
    for pid in _pids(f"engine train --resume live --runs-dir {runs}"):
        subprocess.run(["kill", "-9", str(pid)])
    _wait_status(runs, "live", lambda s: s["state"] == "crashed" and not s["live"], "crashed after kill -9")
    again = _cli("attach", "live", "--runs-dir", str(runs))
    assert again.returncode == 2 and "crashed" in again.stderr and "train --resume live" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert (runs / "live" / "engine.sock").exists()  # stale, until the run is resumed
    final = _cli("train", "--resume", "live", "--runs-dir", str(runs), "--threads", "1", "--headless",
                 "--max-steps", str(_status(runs, "live")["step"] + 5))
    assert final.returncode == 0, final.stderr
    assert not (runs / "live" / "engine.sock").exists() and _status(runs, "live")["state"] == "finished"


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


def test_real_terminal_typing_shows_the_next_tokens_with_percentages(terminal, tmp_path: Path, repetitive_text: Path):
    import re

    runs = tmp_path / "runs"
    exe = shlex.join(cli_command())
    command = (f"{exe} {repetitive_text} --preset tiny --hidden 32 --embedding 16 --seq-len 16 --batch-size 4 "
               f"--threads 1 --device cpu --sample-interval 0 --eval-interval 50 --runs-dir {runs} --name type; "
               "sleep 30")
    t = terminal(command)
    t.wait_for("TRAINING")
    t.keys("p")
    t.wait_for("esc Leave prompt")  # focused: what follows is text, not keys
    t.keys("-l", "the qu")
    screen = t.wait_for("next:")
    line = next(row for row in screen.splitlines() if "next:" in row)
    assert line.lstrip("│ ").startswith("the\u2423qu"), line  # the typed text, spaces shown
    assert len(re.findall(r"\d+%", line)) >= 3, line  # the likeliest tokens with their percentages
    t.keys("Tab")
    deadline = time.monotonic() + 30
    while not re.search(r"the qu\S", t.screen()):  # the top suggestion taken into the prompt
        assert time.monotonic() < deadline, t.screen()
        time.sleep(0.2)
    t.keys("Escape")
    time.sleep(0.5)  # or the terminal reads escape and q as alt+q
    t.keys("q")
    t.wait_for("Quit")
