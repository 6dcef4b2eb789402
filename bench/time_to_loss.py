"""Time to a good model: validation loss against seconds of training, beside a plain reference loop.

    python bench/time_to_loss.py [--preset small] [--seconds 75] [--reference-seconds 20] [--json]

Protocol (nanoGPT's shakespeare_char, so figures compare): tiny-shakespeare, the last 10% is
validation, loss in nats/char over the *whole* validation split read in order with the hidden
state carried (parallel streams). Seconds are training time; evaluation time is excluded and
reported apart. The reference is the simplest loop one would write from the PyTorch docs
(nn.Embedding + nn.LSTM/GRU/RNN + nn.Linear, AdamW, the same batch shape and clipping), timed in
the same run, so the engine's overhead shows as a ratio whatever the machine's speed that day.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine import events as ev
from charrnn_tui.engine.corpus import load_corpus
from charrnn_tui.engine.device import pick_device
from charrnn_tui.engine.trainer import Trainer
from charrnn_tui.engine.vocab import CharVocab

CHECKPOINTS = (15, 30, 60, 75)


def eval_points(budget: float) -> list[float]:
    points = [p for p in CHECKPOINTS if p < budget]
    t = 120
    while t < budget:
        points.append(t)
        t += 60
    return [*points, budget]


def run_engine(config: cfg.TrainConfig) -> dict:
    points = eval_points(config.max_time)
    curve: list[dict] = []
    state = {"next": 0, "trainer": None, "chars_per_s": []}

    def on_event(event: ev.Event) -> None:
        trainer = state["trainer"]
        if isinstance(event, ev.Progress):
            state["chars_per_s"].append(event.tokens_per_s)
            if state["next"] < len(points) - 1 and event.train_seconds >= points[state["next"]]:
                state["next"] += 1
                trainer.evaluate_now()
        elif isinstance(event, ev.Evaluated):
            curve.append({"seconds": round(trainer.train_seconds, 1), "step": event.step,
                          "val_nats": event.nats, "eval_seconds": event.seconds})

    with tempfile.TemporaryDirectory() as runs:
        trainer = Trainer(config, on_event=on_event, runs_dir=Path(runs))
        state["trainer"] = trainer
        trainer.run()
    return {"curve": curve, "chars_per_s": trainer.tokens_seen / trainer.train_seconds, "steps": trainer.step}


class ReferenceModel(nn.Module):
    def __init__(self, vocab: int, m: cfg.ModelConfig):
        super().__init__()
        self.embedding = nn.Embedding(vocab, m.embedding or 64)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[m.kind]
        self.rnn = rnn(m.embedding or 64, m.hidden, m.layers, batch_first=True)
        self.head = nn.Linear(m.hidden, vocab)

    def forward(self, x, h=None):
        out, h = self.rnn(self.embedding(x), h)
        return self.head(out), h


def run_reference(config: cfg.TrainConfig, seconds: float) -> dict:
    """The plain loop: sequential streams, state carried and detached, AdamW, clipping."""
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    text = load_corpus("shakespeare").text
    vocab = CharVocab.build(text)
    ids = vocab.encode(text).long()
    train = ids[: len(ids) - len(ids) // 10].to(device)
    b, t = config.batch_size, config.seq_len
    streams = train[: len(train) // b * b].view(b, -1)
    model = ReferenceModel(len(vocab), config.model).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, fused=device.type == "cuda" or None)
    h, pos, steps, tokens = None, 0, 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if pos + t + 1 > streams.size(1):
            pos, h = 0, None
        x, y = streams[:, pos : pos + t], streams[:, pos + 1 : pos + t + 1]
        logits, h = model(x, h)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        h = tuple(s.detach() for s in h) if isinstance(h, tuple) else h.detach()
        pos += t
        steps += 1
        tokens += x.numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"chars_per_s": tokens / elapsed, "steps": steps, "final_loss": loss.item()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help="default: the device's default preset")
    parser.add_argument("--seconds", type=float, default=75.0, help="training budget (default: 75)")
    parser.add_argument("--reference-seconds", type=float, default=20.0, help="reference loop timing (default: 20)")
    parser.add_argument("--device", default="auto", choices=cfg.DEVICES)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    device = pick_device(args.device)
    preset = args.preset or cfg.preset_for_device(device.type)
    config = cfg.apply_preset(cfg.TrainConfig(corpus="shakespeare"), preset)
    config = dataclasses.replace(config, max_time=args.seconds, device=args.device, sample_interval=0,
                                 checkpoint_interval=0, eval_interval=10**9, report_interval=0.05)
    from train_speed import parse_value  # same --set syntax as bench/train_speed.py

    top, model = {}, {}
    for item in args.set:
        key, _, value = item.partition("=")
        (model if key.startswith("model.") else top)[key.removeprefix("model.")] = parse_value(value)
    config = dataclasses.replace(config, **top, model=dataclasses.replace(config.model, **model))

    reference_before = run_reference(config, args.reference_seconds / 2)
    engine = run_engine(config)
    reference_after = run_reference(config, args.reference_seconds / 2)
    reference = (reference_before["chars_per_s"] + reference_after["chars_per_s"]) / 2
    m = config.model
    result = {
        "preset": preset, "device": str(device), "threads": torch.get_num_threads(),
        "model": f"{m.kind} {m.layers}x{m.hidden} emb {m.embedding}", "batch": config.batch_size,
        "seq_len": config.seq_len, "lr": config.lr, "budget_s": args.seconds, "steps": engine["steps"],
        "engine_chars_per_s": engine["chars_per_s"], "reference_chars_per_s": reference,
        "ratio_to_reference": engine["chars_per_s"] / reference, "curve": engine["curve"],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"preset {preset}: {result['model']}, batch {config.batch_size} x seq {config.seq_len}, lr {config.lr}, "
          f"{device} ({result['threads']} threads)")
    print(f"{'train s':>8} {'step':>7} {'val nats':>9} {'val bpc':>8} {'eval s':>7}")
    for point in engine["curve"]:
        print(f"{point['seconds']:>8.1f} {point['step']:>7} {point['val_nats']:>9.4f} "
              f"{point['val_nats'] / 0.6931471805599453:>8.4f} {point['eval_seconds']:>7.2f}")
    print(f"engine {engine['chars_per_s']:,.0f} chars/s; plain reference loop {reference:,.0f} chars/s "
          f"(before {reference_before['chars_per_s']:,.0f}, after {reference_after['chars_per_s']:,.0f}); "
          f"ratio {result['ratio_to_reference']:.3f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
