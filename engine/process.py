"""The trainer in a child process, behind the same request API as `Trainer`.

A UI runs the engine this way. On CPU, torch trains 2-3x slower in a secondary thread than in a
process's main thread (measured: 40k vs 130k chars/s for the tiny preset on 2 cores; OpenMP's
per-thread teams), and a thread would also share the GIL with the UI. In its own process the
trainer runs on a main thread and the UI costs it nothing.

One duplex pipe: requests go down, events come up. The child ignores terminal signals (the
parent decides when to save); if the parent dies, the pipe closes and the child saves and stops.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from . import events as ev
from .errors import CharRNNError

EventSink = Callable[[ev.Event], None]
# factory(on_event=...) -> Trainer, built in the child; it must pickle (a functools.partial of
# Trainer or of cli.make_trainer with plain arguments does).
TrainerFactory = Callable[..., Any]


class TrainerProcess:
    def __init__(self, factory: TrainerFactory, on_event: EventSink | None = None):
        self.factory = factory
        self.on_event = on_event or (lambda event: None)
        self.state = "starting"
        self.error = ""
        self.step = 0
        self.temperature: float | None = None
        self.tokens_seen = 0
        self.train_seconds = 0.0
        self._send_lock = threading.RLock()  # re-entrant: the SIGHUP handler may interrupt a send
        self._conn = None
        self._pending: list[tuple[str, Any]] = []  # requests made before the child started

    # ---- requests: the same names as Trainer's ------------------------------------------------
    def pause(self) -> None:
        self._request("pause")

    def resume(self) -> None:
        self._request("resume")

    def toggle_pause(self) -> None:
        self._request("toggle_pause")

    def stop(self, save: bool = True, unattended: bool = False) -> None:
        self._request("stop", save, unattended)

    def save_now(self) -> None:
        self._request("save_now")

    def sample_now(self) -> None:
        self._request("sample_now")

    def evaluate_now(self) -> None:
        self._request("evaluate_now")

    def set_temperature(self, temperature: float) -> None:
        self._request("set_temperature", float(temperature))

    def prompt(self, text: str, length: int | None = None) -> None:
        self._request("prompt", text, length)

    def _request(self, name: str, *args: Any) -> None:
        with self._send_lock:
            if self._conn is None:
                self._pending.append((name, args))
                return
            # If the child has gone, run() reports how it ended.
            with contextlib.suppress(OSError, EOFError, ValueError):
                self._conn.send((name, args))

    # ---- running ------------------------------------------------------------------------------
    def run(self) -> str:
        """Start the child and relay its events until it ends; returns or raises as Trainer.run."""
        _start_resource_tracker()
        context = multiprocessing.get_context("spawn")  # fork after torch has started threads is unsafe
        parent, child = context.Pipe(duplex=True)
        process = context.Process(target=_child_main, args=(self.factory, child), name="charrnn-engine", daemon=True)
        process.start()
        child.close()
        with self._send_lock, contextlib.suppress(OSError, EOFError, ValueError):
            self._conn = parent
            for name, args in self._pending:
                parent.send((name, args))
            self._pending.clear()
        outcome: tuple[str, str, bool] | None = None
        try:
            while True:
                try:
                    message = parent.recv()
                except (EOFError, OSError):
                    break
                if message[0] == "event":
                    self._mirror(message[1])
                    self.on_event(message[1])
                elif message[0] == "done":
                    _, outcome, stats = message
                    self.tokens_seen, self.train_seconds = stats["tokens_seen"], stats["train_seconds"]
                    break
        finally:
            process.join(timeout=30)
            with self._send_lock:
                self._conn = None
            parent.close()
        if outcome is None:
            message = f"the training process ended unexpectedly (exit code {process.exitcode})"
            self.state, self.error = "error", message
            self.on_event(ev.Notice(message, "error"))
            self.on_event(ev.StateChanged("error", message))
            raise CharRNNError(message)
        state, error, user_error = outcome
        self.state = state
        if error:
            self.error = error
            if user_error:
                raise CharRNNError(error)
            raise RuntimeError(error)
        return state

    def _mirror(self, event: ev.Event) -> None:
        """Keep the few fields callers read (as they would on a Trainer) up to date."""
        if isinstance(event, ev.StateChanged):
            self.state = event.state
            if event.state == "error":
                self.error = event.reason
        elif isinstance(event, ev.Progress):
            self.step = event.step
        elif isinstance(event, ev.Started):
            self.step = event.info.resumed_step
            self.temperature = float(event.info.config.get("temperature", 0.8))
        elif isinstance(event, ev.SettingsChanged):
            self.temperature = event.temperature


def _start_resource_tracker() -> None:
    """Start multiprocessing's helper process with the real stderr.

    It is handed `sys.stderr.fileno()`; under a Textual app sys.stderr is a capture with no file
    descriptor, and spawning then fails with "bad value(s) in fds_to_keep".
    """
    from multiprocessing import resource_tracker

    saved = sys.stderr
    try:
        if sys.__stderr__ is not None:
            sys.stderr = sys.__stderr__
        resource_tracker.ensure_running()
    finally:
        sys.stderr = saved


def _child_main(factory: TrainerFactory, conn) -> None:
    # Terminal signals reach the whole process group; the parent handles them and asks us to save.
    for name in ("SIGINT", "SIGHUP", "SIGTERM"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        # If the parent has gone, serve_requests sees the pipe close and stops (saving).
        with send_lock, contextlib.suppress(OSError, EOFError, ValueError):
            conn.send(message)

    trainer = None
    outcome: tuple[str, str, bool]
    try:
        trainer = factory(on_event=lambda event: send(("event", event)))
        threading.Thread(target=_serve_requests, args=(trainer, conn), daemon=True, name="requests").start()
        outcome = (trainer.run(), getattr(trainer, "error", ""), True)
    except CharRNNError as e:
        outcome = ("error", str(e), True)
    except BaseException as e:  # a bug: pass it on rather than dying silently
        outcome = ("error", f"{type(e).__name__}: {e}", False)
    stats = {"tokens_seen": getattr(trainer, "tokens_seen", 0), "train_seconds": getattr(trainer, "train_seconds", 0.0)}
    send(("done", outcome, stats))
    conn.close()


def _serve_requests(trainer, conn) -> None:
    while True:
        try:
            name, args = conn.recv()
        except (EOFError, OSError):
            trainer.stop(save=True, unattended=True)  # the parent died: save what we have and end
            return
        getattr(trainer, name)(*args)
