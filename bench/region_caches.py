"""What Textual's Region caches cost when full, at their own sizes and at the app's (tui/region_caches.py).

    python bench/region_caches.py

Fills each lru-cached Region method with Regions not seen before, as a scrolling panel does over
an hour, and prints the memory held (tracemalloc) and the time per call, hit and miss.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from functools import lru_cache

from textual.geometry import Region, Spacing

from charrnn_tui.tui.region_caches import REGION_CACHE_SIZE

CALLS = {
    "intersection": lambda f, i: f(Region(i, i % 24, 80, 300 + i), Region(0, i % 7, 80, 24)),
    "union": lambda f, i: f(Region(i, i % 24, 80, 300 + i), Region(0, i % 7, 80, 24)),
    "grow": lambda f, i: f(Region(i, 3, 80, 900 + i), Spacing(0, 1, 0, 1)),
    "shrink": lambda f, i: f(Region(i, 3, 80, 500 + i), Spacing(1, 1, 1, 1)),
    "overlaps": lambda f, i: f(Region(i, 3, 80, 500 + i), Region(0, i % 7, 80, 24)),
}


def held_bytes(original, size: int, name: str) -> tuple[float, float, float]:
    cached = lru_cache(maxsize=size)(original)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(size):
        CALLS[name](cached, i)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    start = time.perf_counter()
    for i in range(20_000):
        CALLS[name](cached, i % 64)  # hits
    hit = (time.perf_counter() - start) / 20_000
    start = time.perf_counter()
    for i in range(20_000):
        CALLS[name](original, i)  # no cache at all
    bare = (time.perf_counter() - start) / 20_000
    return held, hit, bare


def main() -> None:
    print(f"{'method':<13} {'Textual size':>12} {'held':>9} {'at ' + str(REGION_CACHE_SIZE):>9} "
          f"{'hit':>8} {'uncached':>9}")
    total = small = 0.0
    for name in CALLS:
        method = vars(Region)[name]
        size = method.cache_info().maxsize
        held, hit, bare = held_bytes(method.__wrapped__, size, name)
        held_small, _, _ = held_bytes(method.__wrapped__, REGION_CACHE_SIZE, name)
        total, small = total + held, small + held_small
        print(f"{name:<13} {size:>12,} {held / 2**20:>7.2f}MB {held_small / 2**20:>7.2f}MB "
              f"{hit * 1e9:>6.0f}ns {bare * 1e9:>7.0f}ns")
    print(f"{'all five':<13} {'':>12} {total / 2**20:>7.2f}MB {small / 2**20:>7.2f}MB")
    print("(the times include making the Regions of each call)")


if __name__ == "__main__":
    main()
