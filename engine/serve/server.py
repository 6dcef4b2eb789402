"""The run's server: a Unix socket in the run folder through which any number of clients watch and
steer the one engine that owns the run, as kernels serve their notebook clients.

The training loop never waits for a client. Events are encoded once and put on each client's
bounded queue, which a thread per client writes out; a client that falls CLIENT_QUEUE messages
behind (or takes SEND_TIMEOUT over one write) is disconnected and may attach again. Another
thread per client reads its requests, checks them against engine/protocol.py and hands them to
the trainer's request queue, which the loop serves between steps. Nothing a client sends can do
more than get it an error message or disconnected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from charrnn_tui.engine import events as ev
from charrnn_tui.engine import protocol
from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.run_state import RunState, Sample
from charrnn_tui.engine.runs import SOCKET, unix_address, write_status

CLIENT_QUEUE = 4096  # messages waiting for one client
SEND_TIMEOUT = 10.0  # seconds one write to a client may block its writer thread
HELLO_TIMEOUT = 10.0  # a client that says nothing this long after connecting is dropped
MAX_CLIENTS = 64  # connections served at once, welcomed or not (RunServer.max_clients)
BUSY = "too many connections"  # what one more is told (protocol.busy) before it is closed
REQUESTS_PER_SECOND = 20.0  # per client, on average; a key held down repeats at about 30/s
REQUEST_BURST = 40
MAX_SAMPLES = 20  # finished samples a newly attached viewer is shown
MAX_IN_FLIGHT = 4  # and samples under way (one that failed half-way never finishes)
STATUS_INTERVAL = 5.0  # seconds between status.json rewrites while training
VIEWER_PROGRESS = 1.0  # seconds between progress events to clients (the app redraws once a second)
# What a client's writer sends: a message encoded already, or its welcome ("welcome", the run's name,
# the events that bring it up to date), which the writer encodes.
Outgoing = bytes | tuple[str, str | None, list[ev.Event]]


class ServedRun(Protocol):
    """What the server needs of the run it serves (engine/run/trainer.py's Trainer): a way to hand it
    a client's request, with how to answer that client alone, and a way to tell every client something."""

    def request(self, request: protocol.Request, reply: Callable[[ev.Notice], None] | None = None) -> None: ...

    def emit(self, event: ev.Event) -> None: ...


class RunRecord(RunState):
    """The run as a client that had watched from the start would know it (engine/run_state.py's
    fold, in bounded memory), so that a client attaching after 100,000 steps gets it in one
    message, and status.json says where it is."""

    def snapshot(self) -> list[ev.Event]:
        """Events that bring a new client's fold to where this one is now."""
        if self.info is None:
            return [ev.StateChanged(self.state, self.reason)]
        history = {**self.history.to_dict(), "timeline": [list(p) for p in self.timeline]}
        events: list[ev.Event] = [ev.Started(self.info, history, tuple(self.val_losses), (),
                                             self.reports.to_dict())]
        samples = list(self.samples.values())
        # one viewer's comparison of temperatures is not replayed to the others
        for sample in [s for s in samples if s.done and s.source != "temperatures"][-MAX_SAMPLES:]:
            events += _sample_events(sample)
        if self.evaluated is not None:
            events.append(self.evaluated)
        if self.progress is not None:
            utilisation, used, total = self.gpu or (None, None, None)
            events.append(dataclasses.replace(self.progress, losses=(), first_step=self.progress.step + 1,
                                              gpu_utilisation=utilisation, gpu_memory_used=used,
                                              gpu_memory_total=total))
        if self.saved_path and self.saved_at is not None:  # a save since the run (re)started
            events.append(ev.CheckpointSaved(self.saved_path, self.saved_step, "latest", self.saved_at))
        if self.validating is not None:
            events.append(self.validating)
        events.append(ev.SettingsChanged(self.temperature, self.early_stop))
        for sample in [s for s in samples if not s.done][-MAX_IN_FLIGHT:]:
            events += _sample_events(sample)
        events.append(ev.StateChanged(self.state, self.reason))
        return events

    def status(self) -> dict[str, Any]:
        info = self.info
        about = info.status_fields() if info else {
            "name": None, "corpus": None, "model": None, "tokens": None, "world_size": 1, "device": None}
        return {
            **about, "state": self.state, "reason": self.reason,
            "step": self.step,
            "best_val": self.best_val, "pid": os.getpid(), "updated": time.time(),
            # when its first checkpoint comes, for `sample RUN` asked before it (runs.no_checkpoint_message)
            "checkpoint_interval": info.config.get("checkpoint_interval") if info else None,
            "max_steps": info.max_steps if info else None,
        }


class RunServer:
    """Owns the socket and the clients of one run; `handle_event` is the trainer's event sink."""

    def __init__(self, trainer: ServedRun, on_listening: Callable[[Path], None] | None = None, *, required: bool = True,
                 max_clients: int | None = None):
        """`required`: a run nobody could reach without its socket (a detached one) fails when the
        socket cannot be made; a foreground run trains on without it, warning once. `max_clients`:
        connections served at once (MAX_CLIENTS unless given); one more is told so and closed."""
        self.trainer = trainer
        self.required = required
        self.max_clients = MAX_CLIENTS if max_clients is None else max_clients
        self.record = RunRecord()
        self.on_listening = on_listening
        # Guards the record and the set of clients, which change together. Never held while
        # waiting for anything: no socket I/O, no blocking queue operation, no other lock.
        self.lock = threading.Lock()
        self.status_lock = threading.Lock()  # one status.json writer at a time
        self.clients: set[_Client] = set()  # welcomed, receiving events
        self.connections = 0  # every connection being served, welcomed or not
        self.run_dir: Path | None = None
        self.listener: socket.socket | None = None
        self.socket_inode = -1
        self.closed = False
        self.status_written = 0.0
        self.held_progress: ev.Progress | None = None  # progress not yet sent to clients
        self.progress_sent = -VIEWER_PROGRESS

    @property
    def viewers(self) -> int:
        return sum(1 for c in self.clients if c.viewer)

    # ---- events, from the training thread ---------------------------------------------------
    def handle_event(self, event: ev.Event) -> None:
        with self.lock:
            self.record.apply(event)
            clients = list(self.clients)
        for outgoing in self._coalesced(event):
            if clients:
                try:
                    data = protocol.encode(protocol.event_message(outgoing))
                except (TypeError, ValueError) as e:  # an event that cannot go on the wire must not end the run
                    print(f"not sent to clients: {type(outgoing).__name__} ({e})", file=sys.stderr)
                    continue
                for client in clients:
                    client.send(data)
        if isinstance(event, ev.Started) and self.listener is None and not self.closed:
            try:
                self.listen(Path(event.info.run_dir))
            except OSError as e:
                self.closed = True
                message = f"cannot serve run {Path(event.info.run_dir).name} ({e.strerror or e})"
                if self.required:
                    raise CharRNNError(message) from None
                self.trainer.emit(ev.Notice(f"{message}: training goes on, but nothing can attach to it", "warning"))
        now = time.monotonic()
        frequent = (ev.Progress, ev.SampleText, ev.NextTokens)  # status.json is rewritten for these now and then
        if not isinstance(event, frequent) or now - self.status_written > STATUS_INTERVAL:
            self.write_status()

    def _coalesced(self, event: ev.Event) -> list[ev.Event]:
        """What to send clients for `event`: progress at most every VIEWER_PROGRESS seconds, the
        reports in between merged into one (their losses joined), and any other event at once,
        after the progress held back before it, so that order is kept."""
        now = time.monotonic()
        if isinstance(event, ev.Progress):
            held = self.held_progress
            if held is not None:
                event = dataclasses.replace(event, first_step=held.first_step, losses=held.losses + event.losses)
            if now - self.progress_sent < VIEWER_PROGRESS:
                self.held_progress = event
                return []
            self.held_progress, self.progress_sent = None, now
            return [event]
        held, self.held_progress = self.held_progress, None
        return [held, event] if held is not None else [event]

    def write_status(self) -> None:
        if self.run_dir is None:
            return
        with self.status_lock:
            self.status_written = time.monotonic()
            with self.lock:
                status = {**self.record.status(), "viewers": self.viewers}
            write_status(self.run_dir, status)

    # ---- the socket -----------------------------------------------------------------------------
    def listen(self, run_dir: Path) -> None:
        """Bind the run's socket (user-only) and start accepting; a socket file left by a killed
        engine is stale (we hold the run's lock), so it is replaced."""
        self.run_dir = run_dir
        path = run_dir / SOCKET
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)  # the file is created user-only, not chmod-ed after a gap
        try:
            with unix_address(path) as address:
                listener.bind(address)
        finally:
            os.umask(old_umask)
        listener.listen(128)
        self.listener = listener
        self.socket_inode = os.stat(path).st_ino
        threading.Thread(target=self._accept_loop, args=(listener,), name="server-accept", daemon=True).start()
        self.write_status()
        if self.on_listening is not None:
            self.on_listening(run_dir)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self.closed:
            try:
                conn, _ = listener.accept()
            except OSError:
                if self.closed:
                    return
                time.sleep(0.1)  # out of file descriptors, say: wait and go on accepting
                continue
            with self.lock:
                full = self.connections >= self.max_clients
                if not full:
                    self.connections += 1
            if full:
                _turn_away(conn)
                continue
            if not _same_user(conn):
                self._connection_ended()
                conn.close()
                continue
            try:
                _Client(self, conn).start()
            except RuntimeError:  # no thread to serve it: refuse this one, keep accepting
                self._connection_ended()
                conn.close()

    def _connection_ended(self) -> None:
        with self.lock:
            self.connections -= 1

    def close(self, final_state: str | None = None) -> None:
        """Stop listening, tell every client the run has ended, and remove the socket."""
        self.closed = True
        if self.listener is not None and self.run_dir is not None:  # listen() sets both
            with contextlib.suppress(OSError):
                self.listener.close()
            # Ours only: once the run's lock is released, a resumed engine may have bound a new one.
            path = self.run_dir / SOCKET
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == self.socket_inode:
                    path.unlink()
        with self.lock:
            clients = list(self.clients)
            self.clients.clear()
        for client in clients:
            client.finish()
        for client in clients:
            client.join(timeout=2.0)
        self.write_status()

    # ---- from client threads ------------------------------------------------------------------
    def add(self, client: _Client) -> bool:
        """Welcome a client with the run so far, then every event from here on, in order. The
        snapshot is taken under the lock; its writer thread encodes it, outside."""
        with self.lock:
            if self.closed:
                return False
            client.send(("welcome", self.run_dir.name if self.run_dir else None, self.record.snapshot()))
            self.clients.add(client)
        if client.viewer:
            self.write_status()
        return True

    def remove(self, client: _Client) -> None:
        with self.lock:
            was_there = client in self.clients
            self.clients.discard(client)
        if was_there and client.viewer and not self.closed:
            self.write_status()

    def apply_request(self, client: _Client, request: protocol.Request) -> None:
        """Carry out a checked request; one the run refuses (out of range, busy) is answered to its
        sender only, and so is what the loop has to say about it later (it failed, a temperature was
        raised to the lowest): a Notice event to that client alone. Status is answered here."""

        def reply(notice: ev.Notice) -> None:
            client.send(protocol.encode(protocol.event_message(notice)))

        try:
            if isinstance(request, protocol.Status):
                with self.lock:
                    status = {**self.record.status(), "viewers": self.viewers}
                client.send(protocol.encode({"type": "status", "status": status}))
            else:
                self.trainer.request(request, reply=reply)
        except protocol.RequestRefused as e:
            client.send(protocol.encode({"type": "error", "message": str(e)}))
        except Exception as e:  # a bug here costs this request, not the client's connection or the run
            message = f"{request.name} failed: {type(e).__name__}: {e}"
            client.send(protocol.encode({"type": "error", "message": message}))


