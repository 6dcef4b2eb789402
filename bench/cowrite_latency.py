"""Keystroke to next-token probabilities, against a run training at full speed, and what typing
costs the training.

    python bench/cowrite_latency.py [--preset small] [--corpus shakespeare] [--tokens char|word] [--keys 200] [--rate 8]

Starts a detached run, lets it warm up, then measures its training speed for --seconds with
nobody typing, and again while a client "types" a text at --rate keys a second, sending one
next_tokens request per keystroke (and a backspace every tenth key, as people do), timing each from
the request to the NextTokens answer for that text. Prints the latency's median, p95 and max, and
the training tokens/s without and with typing (from the run's metrics.jsonl).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tui_overhead import CLI  # noqa: E402

from charrnn_tui.engine import events as ev  # noqa: E402
from charrnn_tui.engine.protocol import AskNextTokens
from charrnn_tui.engine.serve.client import EngineClient  # noqa: E402

TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks? It is the east, and Juliet is the sun. "
        "Arise, fair sun, and kill the envious moon, who is already sick and pale with grief.")


def tokens_per_s(run_dir: Path, since: float, until: float) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train_loss" in r and since <= r["elapsed_s"] <= until]
    if len(train) < 2:
        return float("nan")
    return (train[-1]["tokens"] - train[0]["tokens"]) / (train[-1]["elapsed_s"] - train[0]["elapsed_s"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--corpus", default="shakespeare")
    parser.add_argument("--tokens", choices=("char", "word"), default="char")
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--rate", type=float, default=8.0, help="keystrokes a second")
    parser.add_argument("--seconds", type=float, default=20.0, help="training measured without typing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        started = subprocess.run([*CLI, "train", args.corpus, "--preset", args.preset, "--tokens", args.tokens,
                                  "--runs-dir", str(runs),
                                  "--name", "cowrite", "--checkpoint-interval", "0", "--detach"],
                                 capture_output=True, text=True)
        if started.returncode:
            print(started.stderr)
            return 1
        run_dir = runs / "cowrite"
        answers: dict[str, float] = {}
        arrived = threading.Condition()
        clock = {"elapsed": 0.0}

        def on_event(event: ev.Event) -> None:
            if isinstance(event, ev.NextTokens):
                with arrived:
                    answers.setdefault(event.text, time.perf_counter())
                    arrived.notify_all()
            elif isinstance(event, ev.Progress):
                clock["elapsed"] = event.train_seconds

        client = EngineClient(run_dir, on_event, viewer=False)
        client.connect()
        reader = threading.Thread(target=client.run, daemon=True)
        reader.start()
        try:
            time.sleep(10)  # past start-up and the first evaluation
            quiet_from = clock["elapsed"]
            time.sleep(args.seconds)
            quiet_to = typing_from = clock["elapsed"]
            latencies = []
            text = ""
            for k in range(args.keys):
                text = text[:-1] if k % 10 == 9 and text else text + TEXT[len(text) % len(TEXT)]
                sent = time.perf_counter()
                client.request(AskNextTokens(text))
                with arrived:
                    arrived.wait_for(lambda t=text: t in answers, timeout=5)
                if text in answers:
                    latencies.append((answers.pop(text) - sent) * 1000)
                time.sleep(max(0.0, 1 / args.rate - (time.perf_counter() - sent)))
            typing_to = clock["elapsed"]
        finally:
            client.detach()
            subprocess.run([*CLI, "stop", "cowrite", "--runs-dir", str(runs), "--no-save"], capture_output=True)
        latencies.sort()
        print(f"{args.preset} on {args.corpus} ({args.tokens} level), {len(latencies)} of {args.keys} keystrokes "
              f"answered at {args.rate:g} keys/s: median {statistics.median(latencies):.1f} ms, "
              f"p95 {latencies[int(0.95 * (len(latencies) - 1))]:.1f} ms, max {latencies[-1]:.1f} ms")
        quiet, typing = tokens_per_s(run_dir, quiet_from, quiet_to), tokens_per_s(run_dir, typing_from, typing_to)
        print(f"training: {quiet:,.0f} tokens/s with nobody typing, {typing:,.0f} while typing "
              f"({typing / quiet:.3f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
