"""What a run is made of once set-up has built it (engine/run/run_setup.py): the pieces the loop, the
evaluations, the samples and the requests use, each there for the whole run.

The progress of training (the step, the time and tokens trained, the histories, the best
validation loss) is not here: it changes every step, and stays the Trainer's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.events import RunInfo
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.model.sampling import TextGenerator
from charrnn_tui.engine.model.step import TrainStep
from charrnn_tui.engine.run.distributed import Peers
from charrnn_tui.engine.run.metrics import MetricsLog
from charrnn_tui.engine.run.schedule import Schedule
from charrnn_tui.engine.runs import RunLock
from charrnn_tui.engine.text.corpus import Corpus
from charrnn_tui.engine.text.data import Batcher
from charrnn_tui.engine.text.novelty import BackgroundIndex
from charrnn_tui.engine.text.run_text import TextFingerprint
from charrnn_tui.engine.text.vocab import CharVocab, WordVocab


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
