"""What watching costs training, and how fast the app answers a key while training runs flat out.

    python bench/tui_overhead.py [--seconds 30] [--preset tiny] [--viewers 0 1 3] [--presses 20] [--rounds 2]
                                 [--keys temperature|chart] [--size 80x24]

--rounds 0 measures the key latency only; --size is its terminal's (160x45 draws the status history).

1. Training chars/s of a detached run with 0, 1 and 3 apps attached to it, each drawing into a real
   terminal (tmux, 80x24), as `charrnn-tui attach` does: counted from the run's metrics.jsonl over
   --seconds of training once every app has drawn its first validation (so the apps' start-up is
   not counted; evaluation and sampling are not training time). Rounds interleave the viewer
   counts, each round starting with the next count, since throughput drifts on shared machines.
2. Key-to-screen latency under full training load with one app attached: tmux sends `+`/`-`, and
   the time is taken when the new temperature arrives in the bytes the app writes to its terminal
   (tmux pipe-pane into a FIFO that a thread reads). Polling capture-pane in a loop, as this did
   before, spawned a tmux client every few ms on a machine with no idle core, and measured that.
   --keys chart sends the chart's `f` instead (fitted or full range: the whole chart is drawn
   again), timed to the loss panel's title saying the new view.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

CLI = [sys.executable, "-m", "charrnn_tui.tui.cli"]


class Tmux:
    def __init__(self, command: str, size: tuple[int, int] = (80, 24)) -> None:
        self.socket = f"charrnn-bench-{uuid.uuid4().hex[:8]}"
        self("new-session", "-d", "-s", "main", "-x", str(size[0]), "-y", str(size[1]), command)

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "main")

    def wait_for(self, text: str, timeout: float = 120, poll: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} did not appear:\n{self.screen()}")
            time.sleep(poll)

    def close(self) -> None:
        self("kill-server")


def detached_run(preset: str, seconds: float, runs: Path, name: str, viewers: int) -> float:
    """Training chars/s of a detached run over `seconds` of training with `viewers` apps attached,
    counted from its metrics.jsonl once every app is up (their start-up is not what is measured)."""
    started = subprocess.run([*CLI, "train", "shakespeare", "--preset", preset, "--checkpoint-interval", "0",
                              "--runs-dir", str(runs), "--name", name, "--detach"], capture_output=True, text=True)
    if started.returncode:
        raise RuntimeError(started.stderr)
    attach = f"{shlex.join(CLI)} attach {name} --runs-dir {runs}; sleep 600"
    terminals = [Tmux(attach) for _ in range(viewers)]
    try:
        for t in terminals:
            t.wait_for("TRAINING")
            t.wait_for("bits/char")  # drawn the first evaluation: past start-up
        time.sleep(3)
        first = _last_train_record(runs / name)
        while _last_train_record(runs / name)["elapsed_s"] < first["elapsed_s"] + seconds:
            time.sleep(0.5)
        last = _last_train_record(runs / name)
    finally:
        for t in terminals:
            t.close()
        subprocess.run([*CLI, "stop", name, "--runs-dir", str(runs), "--no-save"], capture_output=True)
    return (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])


def _last_train_record(run_dir: Path) -> dict:
    from charrnn_tui.engine.run.metrics import read_metrics

    return [r for r in read_metrics(run_dir) if "train_loss" in r][-1]


class TerminalOutput:
    """What the app writes to its terminal, as it arrives: tmux copies it into a FIFO read here, and
    the reader notes when a pattern waited for has arrived."""

    def __init__(self, tmux: Tmux, folder: Path) -> None:
        self.fifo = folder / "pane.fifo"
        os.mkfifo(self.fifo)
        # Read and write: opening never waits for tmux's cat (a pipe-pane that failed would hang a
        # read-only open), and reads wait for data.
        self.fd = os.open(self.fifo, os.O_RDWR)
        self.arrived = threading.Condition()
        self.data = bytearray()
        self.pattern: re.Pattern[bytes] | None = None
        self.matched_at: float | None = None
        tmux("pipe-pane", "-t", "main", f"cat > {shlex.quote(str(self.fifo))}")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:  # closed
                return
            now = time.perf_counter()
            with self.arrived:
                self.data += chunk
                if self.pattern is not None and self.matched_at is None and self.pattern.search(self.data):
                    self.matched_at = now
                    self.arrived.notify_all()

    def expect(self, pattern: re.Pattern[bytes]) -> None:
        """From now on, note when `pattern` arrives (what came before does not count)."""
        with self.arrived:
            self.data.clear()
            self.pattern, self.matched_at = pattern, None

    def wait(self, timeout: float = 10) -> float:
        """perf_counter() when the expected pattern arrived."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: self.matched_at is not None, timeout):
                raise RuntimeError(f"{self.pattern.pattern!r} was not written in {timeout:g} s")
            return self.matched_at

    def close(self, tmux: Tmux) -> None:
        tmux("pipe-pane", "-t", "main")  # no command: the pipe closes
        os.close(self.fd)


