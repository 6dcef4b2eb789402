"""What the TUI costs training, and how fast it answers a key while training runs flat out.

    python bench/tui_overhead.py [--seconds 30] [--preset tiny] [--presses 20]

1. Training chars/s with no UI (the engine alone), with the app open in a headless Textual
   session, and with the real `charrnn-tui` drawing into a real terminal (tmux, 80x24); the
   engine-alone run is repeated at the end, since throughput drifts on shared machines.
   The app runs the engine in a child process, as `charrnn-tui` does.
2. Key-to-screen latency under full training load, in the real terminal: tmux sends `+`/`-`
   and capture-pane polls until the new temperature is on the screen.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.checkpoint import load_checkpoint
from charrnn_tui.engine.process import TrainerProcess
from charrnn_tui.engine.trainer import Trainer
from charrnn_tui.tui.app import CharRNNApp


def make_config(preset: str, seconds: float) -> cfg.TrainConfig:
    # The TUI's defaults: live samples every 15 s, the preset's evaluation interval.
    base = cfg.apply_preset(cfg.TrainConfig(corpus="shakespeare"), preset)
    return dataclasses.replace(base, max_time=seconds, checkpoint_interval=0)


def engine_alone(config: cfg.TrainConfig, runs: Path) -> float:
    trainer = Trainer(config, runs_dir=runs)
    trainer.run()
    return trainer.tokens_seen / trainer.train_seconds


def headless_textual(config: cfg.TrainConfig, runs: Path) -> float:
    # As the real app does: the engine in a child process (engine/process.py).
    trainer = TrainerProcess(functools.partial(Trainer, config, runs_dir=runs))

    async def drive() -> None:
        app = CharRNNApp(trainer=trainer)
        async with app.run_test(size=(80, 24)) as pilot:
            while trainer.state not in ("finished", "error"):
                await pilot.pause(0.2)

    asyncio.run(drive())
    return trainer.tokens_seen / trainer.train_seconds


class Tmux:
    def __init__(self, command: str) -> None:
        self.socket = f"charrnn-bench-{uuid.uuid4().hex[:8]}"
        self("new-session", "-d", "-s", "main", "-x", "80", "-y", "24", command)

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "main")

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} did not appear:\n{self.screen()}")
            time.sleep(0.1)


def real_terminal(preset: str, seconds: float, runs: Path, name: str) -> float:
    """Training chars/s with the real app drawing into tmux, nobody typing."""
    exe = Path(sys.executable).with_name("charrnn-tui")
    term = Tmux(f"{exe} shakespeare --preset {preset} --max-time {seconds}s --checkpoint-interval 0 "
                f"--runs-dir {runs} --name {name}; sleep 600")
    try:
        term.wait_for("FINISHED", timeout=seconds + 120)
        checkpoint = load_checkpoint(runs / name / "latest.pt")
        return checkpoint["tokens_seen"] / checkpoint["train_seconds"]
    finally:
        term("kill-server")


def key_latency(preset: str, runs: Path, presses: int) -> list[float]:
    """Seconds from tmux send-keys to the new temperature on the screen, while training runs."""
    exe = Path(sys.executable).with_name("charrnn-tui")
    term = Tmux(f"{exe} shakespeare --preset {preset} --checkpoint-interval 0 --runs-dir {runs} --name keys")
    try:
        term.wait_for("TRAINING")
        term.wait_for("bits/char")  # past start-up: the first evaluation has run
        latencies = []
        temperature = 0.8
        for i in range(presses):
            key, temperature = ("+", round(temperature + 0.1, 2)) if i % 2 == 0 else ("-", round(temperature - 0.1, 2))
            expected = f"temp   {temperature:.2f}"
            t0 = time.perf_counter()
            term("send-keys", "-t", "main", key)
            while expected not in term.screen():
                if time.perf_counter() - t0 > 5:
                    raise RuntimeError(f"{expected!r} did not appear")
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.3)
        return latencies
    finally:
        term("kill-server")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="training time per run (default: 30)")
    parser.add_argument("--preset", default="tiny", choices=list(cfg.PRESETS))
    parser.add_argument("--presses", type=int, default=40, help="key presses for the latency test (default: 40)")
    args = parser.parse_args()
    config = make_config(args.preset, args.seconds)
    has_tmux = shutil.which("tmux") is not None
    rows: list[tuple[str, float, float]] = []  # name, chars/s, engine alone around it
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        before = engine_alone(config, runs)
        in_app = headless_textual(config, runs)
        middle = engine_alone(config, runs)
        rows.append(("TUI, headless Textual app", in_app, (before + middle) / 2))
        if has_tmux:
            in_terminal = real_terminal(args.preset, args.seconds, runs, "terminal")
            after = engine_alone(config, runs)
            rows.append(("TUI, real terminal (tmux 80x24)", in_terminal, (middle + after) / 2))
            latencies = key_latency(args.preset, runs, args.presses)
    print(f"preset {args.preset}, {args.seconds:g} s of training per run, tiny-shakespeare; each UI run is "
          "compared with the mean of the engine-alone runs just before and after it")
    print(f"{'run':<34} {'chars/s':>10} {'engine alone':>13} {'ratio':>7}")
    for name, value, alone in rows:
        print(f"{name:<34} {value:>10,.0f} {alone:>13,.0f} {value / alone:>7.1%}")
    if has_tmux:
        ms = sorted(x * 1000 for x in latencies)
        p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
        print(f"key-to-screen latency under training load ({len(ms)} presses of +/-, tmux capture-pane polling): "
              f"median {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms, max {ms[-1]:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
