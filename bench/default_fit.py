"""What the app's default run chooses for each bundled corpus: the start-up line on this machine (a
few seconds of real training, for its speed), and the same choice worked out for a GPU on paper.

    python bench/default_fit.py [--seconds 8] [--gpu-step-ms 10]

For each corpus: the model, dropout, batch, steps an epoch, and when the open-ended run's first
cosine ends (10 epochs or 15 minutes of training, whichever comes first) at the measured speed
here, or at an assumed GPU step time (no GPU has run this: say which you assumed). An LSTM's step
on a GPU is latency-bound at these batches (256 time steps one after another, each a small
matrix product per layer), so its time hardly depends on the batch: 10 ms is the estimate
for 2 layers, fast enough for the issue's 1-2M tokens/s at 128 x 256 on an H100 to hold with
room."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from charrnn_tui.engine import config as cfg  # noqa: E402
from charrnn_tui.engine import schedule  # noqa: E402
from charrnn_tui.engine.cli.arguments import configure  # noqa: E402
from charrnn_tui.engine.cli.main import build_parser  # noqa: E402
from charrnn_tui.engine.events import Notice, Progress  # noqa: E402
from charrnn_tui.engine.protocol import Stop
from charrnn_tui.engine.run.trainer import Trainer  # noqa: E402
from charrnn_tui.engine.text.corpus import load_corpus  # noqa: E402

CORPORA = (("shakespeare", "char"), ("timemachine", "char"), ("jokes", "word"))


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def horizon(steps_per_epoch: int, tokens_per_step: int, tokens_per_s: float) -> str:
    ten_epochs = schedule.FIRST_COSINE_EPOCHS * steps_per_epoch * tokens_per_step / tokens_per_s
    if ten_epochs <= schedule.FIRST_COSINE_SECONDS:
        return f"10 epochs, after {minutes(ten_epochs)}"
    epochs = schedule.FIRST_COSINE_SECONDS / ten_epochs * 10
    return f"15 minutes ({epochs:.1f} epochs; 10 would take {minutes(ten_epochs)})"


def on_this_machine(corpus: str, tokens: str, seconds: float, runs_dir: Path) -> None:
    args = build_parser().parse_args(["train", corpus, "--tokens", tokens, "--sample-interval", "0"])
    config, note = configure(args)
    events: list = []
    trainer: Trainer
    started: list[float] = []

    def on_event(event):
        events.append(event)
        if isinstance(event, Progress):
            started.append(time.monotonic())
            if event.train_seconds >= seconds:
                trainer.request(Stop(save=False))

    trainer = Trainer(config, runs_dir=runs_dir, on_event=on_event, notes=(note,) if note else ())
    trainer.run()
    plan = [e.message for e in events if isinstance(e, Notice) and "cosine" in e.message]
    speeds = [e.tokens_per_s for e in events if isinstance(e, Progress)][len(started) // 3:]  # past warm-up
    speed = sorted(speeds)[len(speeds) // 2]
    m = trainer.config.model
    epoch = trainer.built.batcher.batches_in_epoch()
    print(f"{corpus} ({tokens}), {trainer.device.type}: lstm {m.layers}x{m.hidden}, dropout {m.dropout:g}, "
          f"batch {trainer.config.batch_size} x {trainer.config.seq_len} ({epoch:,} steps an epoch), "
          f"{speed:,.0f} tokens/s measured; first cosine ends at "
          f"{horizon(epoch, trainer.config.batch_size * trainer.config.seq_len, speed)}")
    print(f"  start-up line: {plan[0] if plan else '(none)'}")


def on_a_gpu(corpus: str, tokens: str, step_seconds: float) -> None:
    text = load_corpus(corpus).text
    large = cfg.apply_preset(cfg.TrainConfig(tokens=tokens), "large")
    fitted = cfg.fit_to_corpus(large, len(text))
    # a word corpus has fewer tokens than characters: a fifth, about, for English
    train_tokens = int(len(text) * (1 - fitted.val_fraction) / (5 if tokens == "word" else 1))
    batch = cfg.fitted_batch_size(fitted.batch_size, fitted.seq_len, train_tokens)
    epoch = max(1, train_tokens // (batch * fitted.seq_len))
    m = fitted.model
    tokens_per_s = batch * fitted.seq_len / step_seconds
    print(f"{corpus} ({tokens}), cuda on paper: lstm {m.layers}x{m.hidden}, dropout {m.dropout:g}, "
          f"{cfg.recurrent_parameters(m, m.hidden) / 1e6:.1f}M weights, batch {batch} x {fitted.seq_len} "
          f"({epoch:,} steps an epoch); at an assumed {step_seconds * 1e3:g} ms a step ({tokens_per_s:,.0f} "
          f"tokens/s) the first cosine ends at {horizon(epoch, batch * fitted.seq_len, tokens_per_s)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="training seconds per corpus, for its speed (0: the GPU's rows only)")
    parser.add_argument("--gpu-step-ms", type=float, default=10.0,
                        help="the step time assumed for a GPU's rows (default: 10 ms, a latency-bound estimate)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs:
        for corpus, tokens in CORPORA if args.seconds > 0 else ():
            on_this_machine(corpus, tokens, args.seconds, Path(runs))
    for corpus, tokens in CORPORA:
        on_a_gpu(corpus, tokens, args.gpu_step_ms / 1e3)


if __name__ == "__main__":
    main()
