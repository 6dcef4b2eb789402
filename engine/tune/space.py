"""What `tune` searches: ranges of width, layers, dropout, learning rate and (where it matters)
sequence length, derived from the corpus's size and from how many tokens the budget buys the
longest trial; and a seeded sampler over them. Plain Python, no torch: the app can show a space.

Each range is centred on what a default run would use and widened by what the numbers allow:
- width: the preset's, scaled by the fourth root of the corpus's size against the text the preset
  was sized for (config.fit_to_corpus's rule, here in both directions), from half to twice that,
  and never so wide that a weight sees fewer than TOKENS_PER_WEIGHT tokens in the longest trial
  (a model the budget cannot train is a trial wasted);
- layers: a second (on a GPU's preset, a third) only for a text the preset's full model suits;
- dropout: it fights over-fitting, which needs the text seen again: its range follows how many
  epochs the longest trial makes;
- learning rate: log-uniform around the preset's;
- sequence length: the preset's and twice it (half, for words) only when the longest trial has
  updates to spare (LONG_SEQ_STEPS); a longer window halves the updates per token, and with few
  updates more of them won ("more updates beat a bigger batch", the CPU presets' sweep).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from charrnn_tui.engine import config as cfg

# The small preset on tiny-shakespeare, where it was chosen: 75 s at ~57k chars/s is 4.3M tokens for
# its ~730k weights, about 6 a weight. Fewer than 5 and a wider model is only slower to learn.
TOKENS_PER_WEIGHT = 5
MIN_HIDDEN = 32
WIDTH_STEP = 32  # widths are multiples of this (as fit_to_corpus rounds them)
LONG_SEQ_STEPS = 2000  # updates the longest trial must make at the longer window for it to be tried
LR_BELOW, LR_ABOVE = 4.0, 2.0  # the learning rate's range: the preset's / 4 to x 2, log-uniform


@dataclass(frozen=True)
class Settings:
    """One trial's model and optimisation settings: what it passes to `charrnn-tui train`."""

    kind: str
    layers: int
    hidden: int
    embedding: int
    dropout: float
    lr: float
    seq_len: int
    batch_size: int

    @property
    def step_tokens(self) -> int:
        return self.batch_size * self.seq_len

    def flags(self) -> list[str]:
        """The train flags that set these: the whole of what makes the trial differ from the preset."""
        return ["--model", self.kind, "--layers", str(self.layers), "--hidden", str(self.hidden),
                "--embedding", str(self.embedding), "--dropout", f"{self.dropout:g}", "--lr", f"{self.lr:.3g}",
                "--seq-len", str(self.seq_len), "--batch-size", str(self.batch_size)]

    def label(self) -> str:
        """`lstm 2x256 dropout 0.21 lr 4.1e-3 seq 64`: one short line for a table or an event."""
        return (f"{self.kind} {self.layers}x{self.hidden} dropout {self.dropout:.2f} lr {self.lr:.2g} "
                f"seq {self.seq_len}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        return cls(kind=str(data["kind"]), layers=int(data["layers"]), hidden=int(data["hidden"]),
                   embedding=int(data["embedding"]), dropout=float(data["dropout"]), lr=float(data["lr"]),
                   seq_len=int(data["seq_len"]), batch_size=int(data["batch_size"]))


