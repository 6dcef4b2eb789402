"""Engine events on their way from the client's reader thread to the app, in bounded room.

Posting one Textual message per event would let an app that falls behind (a busy terminal, a
starved CPU) queue events without limit while its reader thread kept draining the socket. Here the
reader waits when MAX_WAITING events are waiting; the socket then fills, the run's server drops
this slow viewer as it drops any, and the app attaches again with the whole story in its welcome.
The app is woken by one message per batch, not one per event.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

MAX_WAITING = 5_000  # events; a second or two of a GPU run's reports, minutes on a CPU
CONNECTED = object()  # a new connection: what follows is the run's whole story again


class EngineInbox:
    def __init__(self, wake: Callable[[], object], limit: int = MAX_WAITING):
        self.wake, self.limit = wake, limit
        self._items: deque[Any] = deque()
        self._room = threading.Condition()
        self.closed = False

    def put(self, item: Any) -> None:
        """From the reader thread: queue an event (or CONNECTED), waiting while the inbox is full."""
        with self._room:
            while len(self._items) >= self.limit and not self.closed:
                self._room.wait(timeout=0.5)
            if self.closed:
                return
            self._items.append(item)
            first = len(self._items) == 1
        if first:  # one wake-up for everything that arrives before the app drains
            self.wake()

    def drain(self) -> list[Any]:
        """From the app: everything waiting, oldest first."""
        with self._room:
            items = list(self._items)
            self._items.clear()
            self._room.notify_all()
        return items

    def close(self) -> None:
        """The app is going: a waiting reader gives up its event and returns."""
        with self._room:
            self.closed = True
            self._items.clear()
            self._room.notify_all()

    def __len__(self) -> int:
        return len(self._items)
