"""Shared test helpers (conftest.py holds the fixtures)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.protocol import SaveNow, Stop


def examples(n: int) -> int:
    """Hypothesis examples for a property test: all of them normally; a tenth while mutmut runs the
    tests once per mutant (it sets MUTANT_UNDER_TEST), where a few examples already kill most."""
    return max(10, n // 10) if os.environ.get("MUTANT_UNDER_TEST") else n


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll `condition` until it holds, failing the test with `what` after `timeout` seconds: a test
    waits on the event it checks, never a fixed time."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def tiny_config(corpus: str | Path, **overrides) -> cfg.TrainConfig:
    """A model small enough that a few hundred steps take a second or two on one CPU core."""
    model = {k: overrides.pop(k) for k in ("kind", "layers", "hidden", "embedding", "dropout") if k in overrides}
    base = cfg.TrainConfig(
        corpus=str(corpus), seq_len=16, batch_size=4, lr=1e-2, warmup_steps=0, eval_interval=50,
        checkpoint_interval=0, sample_interval=0, sample_length=20, device="cpu",
        model=cfg.ModelConfig(kind="lstm", layers=1, hidden=32, embedding=16),
    )
    base = dataclasses.replace(base, model=dataclasses.replace(base.model, **model))
    return dataclasses.replace(base, **overrides)


def step_losses(stop_at: int | None = None, save_at: int | None = None, **trainer_kwargs) -> dict[int, float]:
    """Per-step training losses of a Trainer run; with `save_at`, press save after that step; with
    `stop_at`, stop (and save) as a user would after that step."""
    from charrnn_tui.engine.events import Progress
    from charrnn_tui.engine.run.trainer import Trainer

    losses: dict[int, float] = {}
    trainer: Trainer

    def on_event(e):
        if isinstance(e, Progress):
            losses.update({e.first_step + i: v for i, v in enumerate(e.losses)})
            if e.step == save_at:
                trainer.request(SaveNow())
            if stop_at is not None and e.step >= stop_at:
                trainer.request(Stop(save=True))

    trainer = Trainer(on_event=on_event, **trainer_kwargs)
    trainer.run()
    return losses


def cli_command() -> list[str]:
    """The installed `charrnn-tui` console script (or its module, where it is not installed)."""
    exe = Path(sys.executable).with_name("charrnn-tui")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "charrnn_tui.tui.cli"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The console script, as a user runs it."""
    cmd = cli_command()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env)


class LocalRun:
    """A run's engine and server in this process (a thread, which trains slower than a process's
    main thread: fine for tests), as `charrnn-tui train --detach` would start it."""

    def __init__(self, config, runs_dir, name: str = "local", **trainer_kwargs):
        import threading

        from charrnn_tui.engine.run.trainer import Trainer
        from charrnn_tui.engine.serve.server import RunServer

        self.listening = threading.Event()
        self.trainer = Trainer(config, runs_dir=runs_dir, run_name=name, **trainer_kwargs)
        self.server = RunServer(self.trainer, on_listening=lambda run_dir: self.listening.set())
        self.trainer.on_event = self.server.handle_event
        self.result: list = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="local-run")

    def _run(self) -> None:
        try:
            self.result.append(self.trainer.run())
        except Exception as e:  # noqa: BLE001 - kept for the test to look at
            self.result.append(e)
        finally:
            self.server.close()

    def start(self) -> LocalRun:
        """Start, and return once the run listens; raise what stopped it if it never does."""
        self.thread.start()
        while not self.listening.wait(0.05):
            if not self.thread.is_alive():
                error = self.result[0] if self.result else RuntimeError("the run ended before it listened")
                raise error if isinstance(error, Exception) else RuntimeError(f"the run ended: {error}")
        return self

    def connect(self, on_event):
        """What the app's engine factory does: start the run if it is not running, then attach."""
        if not self.thread.is_alive() and not self.listening.is_set():
            self.start()
        client = self.client(on_event)
        client.connect()
        return client

    @property
    def run_dir(self):
        return self.server.run_dir

    def client(self, on_event=None, viewer: bool = True):
        from charrnn_tui.engine.serve.client import EngineClient

        return EngineClient(self.run_dir, on_event, viewer=viewer)

    def stop(self, timeout: float = 30.0) -> None:
        if self.thread.is_alive():
            self.trainer.request(Stop(save=True))
            self.thread.join(timeout)


@contextlib.contextmanager
def fake_engine(run_dir: Path, serve: Callable[[socket.socket], None], *, live: bool = True) -> Iterator[None]:
    """A plain socket server on the run's socket path, serving each connection with `serve` in a
    thread; with `live`, this process holds the run's lock, as an engine does. Everything it started
    is closed and joined on the way out."""
    from charrnn_tui.engine.runs import SOCKET, RunLock, unix_address

    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = RunLock(run_dir).acquire() if live else None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with unix_address(run_dir / SOCKET) as address:
        listener.bind(address)
    listener.listen(8)
    threads: list[threading.Thread] = []

    def serve_and_close(conn: socket.socket) -> None:
        conn.settimeout(10)
        with contextlib.suppress(OSError), conn:
            serve(conn)

    def accept_loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            thread = threading.Thread(target=serve_and_close, args=(conn,), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    try:
        yield
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join(10)
        for thread in threads:
            thread.join(10)
        if lock is not None:
            lock.release()
        (run_dir / SOCKET).unlink(missing_ok=True)


def run_info(**changes):  # -> events.RunInfo
    """A run's RunInfo for the tests of the folds (engine/run_state.py, tui/run_view.py), with changes."""
    from charrnn_tui.engine import events as ev

    fields = dict(run_name="run", run_dir="/runs/run", corpus_name="c.txt", corpus_source="/c.txt",
                  corpus_chars=1000, train_tokens=900, val_tokens=100, token_kind="char", vocab_size=50,
                  model_kind="lstm", layers=2, hidden=64, embedding=32, parameters=12345, device="cpu",
                  device_name="CPU, 2 threads", precision="fp32", preset="tiny", batch_size=8, seq_len=32,
                  max_steps=None, max_epochs=None, max_time=None, resumed_step=0,
                  config={"temperature": 0.6, "early_stop": 5})
    fields.update(changes)
    return ev.RunInfo(**fields)


def progress_event(step: int, losses, **changes):  # -> events.Progress
    """A Progress event at `step` reporting `losses` (the steps up to it), with changes."""
    from charrnn_tui.engine import events as ev

    fields = dict(step=step, first_step=step - len(losses) + 1, losses=tuple(losses), epoch=step / 100,
                  tokens_per_s=1000.0 + step, lr=0.01, train_seconds=step / 10, eta_seconds=50.0,
                  epoch_eta_seconds=5.0, memory_bytes=2048)
    fields.update(changes)
    return ev.Progress(**fields)


def first_minute_losses(steps: int, seed: int = 0) -> list[float]:
    """A char-level run's training losses, seeded: from ln(65) = 4.17 quickly past the unigram loss,
    then slowly on towards 1.3, with a batch's noise (the loss chart's tests: issue 28)."""
    import math
    import random

    rng = random.Random(seed)
    return [1.3 + 2.2 * math.exp(-s / 60) + 0.7 * math.exp(-s / 1000) + rng.gauss(0, 0.05)
            for s in range(1, steps + 1)]
