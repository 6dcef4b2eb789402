"""Smaller caches for Textual's memoised methods, so that an app attached for days stays flat.

Textual 8.2.8 memoises in functools lru caches that an attached app fills slowly, with keys it has
not seen before, for hours (`python bench/textual_caches.py` prints what each holds when full):
- eleven Region methods (intersection, union, grow, shrink, overlaps...), 1,024 or 4,096 entries
  each: the samples panel scrolls and the status text changes every second, so each layout brings
  new Regions. About 490 bytes an entry, 8.1 MB for the five that fill; most of an attached app's
  growth over a 2-hour soak (38 to 52 MB) before they were bounded.
- `Strip.render_ansi`, 16,384 entries keyed by style. Text that can be selected with the mouse
  carries each segment's (column, line) in its style, so every sample brings styles not seen
  before: about 3 new entries a minute in a soak, 550 bytes each with the style they keep alive,
  8.6 MB when full.
Bounded, they hold about 1.4 MB together. A miss costs a microsecond or less (a Region's few integer
operations, a style's escape codes), and a frame needs far fewer entries than the bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from textual.geometry import Region
from textual.strip import Strip

REGION_CACHE_SIZE = 256
STYLE_CACHE_SIZE = 1024


def cached_function(method: object) -> object:
    """The lru-cached function behind a class attribute: itself, or a classmethod's function."""
    return method.__func__ if isinstance(method, classmethod) else method


def _rewrap(owner: type, name: str, method: object, size: int) -> bool:
    """Put `owner.name` (an lru-cached function, or a classmethod of one) under an lru cache of
    `size` entries if its own is larger; whether it did."""
    function = cached_function(method)
    original = getattr(function, "__wrapped__", None)
    info = getattr(function, "cache_info", None)
    if original is None or info is None or info().maxsize is None or info().maxsize <= size:
        return False
    bounded: Callable[..., Any] = lru_cache(maxsize=size)(original)
    setattr(owner, name, classmethod(bounded) if isinstance(method, classmethod) else bounded)
    return True


def bound_textual_caches(region_size: int = REGION_CACHE_SIZE, style_size: int = STYLE_CACHE_SIZE) -> list[str]:
    """Re-wrap every lru-cached Region method larger than `region_size` and `Strip.render_ansi`
    at `style_size`; the names re-wrapped (none the second time, so calling it again is harmless)."""
    bounded = [f"Region.{name}" for name, method in list(vars(Region).items())
               if _rewrap(Region, name, method, region_size)]
    if _rewrap(Strip, "render_ansi", vars(Strip)["render_ansi"], style_size):
        bounded.append("Strip.render_ansi")
    return bounded
