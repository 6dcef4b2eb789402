"""What the training loop reports. A UI or a log consumes these; the loop never prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunInfo:
    run_name: str
    run_dir: str
    corpus_name: str
    corpus_source: str
    corpus_chars: int
    train_tokens: int
    val_tokens: int
    token_kind: str
    vocab_size: int
    model_kind: str
    layers: int
    hidden: int
    embedding: int
    parameters: int
    device: str  # "cuda", "cpu", "mps"
    device_name: str  # GPU name or "CPU, N threads"
    precision: str
    preset: str
    batch_size: int
    seq_len: int
    max_steps: int | None
    max_epochs: float | None
    max_time: float | None
    resumed_step: int  # 0 for a fresh run
    config: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1  # processes training the run together (torchrun); 1 without

    def status_fields(self) -> dict[str, Any]:
        """What status.json says of the run itself (`charrnn-tui runs`), whoever writes it."""
        return {"name": self.run_name, "corpus": self.corpus_name,
                "model": f"{self.model_kind} {self.layers}x{self.hidden}", "tokens": self.token_kind,
                "world_size": self.world_size, "device": self.device}


@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class Started(Event):
    info: RunInfo
    # Loaded from the checkpoint on resume, so a UI can redraw the history: the training losses
    # as engine/history.py's LossHistory.to_dict() (the recent ones exactly, the whole run binned).
    loss_history: dict[str, Any] = field(default_factory=dict)
    val_history: tuple[tuple[int, float], ...] = ()
    samples: tuple[tuple[int, str], ...] = ()
    # What the progress reports said over the run (engine/report_history.py's ReportHistory.to_dict):
    # an attach's welcome carries it for the status panel's charts; a run's own start has none.
    reports: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress(Event):
    step: int
    first_step: int  # step of losses[0]
    losses: tuple[float, ...]  # one per step since the last report
    epoch: float  # epochs done, fractional
    tokens_per_s: float
    lr: float
    train_seconds: float  # training time so far, evaluation excluded
    eta_seconds: float | None  # to the stop condition, or None without one
    epoch_eta_seconds: float | None  # to the end of the current epoch
    memory_bytes: int | None
    # From NVML on a CUDA GPU with nvidia-ml-py installed (engine/run/gpu_monitor.py); None elsewhere.
    gpu_utilisation: int | None = None  # percent
    gpu_memory_used: int | None = None  # bytes, every process's
    gpu_memory_total: int | None = None
    # The engine process's own (engine/run/process_usage.py): CPU time over wall time since the last
    # report, in percent of one core (every thread counts), and its resident memory now.
    cpu_percent: float | None = None
    rss_bytes: int | None = None


@dataclass(frozen=True)
class Evaluated(Event):
    step: int
    nats: float
    bits: float
    perplexity: float
    best_nats: float
    is_best: bool
    tokens: int
    seconds: float
    best_step: int = 0  # the step best.pt holds
    overfitting_since: int | None = None  # validation stopped improving while training loss fell


@dataclass(frozen=True)
class Validating(Event):
    """An evaluation under way: sent as it starts and then about twice a second; Evaluated ends it."""

    step: int
    done: float  # fraction of the validation tokens read
    tokens: int  # how many it reads in all


@dataclass(frozen=True)
class SampleStarted(Event):
    sample_id: int
    step: int
    prompt: str
    temperature: float
    source: str  # "live" (periodic), "prompt" (asked for by the user), "temperatures" (at a temperature of its own)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SampleText(Event):
    sample_id: int
    text: str
    # The model's probability (at temperature 1) of each token of `text`, to 3 decimals, and each
    # token's length in characters (empty: one character each, as at char level).
    probs: tuple[float, ...] = ()
    token_lengths: tuple[int, ...] = ()


@dataclass(frozen=True)
class SampleFinished(Event):
    sample_id: int
    text: str  # the whole continuation, without the prompt
    probs: tuple[float, ...] = ()  # as in SampleText, for the whole continuation
    token_lengths: tuple[int, ...] = ()
    # Characters of the longest substring of `text` that occurs in the corpus, and the [start, end)
    # spans copied verbatim (at least novelty.MIN_SPAN long); None while the corpus index is built.
    longest_copy: int | None = None
    copies: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class NextTokens(Event):
    """What the model expects after `text`, someone's prompt as they type it (engine/model/cowrite.py)."""

    text: str
    top: tuple[tuple[str, float], ...]  # (token, probability), most likely first
    probs: tuple[float, ...] = ()  # the probability of each typed token after the first, given those before
    token_lengths: tuple[int, ...] = ()  # characters of each typed token, the first included
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckpointSaved(Event):
    path: str
    step: int
    kind: str  # "latest" or "best"
    saved_at: float  # time.time()


@dataclass(frozen=True)
class StateChanged(Event):
    state: str  # "starting", "training", "paused", "finished", "stopped", "error"
    reason: str = ""


@dataclass(frozen=True)
class SettingsChanged(Event):
    temperature: float
    early_stop: int | None = None  # evaluations without a new best that end the run; None: never


@dataclass(frozen=True)
class Notice(Event):
    message: str
    level: str = "information"  # "information", "warning" or "error"