class _Client:
    def __init__(self, server: RunServer, conn: socket.socket):
        self.server, self.conn = server, conn
        self.queue: queue.Queue[Outgoing | None] = queue.Queue(maxsize=CLIENT_QUEUE)  # None: the end
        self.viewer = False
        self.gone = threading.Event()
        self.requests = _RateLimit(REQUESTS_PER_SECOND, REQUEST_BURST)
        self.writer = threading.Thread(target=self._write_loop, name="server-write", daemon=True)
        self.reader = threading.Thread(target=self._read_loop, name="server-read", daemon=True)
        self._ended = threading.Lock()
        self._threads_left = 2

    def start(self) -> None:
        self.conn.settimeout(SEND_TIMEOUT)
        self.writer.start()
        try:
            self.reader.start()
        except RuntimeError:
            self._abandon()  # the writer ends and counts itself out
            self._thread_ended()
            raise

    def send(self, data: Outgoing) -> None:
        """Queue a message; never blocks and takes no lock. A client this far behind is abandoned
        (its writer then removes it), not waited for."""
        if self.gone.is_set():
            return
        try:
            self.queue.put_nowait(data)
        except queue.Full:
            self._abandon()

    def finish(self) -> None:
        """Send what is queued, then close (the run has ended)."""
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            self._abandon()

    def _abandon(self) -> None:
        """Stop serving this client: its threads see it and end. Safe under the server's lock."""
        self.gone.set()
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)  # wake the writer if it waits for a message

    def join(self, timeout: float) -> None:
        self.writer.join(timeout)

    def _thread_ended(self) -> None:
        with self._ended:
            self._threads_left -= 1
            last = self._threads_left == 0
        if last:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.server._connection_ended()

    def _write_loop(self) -> None:
        try:
            while True:
                item = self.queue.get()
                if item is None or self.gone.is_set():
                    break
                if isinstance(item, tuple):  # the welcome: encoded here, not under the server's lock
                    _, run, events = item
                    item = protocol.encode({"type": "welcome", "version": protocol.VERSION, "run": run,
                                            "events": [protocol.event_to_dict(e) for e in events]})
                self.conn.sendall(item)
        except OSError:  # the client went away, or stopped reading for SEND_TIMEOUT
            pass
        finally:
            self._abandon()
            self.server.remove(self)
            self._thread_ended()

    def _read_loop(self) -> None:
        buffer = bytearray()
        greeted = False
        deadline = time.monotonic() + HELLO_TIMEOUT
        try:
            while not self.gone.is_set():
                if not greeted and time.monotonic() > deadline:
                    self._refuse("no hello in time")
                    return
                try:
                    chunk = self.conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if not line.strip():
                        continue
                    if not greeted:
                        if not self._greet(line):
                            return
                        greeted = True
                    elif not self._handle(line):
                        return
                if len(buffer) > protocol.MAX_LINE:
                    self._refuse(f"message longer than {protocol.MAX_LINE:,} bytes")
                    return
        except OSError:
            return
        finally:
            self._abandon()
            self.server.remove(self)
            self._thread_ended()

    def _greet(self, line: bytes) -> bool:
        try:
            message = protocol.decode(line)
            protocol.check_hello(message)
        except protocol.ProtocolError as e:
            self._refuse(str(e))
            return False
        self.viewer = message.get("client") == "viewer"
        if not self.server.add(self):
            self._refuse("the run has ended")
            return False
        return True

    def _handle(self, line: bytes) -> bool:
        """Act on one line from a welcomed client; False to disconnect it."""
        if not self.requests.allow():
            if self.requests.refused == 1:  # once per burst, not once per request
                self.send(protocol.encode({"type": "error", "message": "too many requests: slow down"}))
            return True
        try:
            request = protocol.parse_request(protocol.decode(line))
        except protocol.ProtocolError as e:
            self.send(protocol.encode({"type": "error", "message": str(e)}))
            return True
        self.server.apply_request(self, request)
        return True

    def _refuse(self, message: str) -> None:
        with contextlib.suppress(OSError):
            self.conn.sendall(protocol.encode({"type": "error", "message": message}))


