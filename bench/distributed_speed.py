"""One run on N processes under torchrun (DDP): combined tokens/s against one process.

    python bench/distributed_speed.py [--seconds 30] [--preset small] [--procs 1 2] [--batch-size 32]
                                      [--device cpu|cuda]

For each N, `torchrun --standalone --nproc-per-node N` trains tiny-shakespeare for --seconds with
the same global --batch-size (N=1 runs without torchrun, as a user would); the combined tokens/s
comes from the run's checkpoint (tokens seen over training time), so start-up is left out. On CPU
each process gets cores / N threads (the run's default); on CUDA one GPU per process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from charrnn_tui.engine.checkpoint import load_checkpoint

ENGINE = [sys.executable, "-m", "charrnn_tui.engine"]


def tokens_per_s(procs: int, args: argparse.Namespace, runs: Path) -> tuple[float, float]:
    launcher = ENGINE if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                           "--nproc-per-node", str(procs), "-m", "charrnn_tui.engine"]
    done = subprocess.run([*launcher, "train", "shakespeare", "--preset", args.preset, "--batch-size",
                           str(args.batch_size), "--device", args.device, "--headless", "--max-time",
                           f"{args.seconds}s", "--sample-interval", "0", "--checkpoint-interval", "0",
                           "--runs-dir", str(runs), "--name", f"n{procs}"],
                          capture_output=True, text=True, timeout=args.seconds * 10 + 300)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    checkpoint = load_checkpoint(runs / f"n{procs}" / "latest.pt")
    return checkpoint["tokens_seen"] / checkpoint["train_seconds"], checkpoint["best_val"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    print(f"preset {args.preset}, global batch {args.batch_size}, {args.device}, {args.seconds:g} s each")
    base = None
    for n in args.procs:
        with tempfile.TemporaryDirectory() as tmp:
            rate, best = tokens_per_s(n, args, Path(tmp))
        base = base or rate
        print(f"{n} process(es): {rate:,.0f} tokens/s combined ({rate / base:.2f}x), validation {best:.4f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
