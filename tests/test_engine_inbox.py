"""The app's inbox for engine events: in order, one wake-up per batch, and bounded: a reader
thread that gets too far ahead waits (so the run's server drops the slow viewer, which attaches
again), and gives up when the app closes."""

from __future__ import annotations

import threading

from charrnn_tui.tui.engine_inbox import CONNECTED, EngineInbox


def reader_waits(inbox: EngineInbox) -> threading.Event:
    """Set once a reader waits for room in the full inbox: proof that it got that far, not a guess."""
    waiting, room_wait = threading.Event(), inbox._room.wait

    def wait(timeout=None):
        waiting.set()
        return room_wait(timeout)

    inbox._room.wait = wait
    return waiting


def test_events_come_out_in_order_with_one_wake_up_per_batch():
    wakes = []
    inbox = EngineInbox(lambda: wakes.append(1))
    for item in (CONNECTED, "a", "b"):
        inbox.put(item)
    assert len(wakes) == 1 and inbox.drain() == [CONNECTED, "a", "b"] and len(inbox) == 0
    inbox.put("c")
    assert len(wakes) == 2 and inbox.drain() == ["c"]


def test_a_full_inbox_holds_the_reader_until_the_app_drains_it():
    inbox = EngineInbox(lambda: None, limit=3)
    for item in "abc":
        inbox.put(item)
    done, waiting = threading.Event(), reader_waits(inbox)
    reader = threading.Thread(target=lambda: (inbox.put("d"), done.set()), daemon=True)
    reader.start()
    assert waiting.wait(5)
    assert not done.is_set() and len(inbox) == 3  # never more than the limit waits in memory
    assert inbox.drain() == ["a", "b", "c"]
    assert done.wait(5) and inbox.drain() == ["d"]


def test_closing_releases_a_waiting_reader_and_takes_nothing_more():
    inbox = EngineInbox(lambda: None, limit=1)
    inbox.put("a")
    waiting = reader_waits(inbox)
    reader = threading.Thread(target=inbox.put, args=("b",), daemon=True)
    reader.start()
    assert waiting.wait(5)
    inbox.close()
    reader.join(5)
    assert not reader.is_alive()
    inbox.put("c")
    assert inbox.drain() == []
