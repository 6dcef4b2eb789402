"""Train/validation split and the batchers for truncated backprop through time.

Both batchers make every prediction of the training split (token i+1 from the tokens up to i)
exactly once per epoch. Targets that a batch has to carry for its shape but must not score
(padding at the end of the text) are IGNORE, which `F.cross_entropy` skips.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from charrnn_tui.engine.config import EVAL_BUDGET
from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.errors import CorpusError

IGNORE = -100  # F.cross_entropy's default ignore_index
LAYOUT = 2  # the batch layout a batcher state_dict describes; 1 (no "layout" key) is before every-token epochs


def split_tokens(ids: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The last `val_fraction` of the text is validation, as in char-rnn and nanoGPT: deterministic."""
    n_val = max(2, int(len(ids) * val_fraction))
    if len(ids) - n_val < 2:
        raise CorpusError(f"corpus has only {plural(len(ids), 'token')}: too short to split into train and validation")
    return ids[:-n_val], ids[-n_val:]


def validation_ids(val_ids: torch.Tensor, eval_tokens: int | None) -> torch.Tensor:
    """What a run validates on: the first `eval_tokens` of its validation split; by default (None)
    at most EVAL_BUDGET of them, so that an evaluation of a large text costs seconds, not minutes,
    and every one of a run reads the same tokens; 0: the whole split."""
    if eval_tokens == 0:
        return val_ids
    return val_ids[:EVAL_BUDGET if eval_tokens is None else eval_tokens]


@dataclass(frozen=True)
class Batch:
    x: torch.Tensor  # (batch, time) int64 inputs
    y: torch.Tensor  # (batch, time) int64 targets, IGNORE where nothing is scored
    reset: bool  # the carried state must start from zero before this batch
    predictions: int  # how many targets are scored (not IGNORE)


class Batcher(Protocol):
    batch_size: int
    seq_len: int
    carries_state: bool

    def next(self) -> Batch: ...
    def batches_in_epoch(self, epoch: int | None = None) -> int: ...
    @property
    def epoch_float(self) -> float: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def seek(self, epoch_float: float) -> None: ...


def _epoch_offset(seed: int, epoch: int, limit: int) -> int:
    """Where the epoch's windows start, in [0, limit): none in the first epoch, seeded after."""
    if epoch == 0 or limit <= 1:
        return 0
    return random.Random(seed * 1_000_003 + epoch).randrange(limit)


def _window_bounds(index: int, offset: int, seq_len: int, length: int) -> tuple[int, int]:
    """Window `index` of an epoch that cuts [0, length) at offset, offset + seq_len, ...: a short
    first window [0, offset) when offset > 0, then seq_len-long ones, the last cut short."""
    if offset:
        if index == 0:
            return 0, offset
        start = offset + (index - 1) * seq_len
    else:
        start = index * seq_len
    return start, min(start + seq_len, length)


