"""What clients' requests cost a run's training: steps/s alone, then with a client flooding the most
expensive requests the run takes.

    python bench/request_cost.py [--preset tiny] [--corpus shakespeare] [--tokens word] [--seconds 20]
                                 [--threads 1] [--rounds 3] [--mix prompt,next_tokens]

Starts a detached run (`--threads 1`, so that on a small machine the engine keeps one core and this
script, the client, the other), lets it warm up, then counts its steps over --seconds of wall-clock
time with nobody asking anything, and again while one client sends, at the run's request rate limit
(server.REQUESTS_PER_SECOND), the costliest requests of --mix:

  prompt       the longest prompt (control.MAX_PROMPT_CHARS of the corpus) continued for the longest
               length (control.MAX_PROMPT_LENGTH tokens)
  next_tokens  a text of MAX_PROMPT_CHARS that differs from the previous one from its first character,
               so nothing the run keeps between keystrokes can be reused
  sample_now   a sample of the run's --sample-length

Steps/s are wall-clock: the step of the run's Progress events over the time they arrived; beside
them, the share of the wall clock the run counted as training (what the request budget holds) and
steps per training second (what a step cost meanwhile). Each of --rounds is a fresh run measured
alone then flooded; the median ratio is the figure (the issue's bar: at least 0.8): on a machine
shared with other work one round's speeds drift by 10-20%. Stops each run (and makes sure its
process is gone) however it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from charrnn_tui.corpora import bundled_path
from charrnn_tui.engine import protocol
from charrnn_tui.engine.run.control import MAX_PROMPT_CHARS, MAX_PROMPT_LENGTH
from charrnn_tui.engine.runs import SOCKET, unix_address
from charrnn_tui.engine.serve.server import REQUESTS_PER_SECOND

CLI = [str(Path(sys.executable).with_name("charrnn-tui"))]  # the console script, as a user runs it
NAME = "request-cost"
EVENT_NAME = re.compile(rb'"event":\{"event":"(\w+)"')


class RawClient:
    """A client on the run's socket that decodes only what it counts: a bench's own CPU time would
    otherwise be taken from the engine it measures (two cores). Keeps (wall time, step) of each
    Progress event and counts of the events it is sent, by type."""

    def __init__(self, run_dir: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with unix_address(run_dir / SOCKET) as address:
            self.sock.connect(address)
        self.sock.sendall(protocol.encode(protocol.hello()))
        self.lock = threading.Lock()
        self.points: list[tuple[float, int, float]] = []  # wall time, step, the run's training seconds
        self.counts: dict[str, int] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def request(self, name: str, **args: object) -> None:
        self.sock.sendall(protocol.encode(protocol.request(name, **args)))

    def _read(self) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(1 << 20):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._count(line)

    def _count(self, line: bytes) -> None:
        kind = EVENT_NAME.search(line[:200])
        name = kind.group(1).decode() if kind else "other"
        with self.lock:
            if name == "Progress":
                progress = json.loads(line)["event"]
                self.points.append((time.monotonic(), progress["step"], progress["train_seconds"]))
            elif name == "Notice" or b'"type":"error"' in line[:30]:
                message = json.loads(line)
                text = message["event"]["message"] if name == "Notice" else message["message"]
                name = f"{name if name == 'Notice' else 'error'}: {text[:60]}"
            self.counts[name] = self.counts.get(name, 0) + 1

    def speeds(self, since: float, until: float) -> tuple[float, float, float]:
        """Steps per wall-clock second; the share of the wall clock the run counted as training;
        steps per training second (what a step costs, whatever else the loop does)."""
        with self.lock:
            inside = [p for p in self.points if since <= p[0] <= until]
        if len(inside) < 2:
            return float("nan"), float("nan"), float("nan")
        (t0, s0, r0), (t1, s1, r1) = inside[0], inside[-1]
        return (s1 - s0) / (t1 - t0), (r1 - r0) / (t1 - t0), (s1 - s0) / max(r1 - r0, 1e-9)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def flood(client: RawClient, mix: list[str], text: str, until: float, sent: dict[str, int]) -> None:
    """Requests at the rate limit, round-robin over `mix`, until `until`."""
    interval = 1.0 / REQUESTS_PER_SECOND
    k = 0
    next_at = time.monotonic()
    while time.monotonic() < until:
        name = mix[k % len(mix)]
        if name == "prompt":
            client.request("prompt", text=text[:MAX_PROMPT_CHARS], length=MAX_PROMPT_LENGTH)
        elif name == "next_tokens":
            start = (k * 7919) % (len(text) - MAX_PROMPT_CHARS)  # a new first character each time
            client.request("next_tokens", text=text[start : start + MAX_PROMPT_CHARS])
        else:
            client.request(name)
        sent[name] = sent.get(name, 0) + 1
        k += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))


def stop_run(runs: Path) -> None:
    """Stop the run, and if its process outlives that, end it (it is ours: we started it)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run([*CLI, "stop", NAME, "--runs-dir", str(runs), "--no-save"], capture_output=True, timeout=60)
    status = runs / NAME / "status.json"
    with contextlib.suppress(OSError, ValueError):
        pid = json.loads(status.read_text()).get("pid")
        if pid:
            for _ in range(100):
                os.kill(pid, 0)  # raises once it is gone
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)


