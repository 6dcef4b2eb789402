"""Smaller caches for Textual's Region arithmetic, so that an app attached for hours stays flat.

Textual 8.2.8 memoises eleven Region methods (intersection, union, grow, shrink, overlaps...) in
functools lru caches of 1,024 or 4,096 entries each, keyed by the Regions themselves. In this app
the samples panel scrolls and the status text changes every second, so each layout brings Regions
not seen before and the caches fill for the first hour or two: about 490 bytes an entry, 8.1 MB
for the five that fill (`python bench/region_caches.py`), most of an attached app's steady growth
over a 2-hour soak (38 to 52 MB). At 256 entries they hold 0.5 MB. A Region method is a few
integer operations: a miss costs under a microsecond more than a hit.
"""

from __future__ import annotations

from functools import lru_cache

from textual.geometry import Region

REGION_CACHE_SIZE = 256


def bound_region_caches(size: int = REGION_CACHE_SIZE) -> list[str]:
    """Re-wrap every lru-cached Region method larger than `size`; the names re-wrapped (none the
    second time, so calling it again is harmless)."""
    bounded = []
    for name, method in list(vars(Region).items()):
        original = getattr(method, "__wrapped__", None)
        info = getattr(method, "cache_info", None)
        if original is None or info is None or info().maxsize is None or info().maxsize <= size:
            continue
        setattr(Region, name, lru_cache(maxsize=size)(original))
        bounded.append(name)
    return bounded
