"""Train/validation split and the batchers for truncated backprop through time."""

from __future__ import annotations

import random
from typing import Any, Protocol

import torch

from .errors import CorpusError


def split_tokens(ids: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The last `val_fraction` of the text is validation, as in char-rnn and nanoGPT: deterministic."""
    n_val = max(2, int(len(ids) * val_fraction))
    if len(ids) - n_val < 2:
        raise CorpusError(f"corpus has only {len(ids)} tokens: too short to split into train and validation")
    return ids[:-n_val], ids[-n_val:]


class Batcher(Protocol):
    batch_size: int
    seq_len: int

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]: ...
    @property
    def epoch_float(self) -> float: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def continue_from(self, other: Batcher) -> None: ...


class SequentialBatcher:
    """`batch_size` parallel streams read in order; hidden state carries across batches.

    The d2l "sequential" sampler: the text is cut into batch_size contiguous streams and each
    batch is the next seq_len tokens of every stream, so the state after one batch is the right
    context for the next. Each epoch starts at a random offset (seeded) so that batch boundaries
    move, and the state is reset there.
    """

    carries_state = True

    def __init__(self, data: torch.Tensor, batch_size: int, seq_len: int, seed: int = 0):
        stream_len = len(data) // batch_size
        if stream_len < seq_len + 1:
            need = batch_size * (seq_len + 1)
            raise CorpusError(
                f"training split has {len(data)} tokens; batch-size {batch_size} x (seq-len {seq_len} + 1) "
                f"needs {need}: lower --batch-size or --seq-len"
            )
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.stream_len = stream_len
        self.streams = data[: batch_size * stream_len].view(batch_size, stream_len)
        self.epoch = 0
        self.index = 0

    def _offset(self, epoch: int) -> int:
        max_offset = min(self.seq_len - 1, self.stream_len - 1 - self.seq_len)
        return 0 if epoch == 0 else random.Random(self.seed * 1_000_003 + epoch).randint(0, max_offset)

    def batches_in_epoch(self, epoch: int | None = None) -> int:
        epoch = self.epoch if epoch is None else epoch
        return (self.stream_len - 1 - self._offset(epoch)) // self.seq_len

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs and targets (batch, seq_len) as int64, and whether the state must be reset first."""
        if self.index >= self.batches_in_epoch():
            self.epoch += 1
            self.index = 0
        reset = self.index == 0
        start = self._offset(self.epoch) + self.index * self.seq_len
        window = self.streams[:, start : start + self.seq_len + 1].long()
        self.index += 1
        return window[:, :-1], window[:, 1:], reset

    @property
    def epoch_float(self) -> float:
        return self.epoch + self.index / self.batches_in_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])

    def continue_from(self, other: Batcher) -> None:
        """Take over where a batcher of another shape stopped (a run resumed with a new batch shape)."""
        epoch_float = other.epoch_float
        self.epoch = int(epoch_float)
        self.index = min(round((epoch_float - self.epoch) * self.batches_in_epoch()), self.batches_in_epoch())


class RandomWindowBatcher:
    """Independent random windows each batch; the state starts from zero every batch."""

    carries_state = False

    def __init__(self, data: torch.Tensor, batch_size: int, seq_len: int, seed: int = 0):
        if len(data) < seq_len + 2:
            raise CorpusError(
                f"training split has {len(data)} tokens, shorter than one sequence (seq-len {seq_len}): "
                "lower --seq-len"
            )
        self.data, self.batch_size, self.seq_len = data, batch_size, seq_len
        self.generator = torch.Generator(device=data.device).manual_seed(seed)
        self.offsets = torch.arange(seq_len + 1, device=data.device)
        self.steps = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        high = len(self.data) - self.seq_len - 1
        starts = torch.randint(0, high, (self.batch_size, 1), generator=self.generator, device=self.data.device)
        window = self.data[starts + self.offsets].long()
        self.steps += 1
        return window[:, :-1], window[:, 1:], True

    @property
    def epoch_float(self) -> float:
        return self.steps * self.batch_size * self.seq_len / len(self.data)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.generator.set_state(state["generator"])

    def continue_from(self, other: Batcher) -> None:
        self.steps = round(other.epoch_float * len(self.data) / (self.batch_size * self.seq_len))
        if isinstance(other, RandomWindowBatcher):  # new windows, not a replay of the first ones
            self.generator.set_state(other.generator.get_state())


def make_batcher(kind: str, data: torch.Tensor, batch_size: int, seq_len: int, seed: int) -> Batcher:
    cls = SequentialBatcher if kind == "sequential" else RandomWindowBatcher
    return cls(data, batch_size, seq_len, seed)
