"""A client of a run's server (engine/server.py): the app's way to a run, and `stop`'s and `runs`'.

It has the trainer's request methods (pause, save_now, prompt...), so the app drives a run the same
way whether it started it or attached to it. No torch here.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import events as ev
from . import protocol
from .errors import CharRNNError
from .runs import SOCKET, is_live, read_status, run_hint, unix_address

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
        self.state = "starting"
        self.error = ""
        self.step = 0
        self.temperature: float | None = None
        self.early_stop: int | None = None
        self._buffer = bytearray()
        self._send_lock = threading.Lock()
        self._detached = False

    # ---- connecting -----------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> list[ev.Event]:
        """Connect and say hello; returns the events that bring a view up to date (not yet handed to
        on_event: `run` does that first)."""
        path = self.run_dir / SOCKET
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
                raise CharRNNError(f"run {self.run_dir.name} is starting; try again in a moment") from None
            raise RunNotLive(self._not_live_message()) from None
        except OSError as e:
            sock.close()
            raise CharRNNError(f"cannot connect to run {self.run_dir.name}: {e.strerror or e}") from None
        self.sock = sock
        hello = {**protocol.hello(), "client": "viewer" if self.viewer else "control"}
        self._send(hello)
        welcome = self._read_message()
        if welcome is None:
            raise RunNotLive(self._not_live_message())
        if welcome.get("type") == "error":
            raise CharRNNError(f"run {self.run_dir.name}: {welcome.get('message')}")
        if welcome.get("type") != "welcome":
            raise CharRNNError(f"run {self.run_dir.name}: unexpected answer {welcome.get('type')!r}")
        sock.settimeout(None)
        self.welcome_events = [protocol.event_from_dict(e) for e in welcome.get("events", [])]
        for event in self.welcome_events:
            self._mirror(event)
        return self.welcome_events

    def _not_live_message(self) -> str:
        state = read_status(self.run_dir).get("state")
        if state in ("training", "paused", "starting") or (self.run_dir / SOCKET).exists():
            return (f"run {self.run_dir.name} crashed (its engine is gone); "
                    f"`{run_hint('train --resume', self.run_dir)}` continues it from its last checkpoint")
        return (f"run {self.run_dir.name} is not running ({state or 'stopped'}); "
                f"`{run_hint('train --resume', self.run_dir)}` continues it")

    # ---- requests: any thread, the same names as the trainer's --------------------------------
    def pause(self) -> None:
        self.request("pause")

    def resume(self) -> None:
        self.request("resume")

    def toggle_pause(self) -> None:
        self.request("toggle_pause")

    def stop(self, save: bool = True, unattended: bool = False) -> None:
        self.request("stop", save=save)

    def save_now(self) -> None:
        self.request("save_now")

    def sample_now(self) -> None:
        self.request("sample_now")

    def evaluate_now(self) -> None:
        self.request("evaluate_now")

    def set_temperature(self, temperature: float) -> None:
        self.request("set_temperature", temperature=float(temperature))

    def next_tokens(self, text: str, top: int | None = None) -> None:
        self.request("next_tokens", text=text, top=top)

    def set_early_stop(self, evaluations: int | None) -> None:
        self.request("set_early_stop", evaluations=evaluations)

    def prompt(self, text: str, length: int | None = None, temperature: float | None = None) -> None:
        self.request("prompt", text=text, length=length, temperature=temperature)

    def request(self, name: str, **args: Any) -> None:
        # Arguments that are None are left out: the server takes them as None, and a run started by
        # an earlier version, which may not know a newer optional argument, still takes the request.
        given = {k: v for k, v in args.items() if v is not None}
        with contextlib.suppress(OSError):  # the run may have ended a moment ago; `run` reports how it ended
            self._send(protocol.request(name, **given))

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
        try:
            while True:
                message = self._read_message()
                if message is None:
                    break
                kind = message.get("type")
                if kind == "event":
                    try:
                        event = protocol.event_from_dict(message.get("event"))
                    except protocol.ProtocolError:
                        continue  # an event this client does not know (a newer server's): skip it
                    self._mirror(event)
                    self.on_event(event)
                elif kind == "error":
                    self.on_event(ev.Notice(f"the run refused a request: {message.get('message')}", "warning"))
        except (OSError, protocol.ProtocolError):
            pass
        finally:
            self.close()
        if self._detached:
            return "detached"
        if self.state in ("training", "paused", "starting"):  # the connection dropped, the run did not end
            self.state = "detached"
        return self.state

    def status(self) -> dict[str, Any]:
        """The run's status now (state, step, best validation loss, viewers...)."""
        self._send(protocol.request("status"))
        while True:
            message = self._read_message()
            if message is None:
                raise RunNotLive(self._not_live_message())
            if message.get("type") == "status":
                return dict(message.get("status") or {})

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def _mirror(self, event: ev.Event) -> None:
        """The few fields callers read, as they would on a Trainer."""
        if isinstance(event, ev.StateChanged):
            self.state = event.state
            if event.state == "error":
                self.error = event.reason
        elif isinstance(event, ev.Progress):
            self.step = event.step
        elif isinstance(event, ev.Started):
            self.step = event.info.resumed_step
            self.temperature = float(event.info.config.get("temperature", 0.8))
            self.early_stop = event.info.config.get("early_stop")
        elif isinstance(event, ev.SettingsChanged):
            self.temperature, self.early_stop = event.temperature, event.early_stop

    def _send(self, message: dict[str, Any]) -> None:
        if self.sock is None:
            raise OSError("not connected")
        with self._send_lock:
            self.sock.sendall(protocol.encode(message))

    def _read_message(self) -> dict[str, Any] | None:
        """The next message, or None when the server has closed the connection."""
        searched = 0
        while (end := self._buffer.find(b"\n", searched)) < 0:
            searched = len(self._buffer)
            sock = self.sock
            if sock is None:
                return None
            try:
                chunk = sock.recv(1 << 16)
            except OSError:
                return None
            if not chunk:
                return None
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return protocol.decode(line, limit=SERVER_LINE_LIMIT)