@dataclass(frozen=True)
class Space:
    """The ranges a trial's settings are drawn from (bounds inclusive)."""

    preset: str
    kind: str
    embedding: int
    hidden: tuple[int, int]
    layers: tuple[int, ...]
    dropout: tuple[float, float]
    lr: tuple[float, float]
    seq_len: tuple[int, ...]
    preset_batch: int
    train_tokens: int  # the training split's tokens: batches are fitted to it as a default run's are
    max_weights: int  # no trial's recurrent layers and head hold more

    def sample(self, rng: random.Random) -> Settings:
        """One draw: layers and sequence length uniform, width log-uniform in steps of WIDTH_STEP
        (then narrowed to max_weights for that many layers), dropout uniform, learning rate
        log-uniform."""
        layers = rng.choice(self.layers)
        seq_len = rng.choice(self.seq_len)
        low, high = self.hidden[0], self.widest(layers)
        hidden = _round_width(math.exp(rng.uniform(math.log(low), math.log(high))), low, high)
        dropout = round(rng.uniform(*self.dropout), 3)
        lr = float(f"{math.exp(rng.uniform(math.log(self.lr[0]), math.log(self.lr[1]))):.3g}")
        return self.settings(layers=layers, hidden=hidden, dropout=dropout, lr=lr, seq_len=seq_len)

    def settings(self, *, layers: int, hidden: int, dropout: float, lr: float, seq_len: int) -> Settings:
        """Settings in this space's preset and kind, the batch fitted to the text as a default run's is."""
        batch = cfg.fitted_batch_size(self.preset_batch, seq_len, self.train_tokens)
        return Settings(kind=self.kind, layers=layers, hidden=hidden, embedding=self.embedding, dropout=dropout,
                        lr=lr, seq_len=seq_len, batch_size=batch)

    def widest(self, layers: int) -> int:
        """The widest width in range whose `layers` layers hold at most max_weights (at least the
        narrowest: the range never empties)."""
        model = cfg.ModelConfig(kind=self.kind, layers=layers, embedding=self.embedding)
        width = self.hidden[1]
        while width > self.hidden[0] and cfg.recurrent_parameters(model, width) > self.max_weights:
            width -= WIDTH_STEP
        return max(width, self.hidden[0])

    def describe(self) -> str:
        seq = "/".join(map(str, self.seq_len))
        return (f"{self.kind}, layers {'/'.join(map(str, self.layers))}, hidden {self.hidden[0]}-{self.hidden[1]}, "
                f"dropout {self.dropout[0]:g}-{self.dropout[1]:g}, lr {self.lr[0]:.2g}-{self.lr[1]:.2g}, seq-len {seq}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Space:
        low, high = data["hidden"]
        dropout, lr = data["dropout"], data["lr"]
        return cls(preset=str(data["preset"]), kind=str(data["kind"]), embedding=int(data["embedding"]),
                   hidden=(int(low), int(high)), layers=tuple(int(n) for n in data["layers"]),
                   dropout=(float(dropout[0]), float(dropout[1])), lr=(float(lr[0]), float(lr[1])),
                   seq_len=tuple(int(n) for n in data["seq_len"]), preset_batch=int(data["preset_batch"]),
                   train_tokens=int(data["train_tokens"]), max_weights=int(data["max_weights"]))


def search_space(preset: str, corpus_chars: int, train_tokens: int, token_kind: str, top_tokens: int) -> Space:
    """The space for a corpus of `corpus_chars` characters (`train_tokens` in its training split, of
    `token_kind`), around `preset` (the device's), when the longest trial trains `top_tokens` tokens."""
    base = cfg.apply_preset(cfg.TrainConfig(tokens=token_kind), preset)
    model = base.model
    fitted_on = cfg.FITTED_ON.get(preset, cfg.REFERENCE_CHARS)
    centre = model.hidden * (max(corpus_chars, 1) / fitted_on) ** 0.25
    low = max(MIN_HIDDEN, _round_width(centre / 2, MIN_HIDDEN, None))
    high = max(low, _round_width(centre * 2, MIN_HIDDEN, None))
    layers: tuple[int, ...] = (1,)
    if corpus_chars >= fitted_on // 2:  # a text the preset's full model suits
        layers = (1, 2, 3) if model.layers > 1 and corpus_chars >= fitted_on else (1, 2)
    epochs = top_tokens / max(train_tokens, 1)
    dropout = (0.0, 0.1) if epochs <= 1 else (0.0, 0.3) if epochs <= 4 else (0.1, 0.5)
    seq_len: tuple[int, ...] = (base.seq_len,)
    longer = base.seq_len * 2 if token_kind == "char" else base.seq_len
    step_tokens = cfg.fitted_batch_size(base.batch_size, longer, train_tokens) * longer
    if top_tokens / step_tokens >= LONG_SEQ_STEPS:
        seq_len = (base.seq_len, base.seq_len * 2) if token_kind == "char" else (base.seq_len // 2, base.seq_len)
    max_weights = max(top_tokens // TOKENS_PER_WEIGHT, 1)
    return Space(preset=preset, kind=model.kind, embedding=model.embedding, hidden=(low, high), layers=layers,
                 dropout=dropout, lr=(base.lr / LR_BELOW, base.lr * LR_ABOVE), seq_len=seq_len,
                 preset_batch=base.batch_size, train_tokens=train_tokens, max_weights=max_weights)


def default_settings(space: Space, corpus_chars: int) -> Settings:
    """What `charrnn-tui train` with no model flags would run on this corpus (the preset fitted to
    it): the first trial, so the sweep always measures the default it means to beat."""
    base = cfg.apply_preset(cfg.TrainConfig(), space.preset)
    fitted = cfg.fit_to_corpus(base, corpus_chars) if base.preset == space.preset else base
    m = fitted.model
    return space.settings(layers=m.layers, hidden=m.hidden, dropout=m.dropout, lr=fitted.lr, seq_len=fitted.seq_len)


def _round_width(width: float, low: int, high: int | None) -> int:
    rounded = max(low, round(width / WIDTH_STEP) * WIDTH_STEP)
    return rounded if high is None else min(high, rounded)
