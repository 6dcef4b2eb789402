"""Generation speed: chars/s of stateful sampling at batch 1, one network step per character.

    python bench/sample_speed.py [--layers 2] [--hidden 256] [--chars 5000] [--device auto]

Compares the engine's generator (the model's weights stepped through torch.lstm_cell and
friends, sampled on the device, copied back in chunks) with calling nn.LSTM once per character,
the way most tutorials write it. Untrained weights: speed does not depend on what was learnt.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from charrnn_tui.corpora import bundled_path
from charrnn_tui.engine.config import ModelConfig
from charrnn_tui.engine.model.device import pick_device
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.model.sampling import SampleSettings, TextGenerator
from charrnn_tui.engine.text.vocab import CharVocab


@torch.no_grad()
def per_call_baseline(model: CharRNN, n: int) -> float:
    """The tutorial loop: model(x, state) for every character, .item() each time."""
    x = torch.zeros(1, 1, dtype=torch.long, device=model.head.weight.device)
    state = None
    t0 = time.perf_counter()
    for _ in range(n):
        logits, state = model(x, state)
        probs = torch.softmax(logits[0, -1] / 0.8, dim=-1)
        x = torch.tensor([[torch.multinomial(probs, 1).item()]], device=x.device)
    return n / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="lstm", choices=["lstm", "gru", "rnn"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--chars", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = pick_device(args.device)
    vocab = CharVocab.build(bundled_path("shakespeare").read_text())
    model = CharRNN(ModelConfig(kind=args.kind, layers=args.layers, hidden=args.hidden, embedding=64,
                                vocab_size=len(vocab))).to(device).eval()
    generator = TextGenerator(model, vocab)
    generator.generate("ROMEO:", SampleSettings(length=200, seed=0))  # warm-up
    engine = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        out = generator.generate("ROMEO:", SampleSettings(length=args.chars, seed=r))
        engine.append(len(out.text) / (time.perf_counter() - t0))
    baseline = [per_call_baseline(model, min(args.chars, 2000)) for _ in range(args.repeats)]
    print(f"{args.kind} {args.layers}x{args.hidden}, batch 1, {device} ({torch.get_num_threads()} threads), "
          f"{args.chars} chars per run, best of {args.repeats}")
    print(f"engine generator (cell steps, sampled on device): {max(engine):>9,.0f} chars/s")
    print(f"nn.{args.kind.upper()} call per character + .item():   {max(baseline):>9,.0f} chars/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
