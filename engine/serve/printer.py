"""The headless progress line (rewritten in place on a terminal) and the JSONL event log."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from typing import TYPE_CHECKING, TextIO

from charrnn_tui.engine.durations import duration
from charrnn_tui.engine.printable import percent, printable, printable_line

if TYPE_CHECKING:
    from charrnn_tui.engine import events as ev

NOT_LEARNING = "not learning: learning rate 0"
RECENT = 100  # steps the progress line's loss is the mean of


class ProgressPrinter:
    """Turns events into a progress line (rewritten in place on a terminal) and a JSONL log."""

    def __init__(self, out: TextIO = sys.stdout, jsonl: TextIO | None = None, interval: float = 2.0):
        self.out, self.jsonl, self.interval = out, jsonl, interval
        self.tty = out.isatty()
        self.last_line = 0.0
        self.info: ev.RunInfo | None = None
        self.recent: list[float] = []
        self.first_recent = 0  # the step of recent[0]
        self.validating_since = 0.0

    def __call__(self, event: ev.Event) -> None:
        with contextlib.suppress(OSError):  # the terminal has gone (SIGHUP is on its way): never end the run
            self._print(event)

    def _print(self, event: ev.Event) -> None:
        from charrnn_tui.engine import events as ev

        if self.jsonl is not None:
            record = {"event": type(event).__name__, "time": round(time.time(), 3), **dataclasses.asdict(event)}
            self.jsonl.write(json.dumps(record, default=str) + "\n")
            self.jsonl.flush()
        if isinstance(event, ev.Started):
            i = self.info = event.info
            self._line(f"run {i.run_name} in {i.run_dir}")
            self._line(f"corpus {i.corpus_source}: {i.corpus_chars:,} chars, {i.token_kind} vocab {i.vocab_size}, "
                       f"train {i.train_tokens:,} / validation {i.val_tokens:,} tokens (last "
                       f"{percent(i.config['val_fraction'])})")
            self._line(f"model {i.model_kind} {i.layers}x{i.hidden}, embedding {i.embedding or 'one-hot'}, "
                       f"{i.parameters:,} parameters, preset {i.preset}; batch {i.batch_size} x seq {i.seq_len}; "
                       f"{i.device_name} ({i.precision})" + (f"; resumed at step {i.resumed_step}"
                                                             if i.resumed_step else ""))
        elif isinstance(event, ev.Progress):
            self.recent = (self.recent + list(event.losses))[-RECENT:]
            self.first_recent = event.step - len(self.recent) + 1
            now = time.monotonic()
            if now - self.last_line >= self.interval:
                self.last_line = now
                self._progress(event)
        elif isinstance(event, ev.Validating):
            now = time.monotonic()
            if event.done == 0.0:
                self.validating_since = now
            elif now - self.last_line >= self.interval or self.tty:  # a long one shows itself moving
                self.last_line = now
                self._write_progress(f"step {event.step} | validating {event.done:.0%} of {event.tokens:,} tokens | "
                                     f"{duration(now - self.validating_since)}")
        elif isinstance(event, ev.Evaluated):
            overfitting = (f"; overfitting since step {event.overfitting_since}: best.pt is step {event.best_step}, "
                           f"val {event.best_nats:.4f}" if event.overfitting_since is not None else "")
            self._line(f"step {event.step}: validation {event.nats:.4f} nats/token, {event.bits:.3f} bits, "
                       f"perplexity {event.perplexity:.2f}" + (" (best)" if event.is_best else "")
                       + f" [{event.seconds:.1f}s]{overfitting}")
        elif isinstance(event, ev.SampleFinished):
            self._line("--- sample ---\n" + event.text.rstrip("\n") + "\n--------------")
        elif isinstance(event, ev.CheckpointSaved) and event.kind == "latest":
            self._line(f"step {event.step}: checkpoint saved to {event.path}")
        elif isinstance(event, ev.StateChanged) and event.state in ("finished", "stopped"):
            self._line(f"{event.state}" + (f": {event.reason}" if event.reason else ""))
        elif isinstance(event, ev.Notice) and event.level != "error":
            self._line(f"{event.level}: {event.message}")

    def _progress(self, e: ev.Progress) -> None:
        unit = "chars" if self.info is None or self.info.token_kind == "char" else "tokens"
        # The mean of the latest RECENT steps' losses, said as such: metrics.jsonl's train_loss is the
        # mean over the steps since its previous line (a quarter of a second), so the two differ.
        loss = sum(self.recent) / len(self.recent) if self.recent else float("nan")
        steps = f"steps {self.first_recent}-{e.step}" if len(self.recent) > 1 else f"step {e.step}"
        eta = f" | ETA {duration(e.eta_seconds)}" if e.eta_seconds is not None else ""
        text = (f"step {e.step} | epoch {e.epoch:.2f} | loss {loss:.4f} (mean of {steps}) | "
                f"{e.tokens_per_s:,.0f} {unit}/s | lr {e.lr:.2e} | {duration(e.train_seconds)}{eta}")
        if e.gpu_utilisation is not None:
            text += f" | GPU {e.gpu_utilisation}%, {(e.gpu_memory_used or 0) / 2**30:.1f} GiB"
        if e.lr <= 0:  # a step at rate 0 changes no weight: say so, rather than print losses as if it learned
            text += f" | {NOT_LEARNING}"
        self._write_progress(text)

    # Every line goes out through these two, made printable: samples are the model's text, and names,
    # paths and notices quote the corpus and the run folder (a file name can hold ESC as well). The
    # detached engine's log gets the same, since it is read with `cat` and `tail -f`; the JSONL log
    # has the exact text (JSON escapes control characters).
    def _write_progress(self, text: str) -> None:
        text = printable_line(text)
        if self.tty:
            self.out.write("\r\x1b[2K" + text)
            self.out.flush()
        else:
            self._line(text)

    def _line(self, text: str) -> None:
        text = printable(text)  # a sample is lines of text: newlines and tabs kept
        if self.tty:
            self.out.write("\r\x1b[2K")
        self.out.write(text + "\n")
        self.out.flush()


