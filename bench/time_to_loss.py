"""Time to a good model: validation loss against seconds of training, beside a plain reference loop.

    python bench/time_to_loss.py [--preset small] [--seconds 75] [--reference-seconds 20] [--json]
    python bench/time_to_loss.py --target 1.47 --every 10 --seconds 300   # time to a loss (the GPU figure)

Protocol (nanoGPT's shakespeare_char, so figures compare): tiny-shakespeare, the last 10% is
validation, loss in nats/char over the *whole* validation split read in order with the hidden
state carried (parallel streams). Seconds are training time; evaluation time is excluded and
reported apart. The reference is the simplest loop one would write from the PyTorch docs
(nn.Embedding + nn.LSTM/GRU/RNN + nn.Linear, AdamW, the same batch shape, dropout, clipping and
precision), timed in the same run in slices before training and after each evaluation, so that both
see the same drift of the machine's speed and the engine's overhead shows as a ratio. It runs as the
engine does: the backends set up alike (TF32 and cuDNN autotuning on CUDA), and the recurrent layers
where engine/model/device.py puts them (on CUDA outside the bf16 autocast, in fp32: autocast would run a
cuDNN RNN in fp16).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine import events as ev
from charrnn_tui.engine.model.device import autocast, configure_backends, pick_device, recurrent_precision, use_bf16
from charrnn_tui.engine.protocol import EvaluateNow, Stop
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.text.corpus import load_corpus
from charrnn_tui.engine.text.vocab import CharVocab

CHECKPOINTS = (15, 30, 60, 75)


def eval_points(budget: float, every: float | None = None) -> list[float]:
    if every:  # evenly, to time when a target is reached
        return [every * k for k in range(1, int(budget // every) + 1) if every * k < budget] + [budget]
    points = [p for p in CHECKPOINTS if p < budget]
    t = 120
    while t < budget:
        points.append(t)
        t += 60
    return [*points, budget]


def run_engine(config: cfg.TrainConfig, after_evaluation: Callable[[], None] = lambda: None,
               every: float | None = None, target: float | None = None) -> dict:
    """Train for config.max_time, validating at eval_points; with `target`, stop at the first
    validation at or below it (its time is the figure)."""
    points = eval_points(config.max_time, every)
    curve: list[dict] = []
    state = {"next": 0, "trainer": None, "chars_per_s": []}

    def on_event(event: ev.Event) -> None:
        trainer = state["trainer"]
        if isinstance(event, ev.Progress):
            state["chars_per_s"].append(event.tokens_per_s)
            if state["next"] < len(points) - 1 and event.train_seconds >= points[state["next"]]:
                state["next"] += 1
                trainer.request(EvaluateNow())
        elif isinstance(event, ev.Evaluated):
            curve.append({"seconds": round(trainer.trained.train_seconds, 1), "step": event.step,
                          "val_nats": event.nats, "eval_seconds": event.seconds})
            if target is not None and event.nats <= target:
                trainer.request(Stop(save=False))
            after_evaluation()  # not training time: the engine's clock counts only its steps

    with tempfile.TemporaryDirectory() as runs:
        trainer = Trainer(config, on_event=on_event, runs_dir=Path(runs))
        state["trainer"] = trainer
        trainer.run()
    trained = trainer.trained
    return {"curve": curve, "chars_per_s": trained.tokens_seen / trained.train_seconds, "steps": trained.step}


class ReferenceModel(nn.Module):
    def __init__(self, vocab: int, m: cfg.ModelConfig):
        super().__init__()
        self.embedding = nn.Embedding(vocab, m.embedding or 64)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[m.kind]
        self.rnn = rnn(m.embedding or 64, m.hidden, m.layers, batch_first=True,
                       dropout=m.dropout if m.layers > 1 else 0.0)
        self.drop = nn.Dropout(m.dropout)
        self.head = nn.Linear(m.hidden, vocab)

    def forward(self, x, h=None):
        x = self.embedding(x)
        with recurrent_precision(x.device):  # as CharRNN: fp32 outside the bf16 autocast on CUDA
            out, h = self.rnn(x, h)
        return self.head(self.drop(out)), h


class ReferenceLoop:
    """The plain loop: sequential streams, state carried and detached, AdamW, clipping. It runs in
    slices between the engine's evaluations, so both see the same drift of the machine's speed."""

    def __init__(self, config: cfg.TrainConfig):
        torch.manual_seed(config.seed)
        self.device = device = pick_device(config.device)
        configure_backends(device, config.threads)  # before its first slice, which runs before the engine's set-up
        self.bf16 = use_bf16(device, config.precision)
        text = load_corpus("shakespeare").text
        vocab = CharVocab.build(text)
        ids = vocab.encode(text).long()
        train = ids[: len(ids) - len(ids) // 10].to(device)
        self.batch, self.seq_len, self.clip = config.batch_size, config.seq_len, config.grad_clip
        self.streams = train[: len(train) // self.batch * self.batch].view(self.batch, -1)
        self.model = ReferenceModel(len(vocab), config.model).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                     fused=device.type == "cuda" or None)
        self.h, self.pos, self.tokens, self.seconds = None, 0, 0, 0.0
        self.slices: list[float] = []

    def warm_up(self, steps: int = 2) -> None:
        """Untimed steps: the allocator, the thread pool and (on CUDA) cuDNN's autotuning stay out of the
        first slice, a few seconds long (the engine pays them once in its whole budget)."""
        for _ in range(steps):
            self._step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _step(self) -> int:
        model, opt, t = self.model, self.opt, self.seq_len
        if self.pos + t + 1 > self.streams.size(1):
            self.pos, self.h = 0, None
        x = self.streams[:, self.pos : self.pos + t]
        y = self.streams[:, self.pos + 1 : self.pos + t + 1]
        with autocast(self.device, self.bf16):  # the engine's precision, so the ratio shows only overhead
            logits, h = model(x, self.h)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), self.clip)
        opt.step()
        self.h = tuple(s.detach() for s in h) if isinstance(h, tuple) else h.detach()
        self.pos += t
        return x.numel()

    def run(self, seconds: float) -> None:
        tokens = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            tokens += self._step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        self.tokens += tokens
        self.seconds += elapsed
        self.slices.append(tokens / elapsed)

    @property
    def chars_per_s(self) -> float:
        return self.tokens / self.seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help="default: the device's default preset")
    parser.add_argument("--seconds", type=float, default=75.0, help="training budget (default: 75)")
    parser.add_argument("--reference-seconds", type=float, default=20.0, help="reference loop timing (default: 20)")
    parser.add_argument("--device", default="auto", choices=cfg.DEVICES)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--target", type=float, default=None, help="stop at this validation loss (nats/char)")
    parser.add_argument("--every", type=float, default=None, help="validate every so many training seconds")
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

    reference_loop = ReferenceLoop(config)
    reference_loop.warm_up()
    slice_seconds = args.reference_seconds / (len(eval_points(args.seconds, args.every)) + 1)
    reference_loop.run(slice_seconds)
    engine = run_engine(config, after_evaluation=lambda: reference_loop.run(slice_seconds), every=args.every,
                        target=args.target)
    reference = reference_loop.chars_per_s
    m = config.model
    result = {
        "preset": preset, "device": str(device),
        "precision": "bf16" if use_bf16(device, config.precision) else "fp32", "threads": torch.get_num_threads(),
        "model": f"{m.kind} {m.layers}x{m.hidden} emb {m.embedding}", "batch": config.batch_size,
        "seq_len": config.seq_len, "lr": config.lr, "budget_s": args.seconds, "steps": engine["steps"],
        "engine_chars_per_s": engine["chars_per_s"], "reference_chars_per_s": reference,
        "reference_slices_chars_per_s": reference_loop.slices,
        "ratio_to_reference": engine["chars_per_s"] / reference, "curve": engine["curve"],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"preset {preset}: {result['model']}, batch {config.batch_size} x seq {config.seq_len}, lr {config.lr}, "
          f"{device} {result['precision']} ({result['threads']} threads)")
    print(f"{'train s':>8} {'step':>7} {'val nats':>9} {'val bpc':>8} {'eval s':>7}")
    for point in engine["curve"]:
        print(f"{point['seconds']:>8.1f} {point['step']:>7} {point['val_nats']:>9.4f} "
              f"{point['val_nats'] / 0.6931471805599453:>8.4f} {point['eval_seconds']:>7.2f}")
    if args.target is not None:
        reached = next((p for p in engine["curve"] if p["val_nats"] <= args.target), None)
        print(f"reached {args.target} nats/char at {reached['seconds']:.1f} s of training (step {reached['step']})"
              if reached else f"did not reach {args.target} nats/char in {args.seconds:g} s")
    slices = reference_loop.slices
    print(f"engine {engine['chars_per_s']:,.0f} chars/s; plain reference loop {reference:,.0f} chars/s "
          f"({len(slices)} slices between the evaluations, {min(slices):,.0f} to {max(slices):,.0f}); "
          f"ratio {result['ratio_to_reference']:.3f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
