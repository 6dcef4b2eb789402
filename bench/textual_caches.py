"""What Textual's Region and style caches cost when full, at their own sizes and at the app's
(tui/textual_caches.py).

    python bench/textual_caches.py

Fills each lru-cached Region method with Regions not seen before, as a scrolling panel does over
an hour, and `Strip.render_ansi` with styles not seen before, as selectable sample text does over
hours, and prints the memory held (tracemalloc, the keys made inside the measurement) and the time
per call, hit and miss.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from functools import lru_cache

from rich.color import ColorSystem
from rich.style import Style
from textual.geometry import Region, Spacing
from textual.strip import Strip

from charrnn_tui.tui.textual_caches import REGION_CACHE_SIZE, STYLE_CACHE_SIZE, cached_function

CALLS = {
    "intersection": lambda f, i: f(Region(i, i % 24, 80, 300 + i), Region(0, i % 7, 80, 24)),
    "union": lambda f, i: f(Region(i, i % 24, 80, 300 + i), Region(0, i % 7, 80, 24)),
    "grow": lambda f, i: f(Region(i, 3, 80, 900 + i), Spacing(0, 1, 0, 1)),
    "shrink": lambda f, i: f(Region(i, 3, 80, 500 + i), Spacing(1, 1, 1, 1)),
    "overlaps": lambda f, i: f(Region(i, 3, 80, 500 + i), Region(0, i % 7, 80, 24)),
    # a sample's text: its colours, and each segment's (column, line) for mouse selection
    "render_ansi": lambda f, i: f(Strip, Style(color="#e0e0e0", bgcolor="#121212")
                                  + Style.from_meta({"offset": (i % 300, i // 300)}), ColorSystem.TRUECOLOR),
}
OWNERS = {"render_ansi": Strip}
BOUNDS = {"render_ansi": STYLE_CACHE_SIZE}


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
    print(f"{'method':<13} {'Textual size':>12} {'held':>9} {'bound':>6} {'held':>9} {'hit':>8} {'uncached':>9}")
    total = small = 0.0
    for name in CALLS:
        function = cached_function(vars(OWNERS.get(name, Region))[name])
        size, bound = function.cache_info().maxsize, BOUNDS.get(name, REGION_CACHE_SIZE)
        held, hit, bare = held_bytes(function.__wrapped__, size, name)
        held_small, _, _ = held_bytes(function.__wrapped__, bound, name)
        total, small = total + held, small + held_small
        print(f"{name:<13} {size:>12,} {held / 2**20:>7.2f}MB {bound:>6,} {held_small / 2**20:>7.2f}MB "
              f"{hit * 1e9:>6.0f}ns {bare * 1e9:>7.0f}ns")
    print(f"{'all':<13} {'':>12} {total / 2**20:>7.2f}MB {'':>6} {small / 2**20:>7.2f}MB")
    print("(the times include making the Regions or styles of each call)")


if __name__ == "__main__":
    main()
