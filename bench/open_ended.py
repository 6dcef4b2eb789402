"""Open-ended default runs side by side: the best validation after 1, 3 and 10 minutes of training.

    python bench/open_ended.py --other /path/to/older/checkout/.venv/bin/charrnn-tui
    python bench/open_ended.py --minutes 3 --corpus timemachine

For each corpus it starts `charrnn-tui train CORPUS --headless` (the app's default run, with no stop
condition) from this checkout and, with --other, from another install at the same time, in one runs
folder: the two share the machine as two runs do (its cores split between them), so each sees the
same load. It reads each run's metrics.jsonl, stops both (SIGTERM: they save and stop) once both
have trained the given minutes, and prints the best validation loss reached within 1, 3 and 10
minutes of training time (metrics.jsonl's elapsed_s: evaluations and samples not counted), with
the learning rate at the end. Every engine it starts is stopped when it ends, however it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORPORA = {"timemachine": [], "jokes": ["--tokens", "word"], "shakespeare": []}
MARKS = (60, 180, 600)


def this_install() -> str:
    exe = Path(sys.executable).with_name("charrnn-tui")
    return str(exe) if exe.exists() else "charrnn-tui"


def read_metrics(path: Path) -> list[dict]:
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return records
    for line in lines:
        with contextlib.suppress(ValueError):  # a line being written
            records.append(json.loads(line))
    return records


def best_within(records: list[dict], seconds: float) -> float | None:
    values = [r["val_loss"] for r in records if "val_loss" in r and r["elapsed_s"] <= seconds]
    return min(values) if values else None


def trained_seconds(records: list[dict]) -> float:
    return max((r["elapsed_s"] for r in records), default=0.0)


def run_pair(corpus: str, installs: dict[str, str], minutes: float, runs: Path) -> dict[str, list[dict]]:
    procs: dict[str, subprocess.Popen] = {}
    logs = {}
    try:
        for name, exe in installs.items():
            logs[name] = open(runs / f"{corpus}-{name}.log", "w")  # noqa: SIM115 (closed below)
            procs[name] = subprocess.Popen(
                [exe, "train", corpus, *CORPORA.get(corpus, []), "--headless", "--runs-dir", str(runs),
                 "--name", f"{corpus}-{name}"],
                stdout=logs[name], stderr=subprocess.STDOUT, start_new_session=True)
        metrics = {name: runs / f"{corpus}-{name}" / "metrics.jsonl" for name in installs}
        while True:
            time.sleep(2)
            done = {name: trained_seconds(read_metrics(path)) >= minutes * 60 for name, path in metrics.items()}
            failed = [name for name, p in procs.items() if p.poll() is not None]
            if failed:
                raise SystemExit(f"{corpus}: the {', '.join(failed)} run ended early; see {runs}")
            if all(done.values()):
                break
        return {name: read_metrics(path) for name, path in metrics.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)  # saves and stops
        for p in procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for log in logs.values():
            log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", help="another install's charrnn-tui, run beside this one")
    parser.add_argument("--corpus", action="append", choices=list(CORPORA), help="(default: all three)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--runs-dir", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    installs = {"this": this_install()}
    if args.other:
        installs["other"] = args.other
    marks = [m for m in MARKS if m <= args.minutes * 60] or [args.minutes * 60]
    with tempfile.TemporaryDirectory(prefix="open-ended-") as tmp:
        runs = args.runs_dir or Path(tmp)
        runs.mkdir(parents=True, exist_ok=True)
        print("corpus | install | " + " | ".join(f"best val by {m / 60:g} min" for m in marks)
              + " | steps | lr at the end")
        for corpus in args.corpus or list(CORPORA):
            results = run_pair(corpus, installs, args.minutes, runs)
            for name, records in results.items():
                bests = [best_within(records, m) for m in marks]
                last = [r for r in records if r["elapsed_s"] <= args.minutes * 60][-1]
                cells = " | ".join("-" if b is None else f"{b:.4f}" for b in bests)
                print(f"{corpus} | {name} | {cells} | {last['step']:,} | {last['lr']:.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
