"""Sharing the CPU's cores between the runs training at once on one machine.

Two runs that each take every core make their thread pools fight: measured on 2 cores, one run
alone trained at 42,400 chars/s, two at once at 250 and 407, and two with one thread each at
33,000 each. A run that was not given --threads therefore takes its share of the cores it may use
(os.sched_getaffinity, so `taskset` pins it), counting the runs training now in its runs folder,
and looks again every few seconds as others start, pause and end.

More threads are not always faster: the tiny preset trained at 196,000 chars/s on one thread and
166,000 on two (2 CPU cores, tiny-shakespeare), where the small preset trained at 36,500 and 55,000.
A small model's matrices are too small to split, and the threads wait for each other at every op;
a second thread waiting also turns every moment an attached app or the terminal takes from it into
a stall of both. So on a CPU the share is an upper bound: the run times its first reports at each
count from the share down to one (halving) and keeps the fastest, and does so again when the share
changes. The counts are timed there and back (8, 4, 2, 1, 1, 2, 4, 8), so that what slows the
run's first seconds (an app attaching, the disk) does not fall on the counts timed first only.

The look at the other runs reads their status.json and .lock, files anyone who shares the folder
may have put there: it runs on a thread of its own, and the training thread waits for it at most
SCAN_WAIT, and only until one look has been slow. A FIFO, a huge file or a network disk that hangs
can delay a count, never a step or the save that SIGTERM asks for.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from charrnn_tui.engine.runs import SOCKET, is_live, read_status, run_folders

INTERVAL = 5.0  # seconds between looks at the other runs
SCAN_WAIT = 1.0  # seconds the training thread waits for a look (a few ms on a local disk)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def other_training_runs(runs_dir: Path, own: Path | None = None) -> int:
    """Runs in the folder, other than `own`, whose engine is alive and training (or about to): your
    own runs only (run_folders), their files read without blocking or raising (engine/runs.py)."""
    count = 0
    for folder in run_folders(runs_dir):
        if folder == own or not os.path.lexists(folder / SOCKET):
            continue
        if read_status(folder).get("state") in ("starting", "training") and is_live(folder):
            count += 1
    return count


TIMED_REPORTS = 2  # progress reports timed per count and pass (two passes): 1 s a count by default
# Reports not timed: the first after a change straddles it, and a run's first second (the allocator,
# the thread pool, the caches filling) is slower at any count: [21, 54, 46, 32] k chars/s, then 57.
SKIPPED_REPORTS, STARTING_REPORTS = 1, 5


def candidates(share: int) -> list[int]:
    """Thread counts to time, from the share down to one by halving: [6, 3, 1], [2, 1], [1]."""
    counts = [share]
    while counts[-1] > 1:
        counts.append(counts[-1] // 2)
    return counts


class ThreadShare:
    """Called by the training thread at every progress report with the training speed since the
    last one (torch's thread count is set per thread)."""

    def __init__(self, runs_dir: Path, run_dir: Path | None = None, cores: int | None = None, *,
                 on_choice: Callable[[str], None] | None = None):
        self.runs_dir, self.run_dir = runs_dir, run_dir
        self.cores = cores or available_cores()
        self.on_choice = on_choice
        self.checked = -INTERVAL
        self.share = 0
        self.chosen = 0
        self.trials: list[int] = []  # counts still to time, the one being timed first
        self.rates: dict[int, list[float]] = {}
        self.reports = 0  # reports since the count last changed
        self.skip = STARTING_REPORTS
        self._looked = threading.Event()  # set when a look at the other runs has ended
        self._looked.set()
        self._found: int | None = None  # what the last look found, not yet taken
        self._found_lock = threading.Lock()
        self._patient = True  # the training thread waits for a look, until one has been slow

    def __call__(self, rate: float | None = None) -> None:
        now = time.monotonic()
        if now - self.checked >= INTERVAL and self._looked.is_set():  # one look at a time, never piling up
            self.checked = now
            self._looked.clear()
            threading.Thread(target=self._look, name="thread-share", daemon=True).start()
            if self._patient and not self._looked.wait(SCAN_WAIT):
                self._patient = False  # a slow folder: from now on its counts are taken when they come
        with self._found_lock:
            found, self._found = self._found, None
        if found is not None:
            share = max(1, self.cores // (1 + found))
            if share != self.share:
                self.share = share
                self._start_trials(share)
        if self.trials and rate is not None:
            self.reports += 1
            if self.reports > self.skip:
                self.rates.setdefault(self.trials[0], []).append(rate)
            if self.reports >= self.skip + TIMED_REPORTS:
                done = self.trials.pop(0)
                if not self.trials:
                    self._choose()
                elif self.trials[0] == done:  # the turn: timing goes on at the same count
                    self.reports = self.skip = 0
                else:
                    self._use(self.trials[0])

    def _look(self) -> None:
        """On its own thread: how many other runs train now, for the next call to take."""
        try:
            found = other_training_runs(self.runs_dir, self.run_dir)
            with self._found_lock:
                self._found = found
        except Exception:  # noqa: BLE001 - a look that fails leaves the share as it was; training goes on
            pass
        finally:
            self._looked.set()

    def _start_trials(self, share: int) -> None:
        self.rates = {}
        counts = candidates(share)
        self.trials = counts + counts[::-1] if share > 1 else []
        self._use(self.trials[0] if self.trials else share)
        if not self.trials:
            self.chosen = share

    def _use(self, threads: int) -> None:
        if self.reports or self.rates:  # not the run's start: only the straddling report goes
            self.skip = SKIPPED_REPORTS
        self.reports = 0
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)

    def _choose(self) -> None:
        # The median: a stall (another process, the disk) spoils one report, not the choice.
        timed = {n: statistics.median(r) for n, r in self.rates.items() if r}
        if not timed:
            return
        self.chosen = max(timed, key=lambda n: (timed[n], n))
        self._use(self.chosen)
        if self.on_choice is not None and len(timed) > 1:
            speeds = ", ".join(f"{n}: {timed[n]:,.0f}" for n in sorted(timed, reverse=True))
            self.on_choice(f"CPU threads: {self.chosen} of {self.share}, the fastest (tokens/s by threads: {speeds})")
