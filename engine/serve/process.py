"""A run's engine process: the trainer on the main thread, its server on background threads.

Two ways to be one. In the foreground (`train --headless`) it prints a progress line; Ctrl+C or
SIGTERM saves and ends the run, a second Ctrl+C quits at once, and a lost terminal (SIGHUP)
detaches it: the run goes on, its output moves to engine.log in the run folder. Detached (started
by `train --detach` or by the app, in a session of its own so no terminal can hang it up) it tells
its launcher through a pipe when the run is listening, or why it could not start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from charrnn_tui.engine.errors import CharRNNError, CheckpointError
from charrnn_tui.engine.events import Event, Notice
from charrnn_tui.engine.printable import printable_line
from charrnn_tui.engine.protocol import Stop
from charrnn_tui.engine.run.distributed import World, world_from_env
from charrnn_tui.engine.run.threads import ThreadShare
from charrnn_tui.engine.runs import LOG, open_in_run, run_hint
from charrnn_tui.engine.serve.server import RunServer

if TYPE_CHECKING:
    from charrnn_tui.engine.run.trainer import RunPlan, Trainer

DETACHED_PRINT_INTERVAL = 60.0  # seconds between progress lines in engine.log
# engine.log is moved to engine.log.1 (one kept) when an engine starts writing to it over this size.
# At the start, not while it runs: a detached engine writes a line a minute (about 0.2 MB a day),
# so what grew for ever was the sessions adding up; a size checked then costs the loop nothing, and
# the last session's end (the traceback of a crash) is still in engine.log.1 after a restart.
LOG_LIMIT = 10 * 2**20


@dataclass(frozen=True)
class ServeOptions:
    """How a run's engine process serves it, besides the run itself (a RunPlan)."""

    serve_fd: int | None = None  # detached: the pipe that tells the launcher "ready RUN_DIR" or "error WHY"
    jsonl: str | None = None  # a file that every event is appended to, a JSON line each
    for_app: bool = False  # started for a UI: a checkpoint that cannot be written pauses the run
    balance_threads: bool = True  # share the CPU cores with the other runs (no --threads given)


def serve(plan: RunPlan, options: ServeOptions) -> int:
    """Train the planned run, serving its socket; the exit status."""
    from charrnn_tui.engine.serve.printer import ProgressPrinter

    world = world_from_env()
    if world.distributed and not world.leader:
        return follow(plan, world)

    detached = options.serve_fd is not None
    ready = os.fdopen(options.serve_fd, "w") if options.serve_fd is not None else None
    jsonl = open(options.jsonl, "a", encoding="utf-8") if options.jsonl else None  # noqa: SIM115
    printer = ProgressPrinter(jsonl=jsonl, interval=DETACHED_PRINT_INTERVAL if detached else 2.0)
    server: RunServer | None = None
    trainer: Trainer | None = None
    share = ThreadShare(plan.runs_dir)

    def on_listening(run_dir: Path) -> None:
        share.run_dir = run_dir
        if ready is not None:  # detached
            _output_to_log(run_dir)
            _tell(ready, f"ready {run_dir}")

    def on_event(event: Event) -> None:
        assert server is not None, "made before the run starts, and only a running run emits"
        server.handle_event(event)
        printer(event)

    try:
        trainer = plan.trainer(on_event, interactive=options.for_app, world=world)
        server = RunServer(trainer, on_listening=on_listening, required=detached)
        if options.balance_threads and not world.distributed:  # a distributed run splits the cores itself
            share.on_choice = lambda message: trainer.emit(Notice(message))
            trainer.balance_threads = share
        _handle_signals(trainer, detached, distributed=world.distributed)
        state = trainer.run()
    except CharRNNError as e:
        if ready is not None and not ready.closed:
            _tell(ready, f"error {e}")
        raise
    finally:
        if server is not None:
            server.close()
        if jsonl is not None:
            jsonl.close()
        if ready is not None and not ready.closed:
            _tell(ready, f"error {trainer.error if trainer is not None and trainer.error else 'the engine ended'}")
    if state == "error":  # stopped without raising (a NaN loss): say why
        sys.stderr.write(f"charrnn-tui: error: {trainer.error}\n")
        return 1
    return 0


def follow(plan: RunPlan, world: World) -> int:
    """A follower rank of a distributed run: it trains as rank 0 commands, and prints, saves and
    serves nothing. torchrun passes Ctrl+C, SIGTERM and SIGHUP on to every rank; only rank 0 acts
    on them (it saves, which needs the followers' states, then tells them to stop)."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    trainer = plan.trainer(None, world=world)
    try:
        trainer.run()
    except CharRNNError as e:
        raise CharRNNError(f"rank {world.rank}: {e}") from None
    return 0


def tell_launcher(serve_fd: int, line: str) -> None:
    """One line for the launcher of a detached engine ("error WHY": the run was not even planned)."""
    with contextlib.suppress(OSError):
        _tell(os.fdopen(serve_fd, "w"), line)


def _tell(ready: TextIO, line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        ready.write(line.replace("\n", " ") + "\n")
        ready.close()


def _output_to_log(run_dir: Path | None) -> None:
    """From here on, stdout and stderr go to the run's engine.log (a detached engine has no
    terminal; a foreground one has just lost its), or nowhere before the run has a folder."""
    if run_dir is None:
        fd = os.open(os.devnull, os.O_WRONLY)
    else:
        try:
            fd = open_log(run_dir)
        except OSError as e:
            raise CheckpointError(f"cannot write {printable_line(str(run_dir / LOG))} ({e.strerror or e}): "
                                  "remove it and try again") from None
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def open_log(run_dir: Path) -> int:
    """engine.log in the run folder, to append to: moved to engine.log.1 first when over LOG_LIMIT,
    and never a file reached through a symbolic link planted in its place (open_in_run)."""
    log = run_dir / LOG
    try:
        st = os.lstat(log)
        if stat.S_ISREG(st.st_mode) and st.st_size > LOG_LIMIT:
            os.replace(log, log.with_name(LOG + ".1"))  # a rename: it follows no link, at either name
    except OSError:
        pass  # none yet, or it cannot be moved: it is appended to as it is
    return open_in_run(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)


def _handle_signals(trainer: Trainer, detached: bool, distributed: bool = False) -> None:
    """SIGINT and SIGTERM save and stop (a second SIGINT quits at once); SIGHUP detaches, except
    under torchrun, which passes a hangup on to its processes and kills them 30 s later: there
    rank 0 saves and stops in that time."""
    fired = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired and signum == signal.SIGINT:
            sys.stderr.write("\nstopping now, without saving\n")
            raise SystemExit(130)
        fired = True
        sys.stderr.write(f"\n{signal.Signals(signum).name}: saving a checkpoint and stopping\n")
        trainer.request(Stop(save=True, unattended=True))

    def hang_up(signum: int, frame: FrameType | None) -> None:
        run_dir = trainer.built.run_dir if trainer.built is not None else None  # None: not placed yet
        try:
            _output_to_log(run_dir)
        except CheckpointError:  # no usable engine.log: the output goes nowhere rather than to a dead terminal
            _output_to_log(None)
        if run_dir is not None:
            print(f"SIGHUP: the terminal has gone; training goes on: `{run_hint('attach', run_dir)}`", flush=True)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, stop if distributed else signal.SIG_IGN if detached else hang_up)
