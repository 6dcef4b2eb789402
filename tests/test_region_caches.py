"""Textual's Region caches are bounded small in the app (tui/region_caches.py), and still right."""

from __future__ import annotations

from textual.geometry import Region, Spacing

from charrnn_tui.tui.region_caches import REGION_CACHE_SIZE, bound_region_caches


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
    assert bound_region_caches() == []  # a second app: nothing left to re-wrap