# What each --keys presses in turn, and the text the screen then shows (styles may come between).
KEY_ROUNDS = {
    "temperature": (("+", rb"temp   (?:\x1b\[[0-9;]*m)*0\.90"), ("-", rb"temp   (?:\x1b\[[0-9;]*m)*0\.80")),
    "chart": (("f", "· (?:\x1b\\[[0-9;]*m)*full".encode()), ("f", "· (?:\x1b\\[[0-9;]*m)*fitted".encode())),
}


def key_latency(preset: str, runs: Path, presses: int, keys: str = "temperature",
                size: tuple[int, int] = (80, 24)) -> list[float]:
    name = "latency"
    started = subprocess.run([*CLI, "train", "shakespeare", "--preset", preset, "--runs-dir", str(runs),
                              "--name", name, "--checkpoint-interval", "0", "--detach"], capture_output=True, text=True)
    if started.returncode:
        raise RuntimeError(started.stderr)
    t = Tmux(f"{shlex.join(CLI)} attach {name} --runs-dir {runs}; sleep 600", size)
    latencies = []
    try:
        t.wait_for("TRAINING")
        t.wait_for("temp   0.80")
        output = TerminalOutput(t, runs)
        for i in range(presses):
            key, expected = KEY_ROUNDS[keys][i % 2]
            output.expect(re.compile(expected))
            start = time.perf_counter()
            t("send-keys", "-t", "main", key)
            latencies.append((output.wait() - start) * 1000)
            time.sleep(0.2)
        output.close(t)
        if keys == "temperature":
            t.wait_for(f"temp   {['0.90', '0.80'][(presses - 1) % 2]}", timeout=5)  # and it is what the screen shows
    finally:
        t.close()
        subprocess.run([*CLI, "stop", name, "--runs-dir", str(runs), "--no-save"], capture_output=True)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--viewers", type=int, nargs="+", default=[0, 1, 3])
    parser.add_argument("--presses", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keys", choices=sorted(KEY_ROUNDS), default="temperature",
                        help="what the latency presses: + and -, or the chart's f")
    parser.add_argument("--size", default="80x24", help="the key latency's terminal (160x45: the status history)")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("tmux is not installed: this benchmark drives the app in real terminals")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        results: dict[int, list[float]] = {n: [] for n in args.viewers}
        for round_ in range(args.rounds):
            # Each round starts with another count: on a shared machine the first run of a round was
            # the fastest, which charged the drift to the counts that came later.
            shift = round_ % len(args.viewers)
            for n in args.viewers[shift:] + args.viewers[:shift]:
                rate = detached_run(args.preset, args.seconds, runs, f"r{round_}-v{n}", n)
                results[n].append(rate)
                print(f"round {round_ + 1}: {n} viewer(s): {rate:,.0f} chars/s", flush=True)
        if args.rounds:  # --rounds 0: the key latency only
            base = statistics.mean(results[args.viewers[0]])
            print(f"\npreset {args.preset}, {args.seconds:g} s of training per run, {args.rounds} rounds")
            for n in args.viewers:
                mean = statistics.mean(results[n])
                print(f"{n} viewer(s): {mean:,.0f} chars/s ({mean / base:.3f}x of {args.viewers[0]} viewers; "
                      f"runs: {', '.join(f'{r:,.0f}' for r in results[n])})")
        size = tuple(int(v) for v in args.size.split("x"))
        latencies = key_latency(args.preset, runs, args.presses, args.keys, (size[0], size[1]))
        q = statistics.quantiles(latencies, n=20, method="inclusive")  # never past the largest
        print(f"key to screen ({args.keys}) at {args.size}, one app attached, training at full speed: "
              f"median {statistics.median(latencies):.0f} ms, p95 {q[18]:.0f} ms, max {max(latencies):.0f} ms "
              f"({len(latencies)} presses)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
