"""The commands about runs that live: `runs`, `stop`, and starting one with `train --detach`.
What the app shares with them (finding a run, why it is not live, where a background run is) is
in engine/runs.py."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from charrnn_tui.engine.durations import age
from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.printable import printable_line
from charrnn_tui.engine.protocol import Stop
from charrnn_tui.engine.runs import background_message, not_live_message, resolve_run


def run_runs(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from charrnn_tui.engine.runs import check_runs_dir, default_runs_dir, list_runs

    runs_dir = args.runs_dir or default_runs_dir()
    exists = check_runs_dir(runs_dir)  # a --runs-dir typo is an error, not an empty list
    entries = list_runs(runs_dir)
    if args.json:
        out.write(json.dumps([e.to_dict() for e in entries], indent=1) + "\n")
        return 0
    if not entries:
        out.write(f"no runs in {runs_dir}\n" if exists else f"no runs yet (they will be in {runs_dir})\n")
        return 0
    rows: list[tuple[str, ...]] = [("NAME", "STATE", "CORPUS", "MODEL", "STEP", "BEST VAL", "VIEWERS", "ACTIVE")]
    for e in entries:
        # Names and fields come from folder names and status.json: any string, escape sequences too.
        rows.append((printable_line(e.name), *(cell(v) for v in (e.state, e.corpus or "-", e.model_label)),
                     "-" if e.step is None else f"{e.step:,}",
                     "-" if e.best_val is None or not math.isfinite(e.best_val) else f"{e.best_val:.4f}",
                     str(e.viewers) if e.live else "-", age(time.time() - e.updated)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
    for e in entries:
        if e.problem is not None:  # listed as unreadable above: why, to mend or remove it
            out.write(printable_line(f"{e.name} is unreadable: {e.problem}") + "\n")
    return 0


CELL_WIDTH = 60  # characters of a status.json field shown in the table; a longer one is cut, with "…"


def cell(value: object) -> str:
    """A field from status.json as one printable table cell of at most CELL_WIDTH characters."""
    text = printable_line(value if isinstance(value, str) else str(value))
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "\u2026"


def nothing_to_stop(run_dir: Path) -> str | None:
    """`stop` on a run that has ended: what it is, for a line on stdout (None if it is no run)."""
    from charrnn_tui.engine.runs import LATEST, run_entry, run_hint

    entry = run_entry(run_dir)
    if entry is None or entry.live:
        return None
    at = "" if entry.step is None else f" at step {entry.step:,}"
    how = {"crashed": "crashed", "error": "ended with an error"}.get(entry.state, entry.state)
    line = f"run {entry.name} already {how}{at} (not live); nothing to stop"
    if entry.state == "crashed" and (run_dir / LATEST).is_file():
        line += f"; `{run_hint('train --resume', run_dir)}` continues it from its last checkpoint"
    return line


def run_stop(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Ask a live run to save and end; return once it has (and its process is gone)."""
    from charrnn_tui.engine import events as ev
    from charrnn_tui.engine.runs import default_runs_dir, is_live, run_hint
    from charrnn_tui.engine.serve.client import EngineClient, RunNotLive

    run_dir = resolve_run(args.run, args.runs_dir or default_runs_dir(), live=True)
    after_stop: list[ev.Event] = []
    client = EngineClient(run_dir, viewer=False)

    def on_event(event: ev.Event) -> None:
        after_stop.append(event)
        if isinstance(event, ev.StateChanged) and event.state == "paused" and event.reason == "checkpoint failed":
            client.detach()  # a run started by the app pauses rather than lose steps: say so, below

    try:
        welcome = client.connect()
    except RunNotLive:
        ended = nothing_to_stop(run_dir)
        if ended is None:
            raise CharRNNError(not_live_message(run_dir)) from None
        out.write(printable_line(ended) + "\n")  # what stop is for is done already: not an error
        return 0
    earlier_saves = [e.step for e in welcome if isinstance(e, ev.CheckpointSaved)]
    pid = client.status().get("pid")
    client.welcome_events = []  # run() hands on only what happens from here
    client.on_event = on_event
    client.request(Stop(save=not args.no_save))
    state = client.run()
    if state == "detached":
        raise CharRNNError(f"run {run_dir.name} could not write its final checkpoint and is paused, not stopped: "
                           f"free space and stop it again, or `{run_hint('stop', run_dir, ' --no-save')}`")
    deadline = time.monotonic() + 30  # and until its process has let go of the run and ended
    while (is_live(run_dir) or _process_alive(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if state not in ("stopped", "finished", "error"):
        raise CharRNNError(f"lost the connection to run {run_dir.name} before it ended ({state})")
    if state == "error":  # the reason and the path below are the engine's words: printable
        out.write(printable_line(f"run {run_dir.name} ended with an error: {client.error}") + "\n")
        return 1
    saved = [e for e in after_stop if isinstance(e, ev.CheckpointSaved) and e.kind == "latest"]
    if saved:
        where = f"; saved step {saved[-1].step} to {saved[-1].path}"
    else:
        last = f"step {earlier_saves[-1]}" if earlier_saves else "none"
        where = f"; not saved (the last checkpoint is {last})"
    out.write(printable_line(f"run {run_dir.name} {state} at step {client.step}{where}") + "\n")
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
    from charrnn_tui.engine.runs import check_new_run_name, default_runs_dir
    from charrnn_tui.engine.serve.launch import launch_engine

    if getattr(args, "resume", None) is None:
        check_new_run_name(getattr(args, "name", None), args.runs_dir or default_runs_dir())
    run_dir = launch_engine([a for a in args.train_argv if a != "--detach"])
    out.write(background_message(run_dir))
    return 0
