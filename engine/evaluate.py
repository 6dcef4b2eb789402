"""Validation loss over a whole token sequence, read in order with the hidden state carried."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import CharRNN


@dataclass(frozen=True)
class EvalResult:
    nats: float  # mean negative log-likelihood per token
    tokens: int  # how many predictions were scored

    @property
    def bits(self) -> float:
        return self.nats / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.nats, 700.0))


@torch.no_grad()
def evaluate(
    model: CharRNN,
    ids: torch.Tensor,
    *,
    streams: int = 32,
    chunk: int = 256,
    autocast: contextlib.AbstractContextManager | None = None,
) -> EvalResult:
    """Mean loss predicting every token of `ids` from the ones before it.

    `ids` is cut into `streams` contiguous pieces read in parallel, each from a zero state; the
    few tokens left over are read by continuing the last stream, so every prediction is scored.
    """
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    ids = ids.to(device)
    n_pred = len(ids) - 1
    streams = max(1, min(streams, n_pred))
    stream_len = n_pred // streams  # predictions per stream
    total = torch.zeros((), dtype=torch.float64, device=device)
    ctx = autocast or contextlib.nullcontext()

    body = ids[: streams * stream_len + 1]
    # Stream k reads tokens [k*L, (k+1)*L] and predicts the last L of them.
    index = torch.arange(streams, device=device).unsqueeze(1) * stream_len + torch.arange(stream_len + 1, device=device)
    grid = body[index].long()
    state = None
    for start in range(0, stream_len, chunk):
        end = min(start + chunk, stream_len)
        x, y = grid[:, start:end], grid[:, start + 1 : end + 1]
        with ctx:
            logits, state = model(x, state)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")

    tail = ids[streams * stream_len :].long()  # continues the last stream
    if len(tail) > 1:
        last = _select_stream(state, streams - 1) if state is not None else None
        with ctx:
            logits, _ = model(tail[:-1].unsqueeze(0), last)
        total += F.cross_entropy(logits.float().flatten(0, 1), tail[1:], reduction="sum")

    if was_training:
        model.train()
    return EvalResult(nats=float(total) / n_pred, tokens=n_pred)


def _select_stream(state, k: int):
    if isinstance(state, tuple):
        return tuple(s[:, k : k + 1].contiguous() for s in state)
    return state[:, k : k + 1].contiguous()
