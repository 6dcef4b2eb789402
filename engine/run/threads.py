"""Sharing the CPU's cores between the runs training at once on one machine.

Two runs that each take every core make their thread pools fight: measured on 2 cores, one run
alone trained at 42,400 chars/s, two at once at 250 and 407, and two with one thread each at
33,000 each. A run that was not given --threads therefore takes its share of the cores it may use
(os.sched_getaffinity, so `taskset` pins it), bounded two ways, the tighter one winning:
- the runs training now in its runs folder (their status.json), looked at every few seconds;
- the machine's load: runs in other runs folders, a build, anything. /proc/stat's busy time of
  this run's cores less its own CPU time (engine/run/cpu_load.py), read every LOAD_WINDOW. Others
  keeping a core busy (half a core or more: a one-thread rival beside a two-thread pool gets 2/3
  of one; an attached app 1.3%) leave the run what they do not use, and at most half the cores,
  since they may be runs that want cores as much. It is read from the start: the first window
  opens before set-up (4.2 s of wall time and 1.7 s of CPU for the default run on a shared 2-core
  machine), so a run that starts beside another sees it before its first step. Two default runs
  started together in different folders each timed two threads against one, in 3 s steps, for
  18 s at 310 chars/s, before it was read (issue 28). The share falls at the first reading that
  says so, and rises only when the last LOAD_HOLD seconds all agree: a rival's save or evaluation
  is a lull, not its end. /proc/loadavg would not do: it averages over a minute.

More threads are not always faster: the tiny preset trained at 196,000 chars/s on one thread and
166,000 on two (2 CPU cores, tiny-shakespeare), where the small preset trained at 36,500 and 55,000.
A small model's matrices are too small to split, and the threads wait for each other at every op;
a second thread waiting also turns every moment an attached app or the terminal takes from it into
a stall of both. So on a CPU the share is an upper bound: the run times its first reports at each
count from the share down to one (halving) and keeps the fastest, and does so again when the share
changes. The counts are timed there and back (8, 4, 2, 1, 1, 2, 4, 8), so that what slows the
run's first seconds (an app attaching, the disk) does not fall on the counts timed first only.
Each count is timed for half a second or two reports, whichever ends first: a report is at least
one step, and a step that fights another pool for the cores takes seconds, so one such report
ends the count (the "100 times slower step" check this needs, and no more).

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

from charrnn_tui.engine.run.cpu_load import CoresTaken, OtherLoad
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


# A count is timed for TIMED_REPORTS or TIMED_SECONDS, whichever ends first. In reports alone (seven
# at the first count, three at the others), steps of 3 s fighting another pool cost 18 s.
TIMED_REPORTS, TIMED_SECONDS = 2, 0.5
# Not timed: a run's first 1.5 s (the allocator, the thread pool, the caches filling made its first
# four reports slower at any count: [21, 54, 46, 32] k chars/s, then 57), and the first report
# after a change if shorter than TIMED_SECONDS (it straddles the change; a longer one says enough).
STARTING_SECONDS = 1.5


def candidates(share: int) -> list[int]:
    """Thread counts to time, from the share down to one by halving: [6, 3, 1], [2, 1], [1]."""
    counts = [share]
    while counts[-1] > 1:
        counts.append(counts[-1] // 2)
    return counts


def load_share(cores: int, taken: int) -> int:
    """This run's share when others keep `taken` of its `cores` busy: what they leave, and at most
    half while anyone is busy, since they may be runs that want cores as much: a run that started
    alone on 8 cores and took them all gives a newcomer 1, then takes 4 itself, and the newcomer 4."""
    if taken <= 0:
        return cores
    return max(1, min(cores - taken, cores // 2))


class ThreadShare:
    """Called by the training thread at every progress report with the training speed since the
    last one (torch's thread count is set per thread). `clock` and `other_load` (cores' worth of
    CPU time others used since its last call, or None) are there for tests."""

    def __init__(self, runs_dir: Path, run_dir: Path | None = None, cores: int | None = None, *,
                 on_choice: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 other_load: Callable[[], float | None] | None = None):
        self.runs_dir, self.run_dir = runs_dir, run_dir
        self.cores = cores or available_cores()
        self.on_choice = on_choice
        self.clock = clock
        self.cores_taken = CoresTaken(other_load if other_load is not None else OtherLoad())  # its window starts now
        self.checked = -INTERVAL
        self.share = 0
        self.chosen = 0
        self.trials: list[int] = []  # counts still to time, the one being timed first
        self.rates: dict[int, list[float]] = {}
        self.others_in_folder: int | None = None  # runs training in the runs folder, once looked at
        self.taken: int | None = None  # the cores others keep busy, once read
        self.said_limit: int | None = None  # the load's limit on the threads, as last told
        self.last_call: float | None = None
        self.skip_until = 0.0  # reports ending before this are not timed: the run's start
        self.skip_short = False  # the next report is not timed if short: it straddles a change
        self.timed_from: float | None = None  # when the timed reports at this count began
        self.timed_reports = 0
        self._looked = threading.Event()  # set when a look at the other runs has ended
        self._looked.set()
        self._found: int | None = None  # what the last look found, not yet taken
        self._found_lock = threading.Lock()
        self._patient = True  # the training thread waits for a look, until one has been slow

    def __call__(self, rate: float | None = None) -> None:
        now = self.clock()
        previous, self.last_call = self.last_call, now
        if previous is None:  # the run's start
            self.skip_until = now + STARTING_SECONDS
        duration = now - previous if previous is not None else 0.0
        self._look_at_folder(now)
        self._read_load(now)
        share = self._bound()
        if share is not None and share != self.share:
            self.share = share
            self._start_trials(share)
            return  # the report that just ended was at the count before
        if self.trials and rate is not None:
            self._time(rate, now, duration)

    def _look_at_folder(self, now: float) -> None:
        if now - self.checked >= INTERVAL and self._looked.is_set():  # one look at a time, never piling up
            self.checked = now
            self._looked.clear()
            threading.Thread(target=self._look, name="thread-share", daemon=True).start()
            if self._patient and not self._looked.wait(SCAN_WAIT):
                self._patient = False  # a slow folder: from now on its counts are taken when they come
        with self._found_lock:
            found, self._found = self._found, None
        if found is not None:
            self.others_in_folder = found

    def _read_load(self, now: float) -> None:
        taken = self.taken = self.cores_taken(now)
        if taken is None:
            return
        limit = load_share(self.cores, taken)
        # Said when the limit changes, not the count of busy cores: two runs on 2 cores each see the
        # other keep 1 or 2 busy by turns (its evaluations, its saves), which told the user 5 times in
        # 30 s of the same "at most 1 of 2" (bench/two_runs.py). Nothing at an idle start.
        if limit != self.said_limit and (taken or self.said_limit is not None):
            self.said_limit = limit
            self._say(f"CPU threads: at most {limit} of {self.cores}, other processes keeping {taken} busy")

    def _bound(self) -> int | None:
        """The most threads this run should use, by what it knows so far (None: nothing yet)."""
        bounds = []
        if self.others_in_folder is not None:
            bounds.append(max(1, self.cores // (1 + self.others_in_folder)))
        if self.taken is not None:
            bounds.append(load_share(self.cores, self.taken))
        return min(bounds) if bounds else None

    def _say(self, message: str) -> None:
        if self.on_choice is not None:
            self.on_choice(message)

    def _time(self, rate: float, now: float, duration: float) -> None:
        if now < self.skip_until:
            self.skip_short = False  # the start's skip covers the first change
            return
        if self.skip_short:
            self.skip_short = False
            if duration < TIMED_SECONDS:
                return
        if self.timed_from is None:
            self.timed_from = now - duration
        self.rates.setdefault(self.trials[0], []).append(rate)
        self.timed_reports += 1
        if self.timed_reports < TIMED_REPORTS and now - self.timed_from < TIMED_SECONDS:
            return
        done = self.trials.pop(0)
        self.timed_from, self.timed_reports = None, 0
        if not self.trials:
            self._choose()
        elif self.trials[0] != done:  # not the turn, where timing goes on at the same count
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
        self.skip_short = True
        self.timed_from, self.timed_reports = None, 0
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)

    def _choose(self) -> None:
        # The median: a stall (another process, the disk) spoils one report, not the choice.
        timed = {n: statistics.median(r) for n, r in self.rates.items() if r}
        if not timed:
            return
        self.chosen = max(timed, key=lambda n: (timed[n], n))
        self._use(self.chosen)
        if len(timed) > 1:
            speeds = ", ".join(f"{n}: {timed[n]:,.0f}" for n in sorted(timed, reverse=True))
            self._say(f"CPU threads: {self.chosen} of {self.share}, the fastest (tokens/s by threads: {speeds})")