def _window_count(offset: int, seq_len: int, length: int) -> int:
    return (1 if offset else 0) + -(-(length - offset) // seq_len)


class _EpochPosition:
    """Where a batcher is: the epoch and the next batch's index in it, which is all its state."""

    epoch: int
    index: int

    @property
    def epoch_float(self) -> float:
        return self.epochs_done()

    def epochs_done(self) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"layout": LAYOUT, "epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


class SequentialBatcher(_EpochPosition):
    """`batch_size` parallel streams read in order; the hidden state carries across batches.

    The d2l "sequential" sampler: the text's predictions are cut into batch_size contiguous
    streams (the last padded with unscored targets), and each batch is the next window of every
    stream, so the state after one batch is the right context for the next. Each epoch after the
    first starts its windows at a seeded random offset, so that window boundaries move; the
    first and last windows of an epoch are then shorter than seq_len. The state resets there.
    """

    carries_state = True

    def __init__(self, data: torch.Tensor, batch_size: int, seq_len: int, seed: int = 0):
        predictions = len(data) - 1
        if predictions < batch_size * seq_len:  # at least one whole window per stream
            raise CorpusError(
                f"training split has {plural(len(data), 'token')}; batch-size {batch_size} x seq-len {seq_len} needs "
                f"{batch_size * seq_len + 1}: lower --batch-size or --seq-len"
            )
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.predictions = predictions
        self.stream_len = -(-predictions // batch_size)  # predictions per stream
        padded = data.new_zeros(batch_size * self.stream_len + 1)
        padded[: len(data)] = data
        # Row k predicts padded[k*L + 1 : (k+1)*L + 1] from padded[k*L : (k+1)*L].
        self.inputs = padded[:-1].view(batch_size, self.stream_len)
        self.targets = padded[1:].view(batch_size, self.stream_len)
        self.epoch = 0
        self.index = 0
        self._offset_epoch = -1
        self._offset = 0

    def offset(self, epoch: int | None = None) -> int:
        epoch = self.epoch if epoch is None else epoch
        if epoch != self._offset_epoch:  # cached: next() asks every step
            limit = min(self.seq_len, self.stream_len)
            self._offset_epoch, self._offset = epoch, _epoch_offset(self.seed, epoch, limit)
        return self._offset

    def batches_in_epoch(self, epoch: int | None = None) -> int:
        return _window_count(self.offset(epoch), self.seq_len, self.stream_len)

    def next(self) -> Batch:
        if self.index >= self.batches_in_epoch():
            self.epoch += 1
            self.index = 0
        start, end = _window_bounds(self.index, self.offset(), self.seq_len, self.stream_len)
        reset = self.index == 0
        self.index += 1
        x = self.inputs[:, start:end].long()
        y = self.targets[:, start:end].long()
        # Padding lives at the end of the last stream(s): mask it where this window reaches it.
        last_row_start = (self.batch_size - 1) * self.stream_len
        scored = (end - start) * self.batch_size
        if last_row_start + end > self.predictions:
            position = (torch.arange(self.batch_size, device=y.device).unsqueeze(1) * self.stream_len
                        + torch.arange(start, end, device=y.device))
            y = y.masked_fill(position >= self.predictions, IGNORE)
            scored = sum(max(0, min(end, self.predictions - k * self.stream_len) - start)
                         for k in range(self.batch_size))
        return Batch(x, y, reset, scored)

    def epochs_done(self) -> float:
        """Whole epochs plus the fraction of this one's predictions already made. (A method behind
        the property: mutation testing does not mutate decorated functions.)"""
        if self.index == 0:
            return float(self.epoch)
        _, end = _window_bounds(self.index - 1, self.offset(), self.seq_len, self.stream_len)
        return self.epoch + end / self.stream_len

    def seek(self, epoch_float: float) -> None:
        """Go to the first window at or after a point of an epoch (a batcher of another shape's)."""
        self.epoch = int(epoch_float)
        position = (epoch_float - self.epoch) * self.stream_len
        offset, count = self.offset(), self.batches_in_epoch()
        self.index = next((i for i in range(count)
                           if _window_bounds(i, offset, self.seq_len, self.stream_len)[0] >= position - 1e-9), count)


class RandomWindowBatcher(_EpochPosition):
    """Windows of the text in a shuffled order; the state starts from zero in every batch.

    Each epoch cuts the predictions into seq_len-long windows from a seeded random offset, as
    the sequential batcher does for one stream, shuffles them (seeded by epoch) and serves them
    batch_size at a time; the last batch of an epoch may hold fewer.
    """

    carries_state = False

    def __init__(self, data: torch.Tensor, batch_size: int, seq_len: int, seed: int = 0):
        if len(data) < seq_len + 1:
            raise CorpusError(
                f"training split has {plural(len(data), 'token')}, shorter than one sequence (seq-len {seq_len}): "
                "lower --seq-len"
            )
        self.data, self.batch_size, self.seq_len, self.seed = data, batch_size, seq_len, seed
        self.predictions = len(data) - 1
        self.steps = torch.arange(seq_len, device=data.device)
        self.epoch = 0
        self.index = 0
        self._order_epoch = -1

    def offset(self, epoch: int | None = None) -> int:
        epoch = self.epoch if epoch is None else epoch
        return _epoch_offset(self.seed, epoch, min(self.seq_len, self.predictions))

    def windows_in_epoch(self, epoch: int | None = None) -> int:
        return _window_count(self.offset(epoch), self.seq_len, self.predictions)

    def batches_in_epoch(self, epoch: int | None = None) -> int:
        return -(-self.windows_in_epoch(epoch) // self.batch_size)

    def _shuffle(self) -> None:
        """This epoch's window order, once per epoch: starts and ends on the device (no copy per
        batch), and where the short windows fell, on the host (to count predictions without a sync)."""
        if self._order_epoch == self.epoch:
            return
        offset, count = self.offset(), self.windows_in_epoch()
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))
        bounds = torch.tensor([_window_bounds(0, offset, self.seq_len, self.predictions),
                               _window_bounds(count - 1, offset, self.seq_len, self.predictions)])
        starts = (order - 1) * self.seq_len + offset if offset else order * self.seq_len
        starts = torch.where(order == 0, bounds[0, 0], torch.where(order == count - 1, bounds[1, 0], starts))
        ends = torch.where(order == 0, bounds[0, 1],
                           torch.where(order == count - 1, bounds[1, 1], starts + self.seq_len))
        self._starts, self._ends = starts.to(self.data.device), ends.to(self.data.device)
        # (position in the order, unscored steps) of the windows shorter than seq_len
        self._short = [(int((order == w).nonzero()), self.seq_len - (int(bounds[i, 1]) - int(bounds[i, 0])))
                       for i, w in enumerate(dict.fromkeys((0, count - 1)))]
        self._order_epoch = self.epoch

    def next(self) -> Batch:
        if self.index >= self.batches_in_epoch():
            self.epoch += 1
            self.index = 0
        self._shuffle()
        first = self.index * self.batch_size
        self.index += 1
        starts = self._starts[first : first + self.batch_size]
        ends = self._ends[first : first + self.batch_size]
        n = len(starts)
        position = starts.unsqueeze(1) + self.steps
        x = self.data[position.clamp(max=self.predictions)].long()
        y = self.data[(position + 1).clamp(max=self.predictions)].long()
        y = y.masked_fill(position >= ends.unsqueeze(1), IGNORE)
        scored = n * self.seq_len - sum(short for at, short in self._short if first <= at < first + n)
        return Batch(x, y, True, scored)

    def epochs_done(self) -> float:
        return self.epoch + self.index / self.batches_in_epoch()

    def seek(self, epoch_float: float) -> None:
        self.epoch = int(epoch_float)
        self.index = min(round((epoch_float - self.epoch) * self.batches_in_epoch()), self.batches_in_epoch())


def legacy_epoch_float(kind: str, state: dict[str, Any], batch_size: int, seq_len: int, train_tokens: int) -> float:
    """How far through training a batcher state from before LAYOUT 2 was, to the nearest batch."""
    if kind == "sequential":
        per_epoch = max(1, (train_tokens // batch_size - 1) // seq_len)
        return int(state["epoch"]) + int(state["index"]) / per_epoch
    return int(state["steps"]) * batch_size * seq_len / train_tokens


def make_batcher(kind: str, data: torch.Tensor, batch_size: int, seq_len: int, seed: int) -> Batcher:
    cls = SequentialBatcher if kind == "sequential" else RandomWindowBatcher
    return cls(data, batch_size, seq_len, seed)
