"""A big corpus: load time into compact ids, and peak memory while training on it.

    python bench/big_corpus.py [--megabytes 100] [--steps 50]

Writes a text file of the given size (tiny-shakespeare repeated, with a few non-ASCII characters
so the Unicode path is taken), then, in a fresh process each, times loading it into ids and trains
a few steps of the `small` preset on it, reporting the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from charrnn_tui.corpora import bundled_path

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from charrnn_tui.engine.text.corpus import load_corpus
from charrnn_tui.engine.text.vocab import build_vocab
t1 = time.perf_counter()
corpus = load_corpus(sys.argv[1])
t2 = time.perf_counter()
vocab = build_vocab(corpus.text)
ids = vocab.encode(corpus.text)
t3 = time.perf_counter()
print(json.dumps({"read_s": t2 - t1, "vocab_and_encode_s": t3 - t2, "ids_dtype": str(ids.dtype),
                  "ids_mb": ids.numel() * ids.element_size() / 1e6, "vocab": len(vocab),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=100.0)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    base = bundled_path("shakespeare").read_text() + "Café — naïve “quotes”.\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.txt"
        target = int(args.megabytes * 1e6)
        with open(path, "w", encoding="utf-8") as f:
            written = 0
            while written < target:
                written += f.write(base)
        size_mb = path.stat().st_size / 1e6
        load = json.loads(subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                                         check=True).stdout)
        t0 = time.perf_counter()
        train = subprocess.run(
            [sys.executable, "-c", "import resource, sys; from charrnn_tui.engine.cli.main import main; "
             "rc = main(sys.argv[1:]); print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); "
             "sys.exit(rc)",
             "train", str(path), "--preset", "small", "--max-steps", str(args.steps), "--eval-tokens", "200000",
             "--sample-interval", "0", "--checkpoint-interval", "0", "--runs-dir", str(Path(tmp) / "runs")],
            capture_output=True, text=True)
        wall = time.perf_counter() - t0
        peak = next((float(line.split()[1]) for line in train.stdout.splitlines() if line.startswith("PEAK")), None)
    print(f"corpus {size_mb:.0f} MB, {load['vocab']} distinct characters")
    print(f"load: read + decode {load['read_s']:.1f} s, vocabulary + encode {load['vocab_and_encode_s']:.1f} s, "
          f"total {load['read_s'] + load['vocab_and_encode_s']:.1f} s; ids {load['ids_dtype']} "
          f"({load['ids_mb']:.0f} MB); peak RSS {load['peak_rss_mb']:.0f} MB")
    print(f"train {args.steps} steps of `small` (whole run {wall:.0f} s, exit {train.returncode}): "
          f"peak RSS {peak:.0f} MB" if peak else f"training failed: {train.stderr[-500:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
