"""Sharing the CPU's cores between the runs training at once on one machine.

Two runs that each take every core make their thread pools fight: measured on 2 cores, one run
alone trained at 42,400 chars/s, two at once at 250 and 407, and two with one thread each at
33,000 each. A run that was not given --threads therefore takes its share of the cores it may use
(os.sched_getaffinity, so `taskset` pins it), counting the runs training now in its runs folder,
and looks again every few seconds as others start, pause and end.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .runs import SOCKET, is_live, read_status

INTERVAL = 5.0  # seconds between looks at the other runs


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def other_training_runs(runs_dir: Path, own: Path | None = None) -> int:
    """Runs in the folder, other than `own`, whose engine is alive and training (or about to)."""
    if not runs_dir.is_dir():
        return 0
    count = 0
    for folder in runs_dir.iterdir():
        if folder == own or not (folder / SOCKET).exists():
            continue
        if read_status(folder).get("state") in ("starting", "training") and is_live(folder):
            count += 1
    return count


class ThreadShare:
    """Called by the training thread between steps (torch's thread count is set per thread)."""

    def __init__(self, runs_dir: Path, run_dir: Path | None = None, cores: int | None = None):
        self.runs_dir, self.run_dir = runs_dir, run_dir
        self.cores = cores or available_cores()
        self.checked = -INTERVAL

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.checked < INTERVAL:
            return
        self.checked = now
        share = max(1, self.cores // (1 + other_training_runs(self.runs_dir, self.run_dir)))
        if share != torch.get_num_threads():
            torch.set_num_threads(share)
