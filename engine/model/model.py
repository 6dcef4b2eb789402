"""The recurrent language model: embedding (or one-hot) -> RNN/GRU/LSTM layers -> linear head."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from charrnn_tui.engine.config import ModelConfig
from charrnn_tui.engine.model.device import recurrent_precision

# LSTM state is (h, c); GRU and vanilla RNN state is h alone.
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

_RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        vocab, hidden = config.vocab_size, config.hidden
        input_size = config.embedding or vocab
        self.embedding = nn.Embedding(vocab, config.embedding) if config.embedding else None
        rnn_class = _RNN_CLASSES[config.kind]
        extra = {"nonlinearity": "tanh"} if config.kind == "rnn" else {}
        self.rnn = rnn_class(
            input_size,
            hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
            **extra,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(hidden, vocab)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            return self.embedding(ids)
        return F.one_hot(ids.long(), self.config.vocab_size).to(self.head.weight.dtype)

    def forward(self, ids: torch.Tensor, state: State | None = None,
                last_only: bool = False) -> tuple[torch.Tensor, State]:
        """ids: (batch, time) -> logits (batch, time, vocab) and the state after the last step; with
        `last_only`, (batch, 1, vocab) for the last step alone (warming up on a prompt: the head,
        vocab-wide at every position, is most of the cost, 684 MB for 10,000 tokens of a word model)."""
        x = self.embed(ids)
        with recurrent_precision(x.device):  # outside the step's autocast on CUDA: fp32 (engine/model/device.py)
            out, state = self.rnn(x, state)
        state = float_state(state)  # bf16 layers (a CPU's autocast) return a bf16 state: carried in fp32
        if last_only:
            out = out[:, -1:]
        return self.head(self.drop(out)), state

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        c = self.config
        shape = (c.layers, batch_size, c.hidden)
        h = torch.zeros(shape, device=device or self.head.weight.device)
        return (h, torch.zeros_like(h)) if c.kind == "lstm" else h

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout) for a piece of work (sampling, typing, validation), and the mode
        the model was in back afterwards: a run trains between the pieces."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            if was_training:
                self.train()

    @contextlib.contextmanager
    def dropout_off(self) -> Iterator[None]:
        """Training mode without dropout: memory probes must not advance cuDNN's dropout state,
        which lives outside torch's generators (so fork_rng cannot restore it)."""
        saved = self.rnn.dropout, self.drop.p
        self.rnn.dropout, self.drop.p = 0.0, 0.0
        try:
            yield
        finally:
            self.rnn.dropout, self.drop.p = saved

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def float_state(state: State) -> State:
    """The state in fp32 (as it is: no copy, no graph node, when it is fp32 already)."""
    if isinstance(state, tuple):
        return (state[0].float(), state[1].float())
    return state.float()


def detach_state(state: State) -> State:
    """Cut the graph at the batch boundary (truncated BPTT) but keep the values."""
    if isinstance(state, tuple):
        return (state[0].detach(), state[1].detach())
    return state.detach()


class Stepper:
    """One token at a time through the model's weights, for generation.

    nn.LSTM at batch 1 pays about 1 ms per call on CPU (oneDNN set-up); the fused cell ops
    (torch.lstm_cell and friends, what nn.LSTMCell uses) cost a fraction of that.
    """

    def __init__(self, model: CharRNN):
        self.model = model
        rnn = model.rnn
        self.kind = model.config.kind
        self.layers = [
            (
                getattr(rnn, f"weight_ih_l{k}"),
                getattr(rnn, f"weight_hh_l{k}"),
                getattr(rnn, f"bias_ih_l{k}"),
                getattr(rnn, f"bias_hh_l{k}"),
            )
            for k in range(model.config.layers)
        ]

    def step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """ids: (batch,) -> logits (batch, vocab) and the new state, in the model's state layout."""
        layers = self.unstack(state)
        logits, layers = self.step_layers(ids, layers)
        return logits, self.stack(layers)

    def step_layers(self, ids: torch.Tensor, layers: list) -> tuple[torch.Tensor, list]:
        """One step with the state as a list per layer (h, or (h, c)): no stacking per token."""
        x = self.model.embed(ids)
        new_layers: list[State] = []
        for (w_ih, w_hh, b_ih, b_hh), layer_state in zip(self.layers, layers, strict=True):
            if self.kind == "lstm":
                h, c = torch.lstm_cell(x, layer_state, w_ih, w_hh, b_ih, b_hh)
                new_layers.append((h, c))
                x = h
            else:
                cell = torch.gru_cell if self.kind == "gru" else torch.rnn_tanh_cell
                x = cell(x, layer_state, w_ih, w_hh, b_ih, b_hh)
                new_layers.append(x)
        return self.model.head(x), new_layers

    def unstack(self, state: State) -> list:
        if isinstance(state, tuple):  # an LSTM's
            return list(zip(state[0].unbind(0), state[1].unbind(0), strict=True))
        return list(state.unbind(0))

    def stack(self, layers: list) -> State:
        if self.kind == "lstm":
            return (torch.stack([h for h, _ in layers]), torch.stack([c for _, c in layers]))
        return torch.stack(layers)
