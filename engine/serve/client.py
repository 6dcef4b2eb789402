"""A client of a run's server (engine/serve/server.py): the app's way to a run, and `stop`'s and `runs`'.

It has the trainer's request methods (pause, save_now, prompt...), so the app drives a run the same
way whether it started it or attached to it. No torch here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charrnn_tui.engine import events as ev
from charrnn_tui.engine import protocol
from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.printable import printable_line
from charrnn_tui.engine.run_state import RunState
from charrnn_tui.engine.runs import SOCKET, is_live, read_status, run_hint, unix_address

EventSink = Callable[[ev.Event], None]
SERVER_LINE_LIMIT = 64 << 20  # the welcome carries the run's history: larger than any request


class RunNotLive(CharRNNError):
    """The run has no engine to connect to (finished, stopped, or killed)."""


class EngineClient:
    def __init__(self, run_dir: Path, on_event: EventSink | None = None, *, viewer: bool = True):
        self.run_dir = Path(run_dir)
        self.on_event = on_event or (lambda event: None)
        self.viewer = viewer
        self.sock: socket.socket | None = None
        self.run_state = RunState()  # the run as its events tell it, read through state, step... below
        self._buffer = bytearray()
        self._send_lock = threading.Lock()
        self._detached = False

    # ---- the run, as a Trainer's attributes say it ----------------------------------------------
    @property
    def state(self) -> str:
        return self.run_state.state

    @state.setter
    def state(self, state: str) -> None:  # "detached": the connection dropped, the run did not end
        self.run_state.state = state

    @property
    def error(self) -> str:
        return self.run_state.error

    @property
    def step(self) -> int:
        return self.run_state.step

    @property
    def temperature(self) -> float:
        return self.run_state.temperature

    @property
    def early_stop(self) -> int | None:
        return self.run_state.early_stop

    # ---- connecting -----------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> list[ev.Event]:
        """Connect and say hello; returns the events that bring a view up to date (not yet handed to
        on_event: `run` does that first)."""
        path = self.run_dir / SOCKET
        name = printable_line(self.run_dir.name)
        if not path.exists() or not is_live(self.run_dir):
            raise RunNotLive(self._not_live_message())
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            with unix_address(path) as address:
                sock.connect(address)
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            if is_live(self.run_dir):  # its engine holds the run but has not bound the socket yet
                raise CharRNNError(f"run {name} is starting; try again in a moment") from None
            raise RunNotLive(self._not_live_message()) from None
        except OSError as e:
            sock.close()
            raise CharRNNError(f"cannot connect to run {name}: {printable_line(str(e.strerror or e))}") from None
        # The server checks that its clients are this user; a client checks the server too before
        # it sends a prompt or believes an answer: a socket file in a folder others can write to may
        # be anyone's (the run's lock says some process holds the run, not whose it is).
        try:
            uid = peer_uid(sock)
        except OSError as e:
            sock.close()
            raise CharRNNError(f"cannot tell who serves run {name}'s socket ({e.strerror or e}): "
                               "refusing to talk to it") from None
        if uid is not None and uid != os.getuid():
            sock.close()
            raise CharRNNError(f"run {name}'s socket is served by uid {uid}, not you: refusing to talk to it")
        self.sock = sock
        self._buffer.clear()
        hello = {**protocol.hello(), "client": "viewer" if self.viewer else "control"}
        try:
            with contextlib.suppress(OSError):  # a full server may have closed already: its one line waits to be read
                self._send(hello)
            welcome = self._read_message()
        except protocol.ProtocolError as e:
            self.close()
            raise CharRNNError(f"run {name}: {e}") from None
        except TimeoutError:
            self.close()
            raise CharRNNError(f"run {name} did not answer within {timeout:g} s; try again") from None
        except OSError:  # reset before the hello was taken: as closed without a word, below
            welcome = None
        if welcome is None:
            self.close()
            # A full server (MAX_CLIENTS) says so in one line and closes (an older one said
            # nothing): a live run that hangs up before its welcome is busy, not crashed.
            if is_live(self.run_dir):
                raise CharRNNError(f"run {name} is busy (too many connections); try again")
            raise RunNotLive(self._not_live_message())
        if welcome.get("type") == "error" and welcome.get("busy") is True:
            self.close()
            raise CharRNNError(f"run {name} is busy ({printable_line(str(welcome.get('message')))[:200]}); try again")
        if welcome.get("type") == "error":
            self.close()
            raise CharRNNError(f"run {name}: {printable_line(str(welcome.get('message')))[:200]}")
        if welcome.get("type") != "welcome":
            self.close()
            raise CharRNNError(f"run {name}: unexpected answer {printable_line(str(welcome.get('type')))[:40]!r}")
        sock.settimeout(None)
        events = welcome.get("events")
        self.welcome_events: list[ev.Event] = []
        bad: list[protocol.BadEvent] = []
        for data in events if isinstance(events, list) else []:
            event = _event_or_none(data, bad)
            if event is not None:
                self.welcome_events.append(event)
        for event in self.welcome_events:
            self.run_state.apply(event)
        if bad:
            self.welcome_events.append(self._bad_event_notice(bad[0], len(bad)))
        return self.welcome_events

    def _bad_event_notice(self, error: protocol.BadEvent, count: int = 1) -> ev.Notice:
        """What the viewer is told of events from the run that were dropped (a broken server's)."""
        more = f" ({count:,} such events in its welcome)" if count > 1 else ""
        return ev.Notice(f"run {printable_line(self.run_dir.name)} sent a malformed event, ignored{more}: "
                         f"{printable_line(str(error))[:200]}", "warning")

    def _not_live_message(self) -> str:
        state = read_status(self.run_dir).get("state")
        name = printable_line(self.run_dir.name)
        if state in ("training", "paused", "starting") or (self.run_dir / SOCKET).exists():
            return (f"run {name} crashed (its engine is gone); "
                    f"`{run_hint('train --resume', self.run_dir)}` continues it from its last checkpoint")
        state = printable_line(str(state))[:40] if state else "stopped"  # status.json's, whatever it holds
        return (f"run {name} is not running ({state}); "
                f"`{run_hint('train --resume', self.run_dir)}` continues it")

    # ---- requests: any thread, the same names as the trainer's --------------------------------
    def request(self, request: protocol.Request) -> None:
        """Send a request (engine/protocol.py defines them). The run answers through events, and an
        `error` message or a Notice to this client alone where it refuses or fails."""
        with contextlib.suppress(OSError):  # the run may have ended a moment ago; `run` reports how it ended
            self._send(protocol.request_message(request))

    def detach(self) -> None:
        """Leave the run training; `run` returns."""
        self._detached = True
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    # ---- events --------------------------------------------------------------------------------
    def run(self) -> str:
        """Hand every event to on_event until the run ends or we detach; the run's last state."""
        if self.sock is None:
            self.connect()
        for event in self.welcome_events:
            self.on_event(event)
        told_bad = False
        try:
            while True:
                message = self._read_message()
                if message is None:
                    break
                kind = message.get("type")
                if kind == "event":
                    try:
                        event = protocol.event_from_dict(message.get("event"))
                    except protocol.BadEvent as e:  # a broken server's: dropped, and said once
                        if not told_bad:
                            told_bad = True
                            self.on_event(self._bad_event_notice(e))
                        continue
                    except protocol.ProtocolError:
                        continue  # an event this client does not know (a newer server's): skip it
                    self.run_state.apply(event)
                    self.on_event(event)
                elif kind == "error":
                    self.on_event(ev.Notice(f"the run refused a request: {message.get('message')}", "warning"))
        except OSError:
            pass
        except protocol.ProtocolError as e:  # a line over the limit, or not JSON: this server is broken
            self.on_event(ev.Notice(f"run {self.run_dir.name}: {e}", "error"))
        finally:
            self.close()
        if self._detached:
            return "detached"
        if self.state in ("training", "paused", "starting"):  # the connection dropped, the run did not end
            self.state = "detached"
        return self.state

    def status(self) -> dict[str, Any]:
        """The run's status now (state, step, best validation loss, viewers...)."""
        try:
            self._send(protocol.request_message(protocol.Status()))
            while True:
                message = self._read_message()
                if message is None:
                    raise RunNotLive(self._not_live_message())
                if message.get("type") == "status":
                    status = message.get("status")
                    return dict(status) if isinstance(status, dict) else {}
        except protocol.ProtocolError as e:
            raise CharRNNError(f"run {printable_line(self.run_dir.name)}: {e}") from None
        except OSError:  # the run ended a moment ago
            raise RunNotLive(self._not_live_message()) from None

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def _send(self, message: dict[str, Any]) -> None:
        if self.sock is None:
            raise OSError("not connected")
        with self._send_lock:
            self.sock.sendall(protocol.encode(message))

    def _read_message(self) -> dict[str, Any] | None:
        """The next message, or None when the server has closed the connection. A line longer than
        SERVER_LINE_LIMIT is a ProtocolError, told once the buffer holds that much without a newline
        (not once the newline comes, which a broken or hostile server may never send), and closes
        the connection."""
        searched = 0
        while (end := self._buffer.find(b"\n", searched)) < 0:
            searched = len(self._buffer)
            if searched > SERVER_LINE_LIMIT:
                self._buffer.clear()
                self.close()
                raise protocol.ProtocolError(f"the run's engine sent a message longer than {SERVER_LINE_LIMIT:,} "
                                             "bytes; disconnected")
            sock = self.sock
            if sock is None:
                return None
            try:
                chunk = sock.recv(1 << 16)
            except TimeoutError:
                raise  # only while connecting (there is no timeout after): a slow run, not a closed one
            except OSError:
                return None
            if not chunk:
                return None
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return protocol.decode(line, limit=SERVER_LINE_LIMIT)


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a connected Unix socket (struct ucred: pid, uid,
    gid), or None where the system does not say: SO_PEERCRED is Linux's; elsewhere the user-only
    run folder is the guard. OSError if the system fails to say."""
    if not hasattr(socket, "SO_PEERCRED"):  # the BSDs and macOS have LOCAL_PEERCRED, in another layout
        return None
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


def _event_or_none(data: Any, bad: list[protocol.BadEvent]) -> ev.Event | None:
    """An event of a welcome, or None for one this client cannot read (a newer server's, or garbage:
    added to `bad` when of a known class)."""
    try:
        return protocol.event_from_dict(data)
    except protocol.BadEvent as e:
        bad.append(e)
    except (protocol.ProtocolError, TypeError, ValueError):
        pass
    return None
