"""How fast this device trains a model, measured: what sizes a sweep's plan (how many tokens the
budget buys). A few steps of the default trial's model on random tokens, at the thread count a trial
will get; nothing is written and the random state is restored afterwards."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.model.device import configure_backends, fork_rng, pick_device, synchronize, use_bf16
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.model.step import TrainStep
from charrnn_tui.engine.run.run_setup import make_optimizer
from charrnn_tui.engine.text.data import make_batcher
from charrnn_tui.engine.tune.space import Settings

WARMUP_STEPS = 3  # untimed: the allocator, the thread pool, cuDNN's autotuning
SLICES = 5  # timed slices of the probe: their median, so that one stall (another process's burst) is not the figure
OVERRUN = 3.0  # the timed part stops after this many times the seconds asked, whatever the slices done


def median_rate(step: Callable[[], None], seconds: float, *, slices: int = SLICES,
                settle: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.perf_counter) -> float:
    """Steps per second of `step()`: the median over `slices` slices of about seconds / slices each
    (at least one step a slice; `settle()` ends one: a GPU's queue drained), bounded: no slice starts
    after OVERRUN x `seconds`, so a device whose steps are slow gives a figure from the slices done
    (at least one) in bounded time."""
    rates: list[float] = []
    began = clock()
    while len(rates) < slices and (not rates or clock() - began < OVERRUN * seconds):
        started, steps = clock(), 0
        while steps < 1 or clock() - started < seconds / slices:
            step()
            steps += 1
        settle()
        rates.append(steps / max(clock() - started, 1e-9))
    return statistics.median(rates)


def training_speed(settings: Settings, vocab_size: int, *, preset: str, device_name: str = "auto",
                   threads: int | None = None, seconds: float = 2.0) -> float:
    """Tokens/s of training `settings`' model: the median of a few timed slices of about `seconds` in
    all, after a warm-up (median_rate)."""
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

            def timed_step() -> None:
                nonlocal state
                state = step(batcher.next(), state, settings.lr)
                if step.log.full:  # it holds 4,096 steps' losses: a fast GPU fills it in seconds
                    step.log.read()

            return median_rate(timed_step, seconds, settle=lambda: synchronize(device)) * settings.step_tokens
    finally:
        torch.set_num_threads(threads_before)
