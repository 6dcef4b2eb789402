"""The engine process's CPU use and resident memory, for the progress report.

Read once per report (a few times a second at most), never per step: os.times() is one system call
and /proc/self/statm one small read, together some microseconds. Every thread of the process counts,
torch's OpenMP team included, so a run on 4 threads can show up to 400%."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

STATM = "/proc/self/statm"  # pages: total, resident, ...; Linux only


@dataclass(frozen=True)
class Usage:
    cpu_percent: float | None  # CPU time over wall time since the last reading, in percent; None at the first
    rss_bytes: int | None  # resident memory now; None where /proc is not there


class ProcessUsage:
    def __init__(self, statm: str = STATM):
        self.statm = statm
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._last: tuple[float, float] | None = None  # (wall, CPU seconds) at the last reading

    def read(self) -> Usage:
        wall, cpu = time.monotonic(), _cpu_seconds()
        percent = None
        if self._last is not None and wall > self._last[0]:
            percent = 100.0 * max(0.0, cpu - self._last[1]) / (wall - self._last[0])
        self._last = (wall, cpu)
        return Usage(percent, self._resident())

    def _resident(self) -> int | None:
        try:
            with open(self.statm, "rb") as f:
                return int(f.read().split()[1]) * self._page
        except (OSError, IndexError, ValueError):  # not Linux, or a /proc that says something else
            return None


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system
