"""How many of this process's cores other processes kept busy: the load a run sees on the machine.

Runs in different runs folders cannot see each other's status.json; what each can see is the
machine. /proc/stat counts every CPU's busy and idle time since boot (in USER_HZ ticks); between
two readings, the busy time of the CPUs this process may use (os.sched_getaffinity) minus this
process's own CPU time (time.process_time, all its threads) is what others used, divided by the
time that passed: cores' worth of other load. /proc/loadavg reacts over a minute, this over the
fraction of a second between two readings.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

PROC_STAT = Path("/proc/stat")
LOAD_WINDOW = 0.5  # seconds between readings (0.15 ms each)
LOAD_HOLD = 2.0  # the cores taken fall only once the readings have said so this long
FILLS = 0.5  # cores of others' load that count as a core taken: a 1-thread rival beside 2 threads gets 2/3
# A shorter reading is mostly the ticks' rounding (10 ms each): not read as a load.
MIN_WINDOW = 0.1  # seconds of wall time


def cpu_ticks(stat: str, cpus: Iterable[int]) -> tuple[int, int] | None:
    """(busy, total) ticks since boot of the given CPUs in /proc/stat's text, or None if it names
    none of them. Busy is all but idle and iowait; guest time is already in user and nice."""
    wanted = {f"cpu{n}" for n in cpus}
    busy = total = 0
    found = False
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        fields = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        if len(fields) < 5:
            continue
        found = True
        total += sum(fields)
        busy += sum(fields) - fields[3] - fields[4]
    return (busy, total) if found else None


def _read_stat() -> str:
    return PROC_STAT.read_text(encoding="ascii", errors="replace")


def _affinity() -> set[int] | None:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not on Linux, where there is no /proc/stat either
        return None


class OtherLoad:
    """Called now and then: cores' worth of CPU time that processes other than this one used since
    the previous call, or None (the first call, a window under MIN_WINDOW, no /proc/stat)."""

    def __init__(self, cpus: Iterable[int] | None = None, *, read_stat: Callable[[], str] = _read_stat,
                 own_cpu_seconds: Callable[[], float] = time.process_time):
        chosen = _affinity() if cpus is None else set(cpus)
        self.cpus = sorted(chosen) if chosen else []
        self.read_stat, self.own_cpu_seconds = read_stat, own_cpu_seconds
        self.tick = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)
        # busy ticks, total ticks, own CPU seconds; the first window starts now
        self.last: tuple[int, int, float] | None = self.reading()

    def reading(self) -> tuple[int, int, float] | None:
        try:
            ticks = cpu_ticks(self.read_stat(), self.cpus) if self.cpus else None
        except (OSError, ValueError):
            return None
        return None if ticks is None else (*ticks, self.own_cpu_seconds())

    def __call__(self) -> float | None:
        now = self.reading()
        if now is None:
            return None
        last = self.last
        if last is None:
            self.last = now
            return None
        window = (now[1] - last[1]) * self.tick / len(self.cpus)  # n CPUs' ticks count the wall time n times
        if window < MIN_WINDOW:  # the window grows until the next call
            return None
        self.last = now
        others = (now[0] - last[0]) * self.tick - (now[2] - last[2])
        return max(0.0, others / window)


def busy_cores(other_load: float) -> int:
    """The cores others take, from the cores' worth of CPU time they used: 0.6 -> 1, 0.4 -> 0."""
    return int(other_load + 1 - FILLS)


class CoresTaken:
    """Called at every progress report: how many cores others keep busy, read every LOAD_WINDOW
    seconds (None until a reading). It rises at the first reading that says so and falls only when
    the last LOAD_HOLD seconds' readings all agree: a rival's save or evaluation is a lull, not its end."""

    def __init__(self, other_load: Callable[[], float | None]):
        self.other_load = other_load
        self.readings: list[tuple[float, int]] = []  # (when, cores taken), the last LOAD_HOLD seconds
        self.read_at: float | None = None

    def __call__(self, now: float) -> int | None:
        if self.read_at is None or now - self.read_at >= LOAD_WINDOW:
            self.read_at = now
            load = self.other_load()
            if load is not None:
                self.readings.append((now, busy_cores(load)))
            while len(self.readings) > 1 and now - self.readings[0][0] > LOAD_HOLD:
                self.readings.pop(0)
        return max(taken for _, taken in self.readings) if self.readings else None
