"""What a run is made of once set-up has built it (engine/run/run_setup.py): the pieces the loop, the
evaluations, the samples and the requests use, each there for the whole run.

The progress of training (the step, the time and tokens trained, the histories, the best
validation loss) is the other dataclass here, `Trained`: it changes every step, the Run does not.
A checkpoint is the two together (engine/run/checkpoints.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.events import Event, RunInfo
from charrnn_tui.engine.history import LossHistory
from charrnn_tui.engine.model.model import CharRNN, State
from charrnn_tui.engine.model.sampling import TextGenerator
from charrnn_tui.engine.model.step import TrainStep
from charrnn_tui.engine.run import schedule
from charrnn_tui.engine.run.distributed import Peers
from charrnn_tui.engine.run.metrics import MetricsLog
from charrnn_tui.engine.run.schedule import Schedule
from charrnn_tui.engine.runs import RunLock
from charrnn_tui.engine.text.corpus import Corpus
from charrnn_tui.engine.text.data import Batcher
from charrnn_tui.engine.text.novelty import BackgroundIndex
from charrnn_tui.engine.text.run_text import TextFingerprint
from charrnn_tui.engine.text.vocab import CharVocab, WordVocab

EventSink = Callable[[Event], None]  # where a run's events go (a server, a printer, a test's list)


@dataclass
class Run:
    config: cfg.TrainConfig  # a resumed run's is its checkpoint's, with the user's changes
    device: torch.device
    bf16: bool
    vocab: CharVocab | WordVocab
    model: CharRNN
    optimizer: torch.optim.Optimizer
    train_step: TrainStep
    train_ids: torch.Tensor  # on the device
    val_ids: torch.Tensor  # on the device: the part of the split that evaluations read
    batcher: Batcher
    generator: TextGenerator
    schedule: Schedule
    peers: Peers  # Alone for one process, the ProcessGroup of a distributed run
    # The leader's; None in a follower of a distributed run, which keeps no folder, lock or logs.
    run_dir: Path | None = None
    lock: RunLock | None = None
    metrics: MetricsLog | None = None
    copy_index: BackgroundIndex | None = None  # samples' copies from the corpus
    info: RunInfo | None = None  # said in Started, kept in status.json
    corpus: Corpus | None = None  # its name and source (its text is dropped once the ids are made)
    text_fingerprint: TextFingerprint | None = None  # of the text trained on now


@dataclass
class Trained:
    """How far the run has trained: what a checkpoint keeps besides the Run's own state, and what a
    resume restores (engine/run/checkpoints.py). The Trainer owns it; a new run starts from these."""

    step: int = 0
    train_seconds: float = 0.0  # the steps themselves, never what is served between them
    tokens_seen: int = 0
    train_state: State | None = None  # the hidden state carried into the next step
    losses: LossHistory = field(default_factory=LossHistory)
    val_history: list[tuple[int, float]] = field(default_factory=list)
    train_at_eval: list[tuple[int, float]] = field(default_factory=list)  # mean training loss before each evaluation
    samples: list[tuple[int, str]] = field(default_factory=list)  # the live ones, the last MAX_SAVED_SAMPLES
    best_val: float = math.inf
    evals_since_best: int = 0  # counted, not read off val_history: thinning drops points
    first_after_best: int | None = None  # the step of the first evaluation after the best

    def carried_state(self) -> tuple[torch.Tensor, ...]:
        """This process's carried state (its block of the batch's streams), as a tuple."""
        state = self.train_state
        return () if state is None else state if isinstance(state, tuple) else (state,)


def position(run: Run, trained: Trained) -> schedule.Position:
    """Where training stands, on the axes the stop conditions and the schedule read."""
    return schedule.Position(trained.step, run.batcher.epoch_float, trained.train_seconds)


def learning_rate(run: Run, trained: Trained) -> float:
    """The learning rate of the next step (engine/run/schedule.py)."""
    return run.schedule.rate(run.config, position(run, trained))


def limit_fraction(run: Run, trained: Trained) -> float | None:
    """How far through its stop conditions the run is (this session's ETA reads it), None without any."""
    return schedule.limit_fraction(run.config, position(run, trained), run.schedule.start)