def one_round(args: argparse.Namespace, mix: list[str], text: str) -> float:
    """A fresh run: alone, then flooded; prints both and returns their ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        started = subprocess.run([*CLI, "train", args.corpus, "--preset", args.preset, "--tokens", args.tokens,
                                  "--threads", str(args.threads), "--runs-dir", str(runs), "--name", NAME,
                                  "--checkpoint-interval", "0", "--sample-interval", "0",
                                  "--eval-interval", "1000000", "--detach"],  # no evaluation inside a phase
                                 capture_output=True, text=True)
        if started.returncode:
            stop_run(runs)
            raise SystemExit(started.stdout + started.stderr)
        watch = flooder = None
        sent: dict[str, int] = {}
        try:
            watch = RawClient(runs / NAME)
            time.sleep(args.warm_up)  # past start-up
            alone_at = (time.monotonic(), time.monotonic() + args.seconds)
            time.sleep(args.seconds)
            flooder = RawClient(runs / NAME)
            flood_from = time.monotonic()
            flood(flooder, mix, text, flood_from + args.seconds, sent)
            flooded_at = (flood_from, time.monotonic())
            time.sleep(1.5)  # the last progress event of the phase
        finally:
            for client in (flooder, watch):
                if client is not None:
                    client.close()
            stop_run(runs)
    (alone, alone_share, alone_cost), (flooded, share, cost) = watch.speeds(*alone_at), watch.speeds(*flooded_at)
    print(f"  alone:   {alone:6.2f} steps/s ({alone_share:.0%} of the time training, "
          f"{alone_cost:.2f} steps per training second)")
    print(f"  flooded: {flooded:6.2f} steps/s ({share:.0%} of the time training, "
          f"{cost:.2f} steps per training second)")
    print(f"  ratio {flooded / alone:.3f}; sent {sent}")
    got = {k: v for k, v in flooder.counts.items() if k not in ("Progress", "other")}
    print(f"  the flooder got back {got}", flush=True)
    return flooded / alone


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--corpus", default="shakespeare")
    parser.add_argument("--tokens", choices=("char", "word"), default="word")
    parser.add_argument("--seconds", type=float, default=20.0, help="each measurement, wall-clock")
    parser.add_argument("--warm-up", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=1, help="the engine's CPU threads")
    parser.add_argument("--rounds", type=int, default=3, help="fresh runs, each measured alone then flooded")
    parser.add_argument("--mix", default="prompt,next_tokens",
                        help="requests to flood with, comma-separated: prompt, next_tokens, sample_now")
    args = parser.parse_args()
    mix = [m for m in args.mix.split(",") if m]
    text = bundled_path(args.corpus).read_text()
    print(f"{args.preset} preset, {args.tokens} level on {args.corpus}, engine --threads {args.threads}, "
          f"{os.cpu_count()} cores, {args.seconds:g} s each, flooded with {'+'.join(mix)}")
    ratios = []
    for k in range(args.rounds):
        print(f"round {k + 1}:")
        ratios.append(one_round(args, mix, text))
    print(f"ratio, median of {len(ratios)}: {statistics.median(ratios):.3f} (the bar: at least 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
