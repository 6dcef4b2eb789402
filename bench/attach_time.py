"""How long attaching to a long run takes: the welcome over the socket, and the app's first screen.

    python bench/attach_time.py [--steps 100000] [--repeats 5]

Builds a run whose checkpoint holds a --steps-long history (a tiny model trained briefly, its
history then extended to that many steps and 400 evaluations), resumes it detached, then times
(1) a client's connect: hello to the whole welcome decoded, and (2) `charrnn-tui attach` in a real
terminal (tmux 80x24): from the command to the loss panel showing the run's validation figures.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tui_overhead import CLI, Tmux  # noqa: E402

from charrnn_tui.engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from charrnn_tui.engine.history import LossHistory  # noqa: E402
from charrnn_tui.engine.serve.client import EngineClient  # noqa: E402


def long_run(runs: Path, steps: int) -> Path:
    trained = subprocess.run([*CLI, "train", "timemachine", "--preset", "tiny", "--headless", "--max-steps", "20",
                              "--runs-dir", str(runs), "--name", "long"], capture_output=True, text=True)
    if trained.returncode:
        raise RuntimeError(trained.stderr)
    path = runs / "long" / "latest.pt"
    checkpoint = load_checkpoint(path)
    losses = [1.3 + 3.0 * math.exp(-i / 5000) + 0.05 * math.sin(i) for i in range(steps)]
    checkpoint["history"]["losses"] = LossHistory.from_losses(losses).to_dict()
    checkpoint["history"]["val"] = [[s, 1.4 + 3.0 * math.exp(-s / 5000)] for s in range(250, steps + 1, 250)]
    checkpoint["step"] = steps
    save_checkpoint({k: v for k, v in checkpoint.items() if k not in ("format", "format_version")}, path)
    return path.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        run_dir = long_run(runs, args.steps)
        resumed = subprocess.run([*CLI, "train", "--resume", "long", "--runs-dir", str(runs), "--max-steps",
                                  str(args.steps * 10), "--detach"],
                                 capture_output=True, text=True)
        if resumed.returncode:
            print(resumed.stderr)
            return 1
        try:
            times, sizes = [], []
            for _ in range(args.repeats):
                client = EngineClient(run_dir, viewer=False)
                start = time.perf_counter()
                events = client.connect()
                times.append((time.perf_counter() - start) * 1000)
                sizes.append(len(client.welcome_events))
                client.close()
            print(f"welcome of a {args.steps:,}-step run ({sizes[0]} events): median "
                  f"{statistics.median(times):.0f} ms, max {max(times):.0f} ms over {args.repeats} connects")
            screens = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                terminal = Tmux(f"{shlex.join(CLI)} attach long --runs-dir {runs}; sleep 60")
                terminal.wait_for("bits/char", timeout=60, poll=0.01)  # the last validation, from the welcome
                screens.append(time.perf_counter() - start)
                terminal("send-keys", "-t", "main", "d")
                time.sleep(0.5)
                terminal.close()
            print(f"`charrnn-tui attach` to the loss panel drawn: median {statistics.median(screens):.2f} s, "
                  f"max {max(screens):.2f} s (Python start and imports included)")
            del events
        finally:
            subprocess.run([*CLI, "stop", "long", "--runs-dir", str(runs), "--no-save"], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
