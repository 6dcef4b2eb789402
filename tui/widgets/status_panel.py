"""Run, model, device and progress at a glance, with a clear TRAINING / PAUSED / FINISHED state."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import Static

from charrnn_tui.engine.durations import duration

from ..formatting import si, size_bytes
from ..run_view import RunView

STATE_STYLES = {
    "starting": ("STARTING", "bold yellow"),
    "training": ("TRAINING", "bold green"),
    "paused": ("PAUSED", "bold black on yellow"),
    "finished": ("FINISHED", "bold black on green"),
    "stopped": ("STOPPED", "bold"),
    "error": ("ERROR", "bold white on red"),
    "detached": ("DISCONNECTED", "bold white on red"),
}


class StatusPanel(Static):
    clock = staticmethod(time.time)  # replaceable, for deterministic snapshots

    def on_mount(self) -> None:
        self.border_title = "Status"

    def show(self, view: RunView) -> None:
        self.update(render_status(view, self.clock()), layout=False)  # its size is the layout's, not its text's


def render_status(view: RunView, now: float | None = None) -> Text:
    """Nine short lines: they fit the 36 columns the panel has in an 80-column terminal."""
    now = time.time() if now is None else now
    label, style = STATE_STYLES.get(view.state, (view.state.upper(), "bold"))
    info = view.info
    epoch = int(view.epoch)
    lines = [Text.assemble((f" {label} ", style), f" step {view.step:,} · epoch {epoch + 1} {view.epoch - epoch:.0%}")]
    if view.state in ("error", "detached") and view.reason:
        lines.append(Text(view.reason, "red"))
    if view.overfitting_since is not None:  # in the run name's place: the one thing to know now
        lines.append(Text(f"overfitting since step {view.overfitting_since:,}", "bold yellow"))
    elif info is None:
        lines.append(Text("loading corpus and model...", "dim"))
    else:
        stop = f" · early stop {view.early_stop}" if view.early_stop else ""
        lines.append(Text(info.run_name + stop, "dim", overflow="ellipsis", no_wrap=True))
    if info is not None:
        lines.append(_pair("corpus", f"{info.corpus_name}, {si(info.corpus_chars)} chars"))
        lines.append(_pair("model", f"{info.model_kind} {info.layers}x{info.hidden}, {si(info.parameters)} params"))
        lines.append(_pair("device", info.device_name + ("" if info.precision == "fp32" else f" {info.precision}")))
    if view.validating is not None and view.state == "training":
        v = view.validating
        lines.append(_pair("speed", (f"validating {v.done:.0%}", "bold cyan"), f" of {si(v.tokens)} {view.unit}"))
    elif view.learning:
        lines.append(_pair("speed", f"{si(view.tokens_per_s)} {view.unit}/s · lr {lr_text(view.lr)}"))
    else:  # steps at rate 0 change no weight: the losses printed are not learning
        lines.append(_pair("speed", f"{si(view.tokens_per_s)} {view.unit}/s · ", ("not learning: lr 0", "bold yellow")))
    if view.eta_seconds is not None:
        eta = f"ETA {duration(view.eta_seconds)}"
    else:
        eta = f"epoch ends {duration(view.epoch_eta_seconds)}"
    lines.append(_pair("time", f"{duration(view.train_seconds)} · {eta}"))
    lines.append(_pair("temp", f"{view.temperature:.2f} · {_memory(view)}"))
    if view.gpu is not None:  # only on a GPU with nvidia-ml-py installed
        lines.append(_pair("gpu", gpu_line(*view.gpu)))
    saved = "not yet"
    if view.saved_at is not None:
        saved = f"step {view.saved_step:,}, {duration(now - view.saved_at)} ago"
    if view.overfitting_since is not None and view.best_val is not None:
        lines.append(Text(f"best.pt is step {view.best_step:,}, val {view.best_val:.4f}", "bold yellow"))
    else:
        lines.append(_pair("saved", saved))
    return Text("\n").join(lines)


def lr_text(lr: float | None) -> str:
    if lr is None:
        return "-"
    mantissa, exponent = f"{lr:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _pair(name: str, *value: str | tuple[str, str]) -> Text:
    """A dim name, then its value: text, or (text, style) parts."""
    return Text.assemble((f"{name:<7}", "dim"), *value)


def gpu_line(utilisation: int, used: int, total: int | None) -> str:
    of = f" of {size_bytes(total)}" if total else ""
    return f"{utilisation}% busy · {size_bytes(used)}{of} in use"


def _memory(view: RunView) -> str:
    """The engine's memory, as it reports it: GPU memory on CUDA, else its peak RAM."""
    on_gpu = view.info is not None and view.info.device == "cuda"
    return f"{'GPU mem' if on_gpu else 'RAM peak'} {size_bytes(view.memory_bytes)}"
