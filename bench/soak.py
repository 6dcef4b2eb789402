"""Memory over a long run with a viewer coming and going: the engine's and the app's.

    python bench/soak.py [--minutes 120] [--preset tiny] [--corpus timemachine] [--every 180] [--sample 30]

Starts a detached run (trained until stopped) and an app attached to it in a real terminal (tmux,
80x24); every --every seconds the app detaches (`d`) and a new one attaches. Every --sample seconds
it prints the resident memory (VmRSS) of the engine and of the app attached then, and at the end
the first and last quarter's averages and the growth per hour.
"""

from __future__ import annotations

import argparse
import shlex
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        started = subprocess.run([*CLI, "train", args.corpus, "--preset", args.preset, "--runs-dir", str(runs),
                                  "--name", "soak", "--detach"], capture_output=True, text=True)
        if started.returncode:
            print(started.stderr)
            return 1
        engine = pids(f"charrnn_tui.engine train {args.corpus} .*--name soak")[0]
        attach = f"{shlex.join(CLI)} attach soak --runs-dir {runs}; sleep 3600"
        terminal = Tmux(attach)
        terminal.wait_for("TRAINING")
        began = last_attach = time.monotonic()
        end = began + args.minutes * 60
        rows = []
        print(" minutes  engine MB  app MB  step")
        try:
            while time.monotonic() < end:
                if time.monotonic() - last_attach >= args.every:
                    terminal("send-keys", "-t", "main", "d")
                    time.sleep(2)
                    terminal.close()
                    terminal = Tmux(attach)
                    terminal.wait_for("TRAINING")
                    last_attach = time.monotonic()
                apps = pids(f"charrnn_tui.tui.cli attach soak --runs-dir {runs}")
                app_mb = rss_mb(apps[0]) if apps else None
                status = subprocess.run([*CLI, "runs", "--json", "--runs-dir", str(runs)], capture_output=True,
                                        text=True).stdout
                step = next((r["step"] for r in __import__("json").loads(status) if r["name"] == "soak"), None)
                row = ((time.monotonic() - began) / 60, rss_mb(engine), app_mb, step)
                rows.append(row)
                print(f"{row[0]:8.1f}  {row[1] or 0:9.1f}  {row[2] or 0:6.1f}  {row[3]}", flush=True)
                time.sleep(args.sample)
        finally:
            terminal.close()
            subprocess.run([*CLI, "stop", "soak", "--runs-dir", str(runs), "--no-save"], capture_output=True)
    quarter = max(1, len(rows) // 4)
    hours = max(rows[-1][0] - rows[0][0], 1e-9) / 60
    for label, column in (("engine", 1), ("app", 2)):
        first = statistics.mean(r[column] for r in rows[:quarter] if r[column])
        last = statistics.mean(r[column] for r in rows[-quarter:] if r[column])
        print(f"{label}: first quarter {first:.1f} MB, last quarter {last:.1f} MB, "
              f"{(last - first) / hours:+.1f} MB/hour over {hours * 60:.0f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
