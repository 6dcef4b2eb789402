"""Loading a trained model from a checkpoint, for sampling and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.checkpoint import first_line, load_checkpoint
from charrnn_tui.engine.errors import CheckpointError, ConfigError, CorpusError
from charrnn_tui.engine.model.device import configure_backends, pick_device
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.text.vocab import CharVocab, WordVocab, vocab_from_dict


@dataclass
class LoadedModel:
    model: CharRNN
    vocab: CharVocab | WordVocab
    config: cfg.TrainConfig
    step: int
    best_val: float


def load_model(path: Path, device: str = "auto") -> LoadedModel:
    checkpoint = load_checkpoint(path)
    config = cfg.from_checkpoint(checkpoint)
    vocab = vocab_from_dict(checkpoint.get("vocab"))
    if len(vocab) < 2:  # a run started before such vocabularies were refused (engine/text/vocab.py)
        raise CheckpointError(f"{path}: the model's vocabulary holds only {vocab.tokens[0]!r}: it has nothing to "
                              "write or score; train it again (at word level, with a lower --min-freq)")
    if config.model.vocab_size != len(vocab):
        raise CheckpointError(f"{path}: vocabulary size does not match the model")
    model = CharRNN(config.model)
    try:
        model.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: model weights do not match its config ({first_line(e)})") from None
    where = pick_device(device)
    configure_backends(where, None)  # as a run sets them (TF32 on CUDA): samples as it trains; eval turns TF32 off
    model.to(where).eval()
    return LoadedModel(model, vocab, config, int(checkpoint.get("step", 0)), float(checkpoint.get("best_val", "nan")))


def encode_for_eval(vocab: CharVocab | WordVocab, text: str) -> tuple[torch.Tensor, int]:
    """Ids of `text` and how many characters had to be folded or dropped as unknown."""
    try:
        return vocab.encode(text), 0
    except ConfigError:
        ids, notes = vocab.encode_prompt(text)
    if len(ids) < 2:
        raise CorpusError("text has fewer than 2 tokens the model knows")
    return torch.tensor(ids, dtype=torch.long), len(notes)
