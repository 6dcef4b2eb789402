"""Textual's Region and style caches are bounded small in the app (tui/textual_caches.py), and still right."""

from __future__ import annotations

from rich.color import ColorSystem
from rich.style import Style
from textual.geometry import Region, Spacing
from textual.strip import Strip

from charrnn_tui.tui.textual_caches import REGION_CACHE_SIZE, STYLE_CACHE_SIZE, bound_textual_caches


def offset_style(i: int) -> Style:
    """A style as selectable text carries it: the segment's column and line in its meta."""
    return Style(color="#e0e0e0", bgcolor="#121212", bold=i % 3 == 0) + Style.from_meta({"offset": (i % 300, i // 300)})


def test_the_app_bounds_every_region_cache_and_the_arithmetic_is_unchanged():
    from charrnn_tui.tui.app import CharRNNApp

    expected = {}
    for i in range(50):
        a, b = Region(i, i % 7, 80, 30 + i), Region(3, i % 5, 40 + i, 24)
        expected[i] = (a.intersection(b), a.union(b), a.grow(Spacing(1, 2, 3, 4)), a.shrink(Spacing(1, 1, 1, 1)),
                       a.overlaps(b), b in a)
    CharRNNApp(autostart=False)
    cached = {name: m for name, m in vars(Region).items() if hasattr(m, "cache_info")}
    assert {"intersection", "union", "grow", "shrink", "overlaps", "__contains__"} <= set(cached)
    assert all(m.cache_info().maxsize <= REGION_CACHE_SIZE for m in cached.values())
    for i in range(5 * REGION_CACHE_SIZE):  # what an hour of a scrolling panel does: Regions never seen before
        Region(i, 0, 80, 1000 + i).intersection(Region(0, i % 24, 80, 24))
    assert Region.intersection.cache_info().currsize <= REGION_CACHE_SIZE
    for i in range(50):
        a, b = Region(i, i % 7, 80, 30 + i), Region(3, i % 5, 40 + i, 24)
        assert expected[i] == (a.intersection(b), a.union(b), a.grow(Spacing(1, 2, 3, 4)),
                               a.shrink(Spacing(1, 1, 1, 1)), a.overlaps(b), b in a)
    assert bound_textual_caches() == []  # a second app: nothing left to re-wrap


def test_the_app_bounds_the_style_cache_and_the_escape_codes_are_unchanged():
    from charrnn_tui.tui.app import CharRNNApp

    unbounded = vars(Strip)["render_ansi"].__func__.__wrapped__
    CharRNNApp(autostart=False)
    cache = vars(Strip)["render_ansi"].__func__
    assert cache.cache_info().maxsize == STYLE_CACHE_SIZE
    for i in range(4 * STYLE_CACHE_SIZE):  # hours of samples: styles never seen before
        style = offset_style(i)
        for system in (ColorSystem.TRUECOLOR, ColorSystem.EIGHT_BIT):
            assert Strip.render_ansi(style, system) == unbounded(Strip, offset_style(i), system)
    assert cache.cache_info().currsize <= STYLE_CACHE_SIZE
    rendered = Strip.render_style(offset_style(3), "x", ColorSystem.TRUECOLOR)
    assert rendered == "\x1b[1;38;2;224;224;224;48;2;18;18;18mx\x1b[0m"
