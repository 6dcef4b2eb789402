"""Validation loss: one measurement, used by training and by `eval`, that depends only on the weights
and the text (never on the training batch size, sequence length or precision).

The text is read as parallel contiguous streams, as many as its length gives (at most
MAX_STREAMS), each warmed up without scoring on the WARMUP tokens before it, so that no
prediction is made from a cold zero state except at the very start of the text. Measured on the
tiny-shakespeare validation split with a `small` model at 1.4777 nats (bench/eval_layout.py): one
sequential read gives 1.47772; without warm-up, 54 streams read +0.004, 256 streams +0.015 and
1,024 streams +0.058; with a 128- or 256-token warm-up every stream count from 16 to 1,024 gives
1.47772.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charrnn_tui.engine.model.device import evaluation_precision
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.text.data import IGNORE

MAX_STREAMS = 256
MIN_STREAM = 2048  # predictions per stream: fewer streams for a short text
WARMUP = 256  # tokens read before each stream's first scored prediction
PROGRESS_CHUNK = 256  # time steps per forward call when progress is reported (the result is the same)
LOGITS_BUDGET = 1 << 24  # floats of logits per chunk (64 MB): a word vocabulary gets shorter chunks


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


def stream_count(predictions: int) -> int:
    """How many streams read a text of this many predictions: a function of its length alone."""
    return max(1, min(MAX_STREAMS, predictions // MIN_STREAM))


def eval_layout(predictions: int, streams: int, warmup: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input positions (streams, time) into the text, and target positions with IGNORE where a step
    is warm-up or padding. Stream k scores predictions [k*L, (k+1)*L) (L = ceil(predictions /
    streams)), after reading up to `warmup` tokens before them."""
    per_stream = -(-predictions // streams)
    streams = -(-predictions // per_stream)  # none left empty (4 predictions in 3 streams: 2 + 2)
    first = torch.arange(streams) * per_stream  # first scored prediction of each stream
    begin = (first - warmup).clamp(min=0)
    end = (first + per_stream).clamp(max=predictions)
    length = int((end - begin).max())
    position = begin.unsqueeze(1) + torch.arange(length)
    scored = (position >= first.unsqueeze(1)) & (position < end.unsqueeze(1))
    return position.clamp(max=predictions - 1), torch.where(scored, position + 1, IGNORE)


def evaluate(
    model: CharRNN,
    ids: torch.Tensor,
    *,
    chunk: int | None = None,
    streams: int | None = None,
    warmup: int = WARMUP,
    between: Callable[[], None] | None = None,
    progress: Callable[[float], None] | None = None,
) -> EvalResult:
    """Mean loss (fp32) predicting every token of `ids` from the ones before it, each exactly once.

    `chunk` (time steps per forward call) bounds memory and does not change the result;
    `streams` and `warmup` change the layout and exist for tests (a warm-up as long as the text
    makes any number of streams read exactly as one does). `between` is called between chunks
    (the run answers keystrokes there; it must not change the weights). `progress` is called
    with the fraction done: at the start, and after each chunk, which is then at most
    PROGRESS_CHUNK time steps long, so that a long evaluation shows itself moving.

    It runs in evaluation_precision (fp32, no autocast, TF32 off), set here and nowhere else, so
    that training's evaluations and `charrnn-tui eval` agree on a GPU as well.
    """
    device = model.head.weight.device
    # in the body, not a decorator: mutation testing skips decorated functions
    with torch.no_grad(), evaluation_precision(device), model.evaluating():
        ids = ids.to(device).long()
        predictions = len(ids) - 1
        if predictions < 1:
            raise ValueError("evaluation needs at least 2 tokens")
        streams = min(streams or stream_count(predictions), predictions)
        inputs, targets = eval_layout(predictions, streams, warmup)
        inputs, targets = inputs.to(device), targets.to(device)
        x = ids[inputs]
        y = torch.where(targets == IGNORE, IGNORE, ids[targets.clamp(min=0)])
        chunk = chunk or max(1, LOGITS_BUDGET // (streams * model.config.vocab_size))
        if progress is not None:
            chunk = min(chunk, PROGRESS_CHUNK)
            progress(0.0)
        total = torch.zeros((), dtype=torch.float64, device=device)
        state = None
        for start in range(0, x.size(1), chunk):
            logits, state = model(x[:, start : start + chunk], state)
            total += F.cross_entropy(logits.float().flatten(0, 1), y[:, start : start + chunk].flatten(),
                                     ignore_index=IGNORE, reduction="sum")
            if between is not None:
                between()
            if progress is not None:
                progress(min(1.0, (start + chunk) / x.size(1)))
        return EvalResult(nats=float(total) / predictions, tokens=predictions)
