"""Two default runs started together in different runs folders: does each keep its share of a lone run?

    python bench/two_runs.py [--seconds 30] [--criterion 0.35]

Runs in different runs folders do not see each other's status.json, so each must notice the other
from the machine (engine/run/threads.py). First one run alone, then two at once, each in a
temporary --runs-dir of its own; every run is the app's default (`charrnn-tui train --headless`
with --max-time). Each run's steps and chars/s come from the last training line of its
metrics.jsonl (tokens / elapsed_s: training time). PASS when each of the two made at least
--criterion of the lone run's steps (issue 28 item 4: 35%). Every process started is stopped.
Figures drift on a shared machine: compare them only with the machine quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from charrnn_tui.engine.run.threads import available_cores

CLI = [sys.executable, "-m", "charrnn_tui.engine"]


@dataclass
class Result:
    steps: int
    chars_per_s: float
    threads_said: list[str]  # the run's notices on its CPU threads (engine/run/threads.py)


def start(runs_dir: Path, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "train", "--headless", "--max-time", f"{seconds:g}s", "--runs-dir", str(runs_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(runs_dir: Path, output: str) -> Result:
    (metrics,) = runs_dir.glob("*/metrics.jsonl")
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    last = [line for line in lines if "train_loss" in line][-1]
    said = [line.partition("CPU threads: ")[2] for line in output.splitlines() if "CPU threads: " in line]
    return Result(last["step"], last["tokens"] / max(last["elapsed_s"], 1e-9), said)


def together(count: int, seconds: float) -> list[Result]:
    """`count` runs started at once, each in a runs folder of its own; their results."""
    with tempfile.TemporaryDirectory() as tmp:
        folders = [Path(tmp) / f"runs{i}" for i in range(count)]
        procs: list[subprocess.Popen[str]] = []
        outputs = []
        try:
            procs = [start(folder, seconds) for folder in folders]
            for proc in procs:
                out, err = proc.communicate(timeout=seconds * 5 + 120)
                if proc.returncode:
                    raise RuntimeError(f"a run failed ({proc.returncode}): {err[-2000:]}")
                outputs.append(out)
        finally:
            for proc in procs:  # only on an error or a timeout: each ended by itself otherwise
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        return [result(folder, out) for folder, out in zip(folders, outputs, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--criterion", type=float, default=0.35, help="each of two keeps this of a lone run's steps")
    args = parser.parse_args()
    print(f"{available_cores()} cores (os.sched_getaffinity), the default run, {args.seconds:g} s each", flush=True)
    (alone,) = together(1, args.seconds)
    print(f"alone:    {alone.steps:6,d} steps, {alone.chars_per_s:9,.0f} chars/s", flush=True)
    print("".join(f"          {line}\n" for line in alone.threads_said), end="")
    pair = together(2, args.seconds)
    for i, run in enumerate(pair):
        print(f"2 runs, {i}: {run.steps:6,d} steps, {run.chars_per_s:9,.0f} chars/s, "
              f"{run.steps / alone.steps:.0%} of alone", flush=True)
        print("".join(f"          {line}\n" for line in run.threads_said), end="")
    worst = min(run.steps for run in pair) / alone.steps
    verdict = "PASS" if worst >= args.criterion else "FAIL"
    print(f"{verdict}: each of two keeps >= {args.criterion:.0%} of the lone run's steps (the fewer kept {worst:.0%})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
