"""Memory over a long run with viewers attached: the engine's, a long-lived app's, and a cycling one's.

    python bench/soak.py [--minutes 120] [--preset tiny] [--corpus timemachine] [--every 180] [--sample 30]
                         [--sample-interval 15s]

Starts a detached run (trained until stopped) and two apps attached to it in real terminals (tmux,
80x24): one stays attached for the whole soak; the other detaches (`d`) every --every seconds and a
new one attaches. Every --sample seconds it prints the resident memory (VmRSS) of the engine, of the
long-lived app and of the cycling app attached then, the run's step, and at the end the first and last
quarter's averages and the growth per hour.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tui_overhead import CLI, Tmux  # noqa: E402


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pids(pattern: str) -> list[int]:
    """Python processes whose command line matches (not the shell that started them)."""
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    found = []
    for pid in map(int, out.split()):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if b"python" in argv0:
            found.append(pid)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--corpus", default="timemachine")
    parser.add_argument("--every", type=float, default=180.0, help="seconds between detach and re-attach")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between memory samples")
    parser.add_argument("--sample-interval", default="15s",
                        help="the run's live samples (train --sample-interval); shorter churns the apps' sample views "
                             "faster")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that `finally` stops the run and the terminals
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        started = subprocess.run([*CLI, "train", args.corpus, "--preset", args.preset, "--runs-dir", str(runs),
                                  "--name", "soak", "--sample-interval", args.sample_interval, "--detach"],
                                 capture_output=True, text=True)
        if started.returncode:
            print(started.stderr)
            return 1
        engine = pids(f"charrnn_tui.engine train {args.corpus} .*--name soak")[0]
        attach = f"{shlex.join(CLI)} attach soak --runs-dir {runs}; sleep 3600"
        pattern = f"charrnn_tui.tui.cli attach soak --runs-dir {runs}"
        steady = Tmux(attach)
        steady.wait_for("TRAINING")
        steady_app = pids(pattern)[0]
        cycling = Tmux(attach)
        cycling.wait_for("TRAINING")
        began = last_attach = time.monotonic()
        end = began + args.minutes * 60
        rows = []
        print(" minutes  engine MB  steady app MB  cycling app MB  step", flush=True)
        try:
            while time.monotonic() < end:
                if time.monotonic() - last_attach >= args.every:
                    cycling("send-keys", "-t", "main", "d")
                    time.sleep(2)
                    cycling.close()
                    cycling = Tmux(attach)
                    cycling.wait_for("TRAINING")
                    last_attach = time.monotonic()
                others = [p for p in pids(pattern) if p != steady_app]
                status = subprocess.run([*CLI, "runs", "--json", "--runs-dir", str(runs)], capture_output=True,
                                        text=True).stdout
                step = next((r["step"] for r in json.loads(status) if r["name"] == "soak"), None)
                row = ((time.monotonic() - began) / 60, rss_mb(engine), rss_mb(steady_app),
                       rss_mb(others[0]) if others else None, step)
                rows.append(row)
                print(f"{row[0]:8.1f}  {row[1] or 0:9.1f}  {row[2] or 0:13.1f}  {row[3] or 0:14.1f}  {row[4]}",
                      flush=True)
                if "TRAINING" not in steady.screen():
                    print("the long-lived app no longer shows TRAINING:\n" + steady.screen(), flush=True)
                time.sleep(args.sample)
        finally:
            steady.close()
            cycling.close()
            subprocess.run([*CLI, "stop", "soak", "--runs-dir", str(runs), "--no-save"], capture_output=True)
    quarter = max(1, len(rows) // 4)
    hours = max(rows[-1][0] - rows[0][0], 1e-9) / 60
    for label, column in (("engine", 1), ("steady app", 2), ("cycling app", 3)):
        first = statistics.mean(r[column] for r in rows[:quarter] if r[column])
        last = statistics.mean(r[column] for r in rows[-quarter:] if r[column])
        print(f"{label}: first quarter {first:.1f} MB, last quarter {last:.1f} MB, "
              f"{(last - first) / hours:+.1f} MB/hour over {hours * 60:.0f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
