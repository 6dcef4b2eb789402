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

A range the user sets (`tune --hidden 128:512 --model lstm,gru ...`, a `Limits`) replaces the
derived one; the weight bound still holds within it, and a space left with nothing to train is
refused in one line (`empty_reason`).
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
class Limits:
    """The ranges the user set on the command line; each one given replaces the derived range."""

    kinds: tuple[str, ...] = ()
    layers: tuple[int, ...] = ()
    hidden: tuple[int, int] | None = None
    dropout: tuple[float, float] | None = None
    lr: tuple[float, float] | None = None
    seq_len: tuple[int, ...] = ()


@dataclass(frozen=True)
class Space:
    """The ranges a trial's settings are drawn from (bounds inclusive)."""

    preset: str
    kinds: tuple[str, ...]
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
        pairs = self.trainable() or [(k, n) for k in self.kinds for n in self.layers]
        kinds = tuple(dict.fromkeys(k for k, _ in pairs))
        kind = kinds[0] if len(kinds) == 1 else rng.choice(kinds)
        layers = rng.choice(tuple(n for k, n in pairs if k == kind))
        seq_len = rng.choice(self.seq_len)
        low, high = self.hidden[0], self.widest(layers, kind)
        hidden = _round_width(math.exp(rng.uniform(math.log(low), math.log(high))), low, high)
        dropout = round(rng.uniform(*self.dropout), 3)
        lr = float(f"{math.exp(rng.uniform(math.log(self.lr[0]), math.log(self.lr[1]))):.3g}")
        return self.settings(kind=kind, layers=layers, hidden=hidden, dropout=dropout, lr=lr, seq_len=seq_len)

    def settings(self, *, kind: str, layers: int, hidden: int, dropout: float, lr: float,
                 seq_len: int) -> Settings:
        """Settings in this space's preset, the batch fitted to the text as a default run's is."""
        batch = cfg.fitted_batch_size(self.preset_batch, seq_len, self.train_tokens)
        return Settings(kind=kind, layers=layers, hidden=hidden, embedding=self.embedding, dropout=dropout,
                        lr=lr, seq_len=seq_len, batch_size=batch)

    def widest(self, layers: int, kind: str | None = None) -> int:
        """The widest width in range whose `layers` layers of `kind` (default the first) hold at
        most max_weights (at least the narrowest: `empty_reason` says when even that is too many)."""
        model = cfg.ModelConfig(kind=kind or self.kinds[0], layers=layers, embedding=self.embedding)
        width = self.hidden[1]
        while width > self.hidden[0] and cfg.recurrent_parameters(model, width) > self.max_weights:
            width -= WIDTH_STEP
        return max(width, self.hidden[0])

    def trainable(self) -> list[tuple[str, int]]:
        """The (kind, layers) whose narrowest model holds at most max_weights."""
        return [(k, n) for k in self.kinds for n in self.layers
                if self.weights(k, n, self.hidden[0]) <= self.max_weights]

    def weights(self, kind: str, layers: int, hidden: int) -> int:
        return cfg.recurrent_parameters(cfg.ModelConfig(kind=kind, layers=layers, embedding=self.embedding), hidden)

    def describe(self) -> str:
        seq = "/".join(map(str, self.seq_len))
        return (f"{'/'.join(self.kinds)}, layers {'/'.join(map(str, self.layers))}, "
                f"hidden {self.hidden[0]}-{self.hidden[1]}, dropout {self.dropout[0]:g}-{self.dropout[1]:g}, "
                f"lr {self.lr[0]:.2g}-{self.lr[1]:.2g}, seq-len {seq}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Space:
        low, high = data["hidden"]
        dropout, lr = data["dropout"], data["lr"]
        kinds = data["kinds"] if "kinds" in data else [data["kind"]]  # a sweep.json of before user ranges
        if not isinstance(kinds, list) or not kinds:
            raise ValueError("kinds: not a list of model kinds")
        return cls(preset=str(data["preset"]), kinds=tuple(str(k) for k in kinds), embedding=int(data["embedding"]),
                   hidden=(int(low), int(high)), layers=tuple(int(n) for n in data["layers"]),
                   dropout=(float(dropout[0]), float(dropout[1])), lr=(float(lr[0]), float(lr[1])),
                   seq_len=tuple(int(n) for n in data["seq_len"]), preset_batch=int(data["preset_batch"]),
                   train_tokens=int(data["train_tokens"]), max_weights=int(data["max_weights"]))


def search_space(preset: str, corpus_chars: int, train_tokens: int, token_kind: str, top_tokens: int,
                 limits: Limits | None = None) -> Space:
    """The space for a corpus of `corpus_chars` characters (`train_tokens` in its training split, of
    `token_kind`), around `preset` (the device's), when the longest trial trains `top_tokens` tokens;
    the ranges the user set (`limits`) in place of the derived ones."""
    limits = limits or Limits()
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
    return Space(preset=preset, kinds=limits.kinds or (model.kind,), embedding=model.embedding,
                 hidden=limits.hidden or (low, high), layers=limits.layers or layers,
                 dropout=limits.dropout or dropout, lr=limits.lr or (base.lr / LR_BELOW, base.lr * LR_ABOVE),
                 seq_len=limits.seq_len or seq_len, preset_batch=base.batch_size, train_tokens=train_tokens,
                 max_weights=max_weights)


def empty_reason(space: Space, limits: Limits, *, weights: bool = True) -> str | None:
    """Why the space has nothing a trial could train, in one line naming the flag to change, or
    None. Only the user's ranges can empty it: the derived ones always hold the default run.
    `weights`: hold the user's model shapes to the budget's bound (known once the plan is)."""
    if limits.hidden is not None and limits.hidden[0] > limits.hidden[1]:
        return f"--hidden {limits.hidden[0]}:{limits.hidden[1]} is empty: its low end is above its high end"
    for flag, pair in (("--dropout", limits.dropout), ("--lr", limits.lr)):
        if pair is not None and pair[0] > pair[1]:
            return f"{flag} {pair[0]:g}:{pair[1]:g} is empty: its low end is above its high end"
    too_long = [n for n in limits.seq_len if n >= space.train_tokens]  # as the batchers refuse it
    if too_long:
        return (f"--seq-len {too_long[0]} is longer than the training split ({space.train_tokens:,} tokens): "
                "give a shorter window")
    if not weights or (limits.hidden is None and not limits.layers and not limits.kinds):
        return None
    if space.trainable():
        return None
    kind, layers = space.kinds[0], min(space.layers)
    narrowest = space.weights(kind, layers, space.hidden[0])
    return (f"nothing in the space can be trained in this budget: the narrowest model, {kind} {layers}x"
            f"{space.hidden[0]}, holds {narrowest:,} weights and the longest trial trains "
            f"{space.max_weights * TOKENS_PER_WEIGHT:,} tokens ({TOKENS_PER_WEIGHT} a weight at least); "
            "give a narrower --hidden, fewer --layers or a longer --budget")


def default_settings(space: Space, corpus_chars: int) -> Settings:
    """What `charrnn-tui train` with no model flags would run on this corpus (the preset fitted to
    it): the first trial, so the sweep always measures the default it means to beat."""
    base = cfg.apply_preset(cfg.TrainConfig(), space.preset)
    fitted = cfg.fit_to_corpus(base, corpus_chars) if base.preset == space.preset else base
    m = fitted.model
    return space.settings(kind=m.kind, layers=m.layers, hidden=m.hidden, dropout=m.dropout, lr=fitted.lr,
                          seq_len=fitted.seq_len)


def _round_width(width: float, low: int, high: int | None) -> int:
    rounded = max(low, round(width / WIDTH_STEP) * WIDTH_STEP)
    return rounded if high is None else min(high, rounded)


def within_limits(space: Space, default: Settings, limits: Limits) -> Settings:
    """The default run's settings brought into the ranges the user set, each to its nearest value in
    range, and narrowed to what the budget trains where the user chose the model's shape; unchanged
    where the user set nothing (the first trial measures the default run as it is)."""
    def closest(value: int, values: tuple[int, ...]) -> int:
        return min(values, key=lambda v: (abs(v - value), v))

    def clamp(value: float, pair: tuple[float, float] | None) -> float:
        return value if pair is None else min(max(value, pair[0]), pair[1])

    kind = default.kind if not limits.kinds or default.kind in limits.kinds else limits.kinds[0]
    layers = closest(default.layers, limits.layers) if limits.layers else default.layers
    hidden = round(clamp(default.hidden, limits.hidden))
    if limits.kinds or limits.layers or limits.hidden:
        hidden = min(hidden, space.widest(layers, kind))
    seq_len = closest(default.seq_len, limits.seq_len) if limits.seq_len else default.seq_len
    return space.settings(kind=kind, layers=layers, hidden=hidden, dropout=clamp(default.dropout, limits.dropout),
                          lr=clamp(default.lr, limits.lr), seq_len=seq_len)
