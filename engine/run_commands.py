"""The commands about runs that live: `runs`, `stop`, and starting one with `train --detach`."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TextIO

from .errors import CharRNNError


def run_runs(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from .runs import default_runs_dir, list_runs

    runs_dir = args.runs_dir or default_runs_dir()
    entries = list_runs(runs_dir)
    if args.json:
        out.write(json.dumps([e.to_dict() for e in entries], indent=1) + "\n")
        return 0
    if not entries:
        out.write(f"no runs in {runs_dir}\n")
        return 0
    rows = [("NAME", "STATE", "CORPUS", "MODEL", "STEP", "BEST VAL", "VIEWERS", "ACTIVE")]
    for e in entries:
        rows.append((e.name, e.state, e.corpus or "-", e.model_label, "-" if e.step is None else f"{e.step:,}",
                     "-" if e.best_val is None or not math.isfinite(e.best_val) else f"{e.best_val:.4f}",
                     str(e.viewers) if e.live else "-", format_age(time.time() - e.updated)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
    return 0


def format_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def resolve_run(ref: str | None, runs_dir: Path, *, live: bool) -> Path:
    """A run folder from a name or a path; with no name, the most recently active live run."""
    from .runs import is_bare_name, list_runs, sanitize_run_name

    if ref is None:
        candidates = [e for e in list_runs(runs_dir) if e.live] if live else list_runs(runs_dir)
        if not candidates:
            raise CharRNNError(f"no live runs in {runs_dir}; `charrnn-tui runs` lists them all")
        return candidates[0].path
    named = runs_dir / sanitize_run_name(ref)
    if is_bare_name(ref) and named.is_dir():
        return named  # a run's name wins over a folder of that name where the command was typed
    path = Path(ref).expanduser()
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        path = named
    if not path.is_dir():
        raise CharRNNError(f"{ref}: no such run in {runs_dir}; `charrnn-tui runs` lists them")
    return path


def run_stop(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Ask a live run to save and end; return once it has (and its process is gone)."""
    from . import events as ev
    from .client import EngineClient
    from .runs import default_runs_dir, is_live

    run_dir = resolve_run(args.run, args.runs_dir or default_runs_dir(), live=True)
    after_stop: list[ev.Event] = []
    client = EngineClient(run_dir, viewer=False)

    def on_event(event: ev.Event) -> None:
        after_stop.append(event)
        if isinstance(event, ev.StateChanged) and event.state == "paused" and event.reason == "checkpoint failed":
            client.detach()  # a run started by the app pauses rather than lose steps: say so, below

    welcome = client.connect()
    earlier_saves = [e.step for e in welcome if isinstance(e, ev.CheckpointSaved)]
    pid = client.status().get("pid")
    client.welcome_events = []  # run() hands on only what happens from here
    client.on_event = on_event
    client.stop(save=not args.no_save)
    state = client.run()
    if state == "detached":
        raise CharRNNError(f"run {run_dir.name} could not write its final checkpoint and is paused, not stopped: "
                           f"free space and stop it again, or `charrnn-tui stop {run_dir.name} --no-save`")
    deadline = time.monotonic() + 30  # and until its process has let go of the run and ended
    while (is_live(run_dir) or _process_alive(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if state not in ("stopped", "finished", "error"):
        raise CharRNNError(f"lost the connection to run {run_dir.name} before it ended ({state})")
    if state == "error":
        out.write(f"run {run_dir.name} ended with an error: {client.error}\n")
        return 1
    saved = [e for e in after_stop if isinstance(e, ev.CheckpointSaved) and e.kind == "latest"]
    if saved:
        where = f"; saved step {saved[-1].step} to {saved[-1].path}"
    else:
        last = f"step {earlier_saves[-1]}" if earlier_saves else "none"
        where = f"; not saved (the last checkpoint is {last})"
    out.write(f"run {run_dir.name} {state} at step {client.step}{where}\n")
    return 0


def _process_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_detached(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from .launch import launch_engine
    from .runs import default_runs_dir

    run_dir = launch_engine([a for a in args.train_argv if a != "--detach"])
    # The commands as they must be typed: another --runs-dir than the default has to be repeated.
    name = shlex.quote(run_dir.name)
    if run_dir.parent.resolve() != default_runs_dir().resolve():
        name += f" --runs-dir {shlex.quote(str(run_dir.parent))}"
    out.write(f"run {run_dir.name} is training in the background ({run_dir})\n"
              f"  watch it:  charrnn-tui attach {name}\n"
              f"  stop it:   charrnn-tui stop {name}\n")
    return 0
