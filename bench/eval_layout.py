"""How the validation figure depends on the evaluation's layout: streams and warm-up.

    python bench/eval_layout.py RUN_OR_CHECKPOINT [--runs-dir DIR]

Scores the run's validation split with one sequential read (the exact figure), then with 16 to
1,024 parallel streams, each with 0 to 256 tokens of unscored warm-up, and with the default layout
that training and `charrnn-tui eval` use. Prints each figure, its difference from the exact one
and the time it took.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from charrnn_tui.engine.model.evaluate import evaluate
from charrnn_tui.engine.model.inference import load_model
from charrnn_tui.engine.runs import default_runs_dir, resolve_checkpoint
from charrnn_tui.engine.text.corpus import load_corpus
from charrnn_tui.engine.text.data import split_tokens, validation_ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--runs-dir", type=Path, default=None)
    args = parser.parse_args()
    loaded = load_model(resolve_checkpoint(args.run, args.runs_dir or default_runs_dir()), "cpu")
    c = loaded.config
    ids = loaded.vocab.encode(load_corpus(c.corpus, csv_column=c.csv_column, ascii_only=c.ascii,
                                          encoding=c.encoding).text)
    val = validation_ids(split_tokens(ids, c.val_fraction)[1], c.eval_tokens)
    start = time.perf_counter()
    exact = evaluate(loaded.model, val, streams=1).nats
    print(f"one sequential read: {exact:.5f} nats ({time.perf_counter() - start:.1f} s, {len(val) - 1:,} predictions)")
    for streams in (16, 54, 128, 256, 1024):
        for warmup in (0, 32, 128, 256):
            start = time.perf_counter()
            nats = evaluate(loaded.model, val, streams=streams, warmup=warmup).nats
            print(f"{streams:5d} streams, warm-up {warmup:3d}: {nats:.5f} ({nats - exact:+.5f}) "
                  f"{time.perf_counter() - start:.2f} s", flush=True)
    start = time.perf_counter()
    nats = evaluate(loaded.model, val).nats
    print(f"default layout: {nats:.5f} ({nats - exact:+.5f}) {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
