"""Several runs training on one machine at once: what each gets, with the cores shared or not.

    python bench/concurrent_runs.py [--seconds 25] [--preset small] [--runs 1 2 3]

For each count N, N headless runs of the preset on tiny-shakespeare start together in one runs
folder and train for --seconds; each run's chars/s comes from its checkpoint. "shared" is the
default (each run takes its share of the cores, engine/run/threads.py); "each takes all" gives every
run --threads equal to the core count, which is what every run did before sharing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from charrnn_tui.engine.checkpoint import load_checkpoint
from charrnn_tui.engine.run.threads import available_cores

CLI = [sys.executable, "-m", "charrnn_tui.engine"]


def together(n: int, preset: str, seconds: float, runs: Path, threads: int | None) -> list[float]:
    extra = ["--threads", str(threads)] if threads else []
    procs = [subprocess.Popen([*CLI, "train", "shakespeare", "--preset", preset, "--headless", "--max-time",
                               f"{seconds}s", "--sample-interval", "0", "--checkpoint-interval", "0",
                               "--runs-dir", str(runs), "--name", f"run{i}", *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(n)]
    for p in procs:
        _, err = p.communicate(timeout=seconds * 20 + 300)
        if p.returncode:
            raise RuntimeError(err)
    rates = []
    for i in range(n):
        checkpoint = load_checkpoint(runs / f"run{i}" / "latest.pt")
        rates.append(checkpoint["tokens_seen"] / checkpoint["train_seconds"])
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    cores = available_cores()
    print(f"{cores} cores (os.sched_getaffinity), preset {args.preset}, {args.seconds:g} s each")
    for n in args.runs:
        for label, threads in (("shared", None), ("each takes all", cores)):
            if n == 1 and threads:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                rates = together(n, args.preset, args.seconds, Path(tmp), threads)
            print(f"{n} run(s), {label:14s}: " + ", ".join(f"{r:,.0f}" for r in rates)
                  + f" chars/s (total {sum(rates):,.0f})", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
