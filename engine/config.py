"""Run configuration: plain dataclasses, named presets, and validation of configs read from disk."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.errors import CheckpointError, ConfigError

MODEL_KINDS = ("lstm", "gru", "rnn")
TOKEN_KINDS = ("char", "word")
SAMPLERS = ("sequential", "random")
OPTIMIZERS = ("adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class ModelConfig:
    kind: str = "lstm"
    layers: int = 1
    hidden: int = 256
    embedding: int = 64  # 0 means one-hot input, as in the classic char-rnn
    dropout: float = 0.0
    vocab_size: int = 0  # set from the corpus


RESUMABLE = {"resumable": True}  # the metadata of the fields `resumable` makes


def resumable(default: Any) -> Any:
    """A field a resumed run may change (a flag given beside --resume); the rest must match the
    checkpoint (engine/run/checkpoints.py resumed_config)."""
    return field(default=default, metadata=RESUMABLE)


@dataclass
class TrainConfig:
    # Data
    corpus: str | None = None
    csv_column: str | None = None
    ascii: bool = False
    encoding: str | None = None
    tokens: str = "char"
    min_freq: int = 2
    val_fraction: float = 0.1
    # Batching and optimisation
    preset: str = "small"
    seq_len: int = resumable(128)
    batch_size: int = resumable(32)
    auto_batch_size: bool = resumable(False)  # --batch-size auto: the largest that fits on the device, found at start
    fit_batch_size: bool = resumable(False)  # a preset's: lowered on a small text so an epoch keeps EPOCH_STEPS steps
    sampler: str = "sequential"
    optimizer: str = "adamw"
    lr: float = resumable(3e-3)
    weight_decay: float = 0.0
    momentum: float = 0.9
    grad_clip: float = resumable(1.0)
    warmup_steps: int = resumable(50)
    lr_decay: bool = resumable(True)  # cosine decay to min_lr_ratio * lr, over whichever limit is set
    min_lr_ratio: float = 0.1
    # Stop conditions (None: no limit)
    max_steps: int | None = resumable(None)
    max_epochs: float | None = resumable(None)
    max_time: float | None = resumable(None)  # seconds of training
    early_stop: int | None = resumable(None)  # evaluations without a new best validation loss
    # Reporting
    eval_interval: int = resumable(250)  # steps
    fit_eval_interval: bool = resumable(False)  # a preset's: at most one epoch, set at the start (run_setup.py)
    eval_tokens: int | None = resumable(None)  # None: at most data.EVAL_BUDGET; 0: the whole validation split
    checkpoint_interval: int = resumable(1000)  # steps; 0 turns periodic checkpoints off
    keep_checkpoints: int = resumable(3)  # step-N.pt files kept beside latest.pt (hard links: no extra writes)
    report_interval: float = resumable(0.25)  # seconds between progress events
    sample_interval: float = resumable(15.0)  # seconds between live samples; 0 turns them off
    sample_length: int = resumable(200)
    temperature: float = resumable(0.8)
    top_k: int | None = resumable(None)
    top_p: float | None = resumable(None)
    tensorboard: bool = resumable(False)  # also write TensorBoard event files (the tensorboard extra)
    # Machine
    seed: int = 1337
    device: str = resumable("auto")
    precision: str = resumable("auto")
    threads: int | None = resumable(None)
    model: ModelConfig = field(default_factory=ModelConfig)


def resumable_fields() -> frozenset[str]:
    """The TrainConfig fields a resume may change: those marked RESUMABLE."""
    return frozenset(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("resumable"))


# Presets set model size and the batch/optimiser settings that go with it, chosen by measurement
# on tiny-shakespeare with bench/train_speed.py (docs/PERFORMANCE.md, "The CPU presets", and its history).
PRESETS: dict[str, dict[str, Any]] = {
    # Seconds on any CPU: tests and demos. 1.63 nats/char after 30 s on 2 CPU cores.
    "tiny": {
        "model": {"kind": "lstm", "layers": 1, "hidden": 128, "embedding": 32, "dropout": 0.0},
        "seq_len": 64, "batch_size": 16, "lr": 8e-3, "warmup_steps": 20, "eval_interval": 1000,
        "fit_eval_interval": True, "fit_batch_size": True,
    },
    # A laptop CPU: the best of the sweep for a 75 s budget on 2 cores, 1.48 nats/char (bf16; 1.50 in fp32), and
    # 1.43 since weight decay and a cosine to 0 (below). Smaller batches (more updates per second) and a high
    # learning rate with cosine decay win there.
    "small": {
        "model": {"kind": "lstm", "layers": 1, "hidden": 384, "embedding": 64, "dropout": 0.0},
        "seq_len": 64, "batch_size": 16, "lr": 8e-3, "warmup_steps": 50, "eval_interval": 500,
        "fit_eval_interval": True, "fit_batch_size": True,
        # Measured on 2 CPU cores, 75 s on tiny-shakespeare (README, "How the CPU presets were chosen"): weight
        # decay 0.1 with the cosine decaying to 0 reached 1.4315 nats/char where 0 and 10% reached 1.48.
        "weight_decay": 0.1, "min_lr_ratio": 0.0,
    },
    # A CUDA GPU. Not yet measured on one (no GPU was lent when it was chosen): sized so that
    # cuDNN has work to do at batch 128, for a text of about one character per weight (FITTED_ON).
    "large": {
        "model": {"kind": "lstm", "layers": 2, "hidden": 1024, "embedding": 128, "dropout": 0.2},
        "seq_len": 256, "batch_size": 128, "lr": 2e-3, "warmup_steps": 100, "eval_interval": 250,
        "fit_eval_interval": True, "fit_batch_size": True,
    },
}


EVAL_BUDGET = 1 << 18  # tokens a run validates on by default: 262,144, ~9% of a 29 MB text's split
SMALL_CORPUS_DROPOUT = 0.25
REFERENCE_CHARS = 1_115_394  # tiny-shakespeare, on which the CPU presets were chosen
# The text each preset's model was sized for; under half of it a default run gets a narrower model.
# `large` was sized on paper (no GPU measured yet) by char-rnn's rule of thumb, about one weight per
# character of text: its 13.2M weights suit 13.2M characters.
FITTED_ON = {"tiny": REFERENCE_CHARS, "small": REFERENCE_CHARS, "large": 13_200_000}
EPOCH_STEPS = 256  # a fitted batch keeps at least this many steps an epoch ...
MIN_STEP_TOKENS = 1024  # ... down to this many tokens a step: the CPU presets' 16 x 64, best in their sweep
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def recurrent_parameters(model: ModelConfig, hidden: int) -> int:
    """Weights of the recurrent layers and the head at this width (the head for ~100 symbols)."""
    total, width = 0, model.embedding or 100
    for _ in range(model.layers):
        total += GATES.get(model.kind, 4) * (hidden * (width + hidden) + 2 * hidden)
        width = hidden
    return total + 100 * (hidden + 1)


def fit_to_corpus(config: TrainConfig, corpus_chars: int | None, *, preset_model: ModelConfig | None = None,
                  keep_hidden: bool = False, keep_dropout: bool = False) -> TrainConfig:
    """The default preset, sized for the corpus (`corpus_chars`: the text's length in characters, as
    read). Each preset's model suits a text of FITTED_ON characters (`small`: tiny-shakespeare, 1.1M,
    where it was chosen). A corpus under half that size gets narrower layers, the hidden width scaled
    by the fourth root of the size ratio (so the weights by its square root, to the nearest 32 units,
    at least 64), and dropout of at least 0.25.
    For The Time Machine (179 kB) the `small` preset's 1x384 LSTM becomes 1x256 with dropout 0.25:
    measured over 5,000 steps, its best validation loss is 1.412 (step 3,000) and it is 1.433 at
    step 5,000, where the 1x384 without dropout peaks at 1.423 (step 1,500) and is at 1.650 by step
    4,750 (docs/PERFORMANCE.md, "Small corpora"). Word models are fitted too (by the corpus's characters): on the
    jokes, 1x224 with dropout reaches 4.449 nats/token where 1x384 without reaches 4.873. On a GPU,
    `large`'s 2x1024 becomes 2x544 for tiny-shakespeare (char-rnn's 2x512 with dropout for it).

    The budget is the preset's model at that width (`preset_model`, default the config's own
    model); the model given is fitted to it, so --layers 3 gets narrower layers. What the user set
    stays: `keep_hidden`, `keep_dropout`."""
    reference_chars = FITTED_ON.get(config.preset, REFERENCE_CHARS)
    if corpus_chars is None or corpus_chars >= reference_chars // 2:
        return config
    model = config.model
    reference = preset_model or model
    width = max(64, round(reference.hidden * (corpus_chars / reference_chars) ** 0.25 / 32) * 32)
    budget = recurrent_parameters(reference, width)
    hidden = model.hidden
    while not keep_hidden and hidden > 64 and recurrent_parameters(model, hidden) > budget:
        hidden -= 32
    dropout = model.dropout if keep_dropout else max(model.dropout, SMALL_CORPUS_DROPOUT)
    return dataclasses.replace(config, model=dataclasses.replace(model, hidden=hidden, dropout=dropout))


def describe_fit(given: ModelConfig, fitted: ModelConfig, corpus_chars: int, preset: str = "small") -> str | None:
    """One line for start-up saying what fit_to_corpus changed, or None where it changed nothing."""
    changes = []
    if fitted.hidden != given.hidden:
        changes.append(f"{given.kind} {given.layers}x{given.hidden} narrowed to {fitted.layers}x{fitted.hidden}")
    if fitted.dropout != given.dropout:
        changes.append(f"dropout {given.dropout:g} raised to {fitted.dropout:g}")
    if not changes:
        return None
    reference = FITTED_ON.get(preset, REFERENCE_CHARS)
    return (f"a small corpus ({plural(corpus_chars, 'character')}; preset {preset} suits {reference:,}): "
            f"{' and '.join(changes)} (--hidden and --dropout set them yourself)")


def fitted_batch_size(batch: int, seq_len: int, train_tokens: int) -> int:
    """`batch` (a preset's, or for --batch-size auto the largest that fits in memory), lowered where
    the text is short so that an epoch keeps EPOCH_STEPS steps, but to no fewer than MIN_STEP_TOKENS
    tokens a step (16 streams at seq-len 64, 4 at 256; a smaller `batch` stays). The open-ended
    schedule cuts its rate at evaluations, which come at most once an epoch: `large`'s 128 x 256
    would read tiny-shakespeare in 30 steps, and the largest batch a GPU holds (1,024) in 4. On a
    GPU a step of 4 streams takes about as long as one of 128 (an RNN's steps are latency-bound), so
    a short text gets more updates from the same time, as the CPU sweep found ("more updates beat a
    bigger batch")."""
    floor = min(batch, max(1, -(-MIN_STEP_TOKENS // seq_len)))
    return max(floor, min(batch, train_tokens // (seq_len * EPOCH_STEPS)))


def fitted_eval_interval(config: TrainConfig, train_tokens: int) -> int:
    """The preset's evaluation interval, or one epoch where that is shorter: an open-ended run cuts
    its rate at evaluations, and a small corpus (the jokes: 28 steps an epoch) would otherwise pass
    18 epochs between two of them."""
    steps_per_epoch = train_tokens / (config.batch_size * config.seq_len)
    return max(1, min(config.eval_interval, round(steps_per_epoch)))


def preset_for_device(device_type: str) -> str:
    return "large" if device_type == "cuda" else "small"


def apply_preset(config: TrainConfig, name: str) -> TrainConfig:
    """A copy of `config` with the preset's values; flags given by the user are applied after this."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (choose {', '.join(PRESETS)})")
    values = dict(PRESETS[name])
    model = dataclasses.replace(config.model, **values.pop("model"))
    return dataclasses.replace(config, preset=name, model=model, **values)


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(data: Any) -> TrainConfig:
    """Rebuild a config read from a checkpoint, checking every field's name and type first."""
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError("checkpoint config is malformed")
    model = ModelConfig(**_checked_fields(ModelConfig, data["model"]))
    values = _checked_fields(TrainConfig, {k: v for k, v in data.items() if k != "model"})
    config = TrainConfig(**values, model=model)
    try:
        validate(config)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint config is invalid: {e}") from None
    return config


def from_checkpoint(checkpoint: dict[str, Any]) -> TrainConfig:
    """The config a checkpoint's run ran with. One written before the validation budget (it holds no
    schedule: both came together) validated on the whole split, and goes on doing so, so that its
    figures and best.pt still compare."""
    config = from_dict(checkpoint.get("config"))
    if "schedule" not in checkpoint and config.eval_tokens is None:
        config.eval_tokens = 0
    return config


# Fields that older checkpoints hold and that no longer mean anything: read and dropped. `compile`
# never had a flag or code; torch.compile measured no faster (it breaks its graph at nn.LSTM).
RETIRED_FIELDS = frozenset({"compile"})


def _checked_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    known = {f.name: f for f in dataclasses.fields(cls) if f.name != "model"}
    defaults = cls()
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name in RETIRED_FIELDS:
            continue
        if name not in known:
            raise CheckpointError(f"checkpoint config has unknown field {name!r}")
        default = getattr(defaults, name)
        allowed = _allowed_types(known[name].type, default)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise CheckpointError(f"checkpoint config field {name!r} has the wrong type")
        out[name] = value
    return out


def _allowed_types(annotation: Any, default: Any) -> tuple[type, ...]:
    text = str(annotation)
    types: list[type] = []
    for name, typ in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if name in text:
            types.append(typ)
    if float in types:
        types.append(int)
    if "None" in text:
        types.append(type(None))
    return tuple(types) or (type(default),)


def validate(config: TrainConfig) -> None:
    """Raise ConfigError naming the first invalid option."""
    m = config.model
    checks: list[tuple[bool, str]] = [
        (m.kind in MODEL_KINDS, f"model kind must be one of {', '.join(MODEL_KINDS)}"),
        (m.layers >= 1, "layers must be at least 1"),
        (m.hidden >= 1, "hidden size must be at least 1"),
        (m.embedding >= 0, "embedding size must be 0 (one-hot) or more"),
        (0.0 <= m.dropout < 1.0, "dropout must be in [0, 1)"),
        (config.tokens in TOKEN_KINDS, "tokens must be char or word"),
        (config.min_freq >= 1, "min-freq must be at least 1"),
        (0.0 < config.val_fraction < 0.5, "val-fraction must be in (0, 0.5)"),
        (config.seq_len >= 1, "seq-len must be at least 1"),
        (config.batch_size >= 1, "batch-size must be at least 1"),
        (config.sampler in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)}"),
        (config.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
        (_finite_positive(config.lr), "lr must be a positive number"),
        (config.grad_clip >= 0, "grad-clip must be 0 (off) or more"),
        (config.warmup_steps >= 0, "warmup-steps must be 0 or more"),
        (0.0 <= config.min_lr_ratio <= 1.0, "min-lr-ratio must be in [0, 1]"),
        (config.max_steps is None or config.max_steps >= 1, "max-steps must be at least 1"),
        (config.max_epochs is None or config.max_epochs > 0, "max-epochs must be positive"),
        (config.max_time is None or config.max_time > 0, "max-time must be positive"),
        (config.early_stop is None or config.early_stop >= 1, "early-stop must be at least 1"),
        (config.eval_interval >= 1, "eval-interval must be at least 1"),
        (config.eval_tokens is None or config.eval_tokens == 0 or config.eval_tokens >= 2,
         "eval-tokens must be at least 2, or all"),
        (config.checkpoint_interval >= 0, "checkpoint-interval must be 0 (off) or more"),
        (config.keep_checkpoints >= 0, "keep-checkpoints must be 0 or more"),
        (config.report_interval > 0, "report-interval must be positive"),
        (config.sample_interval >= 0, "sample-interval must be 0 (off) or more"),
        (config.sample_length >= 0, "sample-length must be 0 or more"),
        (_finite_positive(config.temperature), "temperature must be a positive number"),
        (config.top_k is None or config.top_k >= 1, "top-k must be at least 1"),
        (config.top_p is None or 0.0 < config.top_p <= 1.0, "top-p must be in (0, 1]"),
        (config.device in DEVICES, f"device must be one of {', '.join(DEVICES)}"),
        (config.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
        (config.threads is None or config.threads >= 1, "threads must be at least 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _finite_positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0