class _RateLimit:
    """A token bucket: `rate` requests a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.at = time.monotonic()
        self.refused = 0  # in a row

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused = 0
            return True
        self.refused += 1
        return False


def _turn_away(conn: socket.socket) -> None:
    """Tell a connection the server is full, in one line, and close it. Never blocks the accept
    loop: the line goes into the new socket's empty buffer or not at all. Data the client sends
    meanwhile (its hello) is dropped with the socket; what was sent to it stays readable there."""
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(protocol.encode(protocol.busy(BUSY)))
    with contextlib.suppress(OSError):
        conn.close()


def _same_user(conn: socket.socket) -> bool:
    """Defence in depth beside the user-only folder and socket: Linux names the peer's user."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    with contextlib.suppress(OSError):
        _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return uid == os.getuid()
    return False


def _sample_events(sample: Sample) -> list[ev.Event]:
    """A sample as the events that tell it: its start, then its whole text, or the text so far."""
    started = ev.SampleStarted(sample.sample_id, sample.step, sample.prompt, sample.temperature, sample.source,
                               sample.notes)
    if sample.done:
        return [started, ev.SampleFinished(sample.sample_id, sample.text, sample.probs, sample.token_lengths,
                                           sample.longest_copy, sample.copies)]
    return [started, ev.SampleText(sample.sample_id, sample.text, sample.probs, sample.token_lengths)]
