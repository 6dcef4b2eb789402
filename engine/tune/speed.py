"""How fast this device trains a model, measured: what sizes a sweep's plan (how many tokens the
budget buys). A few steps of the default trial's model on random tokens, at the thread count a trial
will get; nothing is written and the random state is restored afterwards."""

from __future__ import annotations

import time

import torch

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.model.device import configure_backends, fork_rng, pick_device, synchronize, use_bf16
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.model.step import TrainStep
from charrnn_tui.engine.run.run_setup import make_optimizer
from charrnn_tui.engine.text.data import make_batcher
from charrnn_tui.engine.tune.space import Settings

WARMUP_STEPS = 3  # untimed: the allocator, the thread pool, cuDNN's autotuning


def training_speed(settings: Settings, vocab_size: int, *, preset: str, device_name: str = "auto",
                   threads: int | None = None, seconds: float = 2.0) -> float:
    """Tokens/s of training `settings`' model (at least three timed steps, about `seconds` of them)."""
    device = pick_device(device_name)
    config = cfg.apply_preset(cfg.TrainConfig(device=device_name), preset)
    config.model = cfg.ModelConfig(kind=settings.kind, layers=settings.layers, hidden=settings.hidden,
                                   embedding=settings.embedding, dropout=settings.dropout, vocab_size=vocab_size)
    threads_before = torch.get_num_threads()
    configure_backends(device, threads)
    try:
        with fork_rng(device):
            torch.manual_seed(0)
            model = CharRNN(config.model).to(device)
            step = TrainStep(model, make_optimizer(model, config, device), device,
                             bf16=use_bf16(device, config.precision), grad_clip=config.grad_clip)
            tokens = torch.randint(vocab_size, (settings.step_tokens * 8 + 1,))
            batcher = make_batcher("sequential", tokens.to(device), settings.batch_size, settings.seq_len, 0)
            state = None
            for _ in range(WARMUP_STEPS):
                state = step(batcher.next(), state, settings.lr)
            synchronize(device)
            started, steps = time.perf_counter(), 0
            while steps < 3 or time.perf_counter() - started < seconds:
                state = step(batcher.next(), state, settings.lr)
                steps += 1
                if step.log.full:  # it holds 4,096 steps' losses: a fast GPU fills it in seconds
                    step.log.read()
            synchronize(device)
            return steps * settings.step_tokens / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads_before)
