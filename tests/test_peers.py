"""A client trusts no server it has not checked (engine/serve/client.py): the server must be this user's,
a line from it is bounded while it is read, and a server too full to welcome it is told apart from
a run that has ended."""

from __future__ import annotations

import argparse
import io
import os
import socket
import threading
import tracemalloc
from collections.abc import Callable

import pytest
from helpers import LocalRun, fake_engine, tiny_config

from charrnn_tui.engine import events as ev
from charrnn_tui.engine import protocol
from charrnn_tui.engine.cli.run_commands import run_stop
from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.runs import SOCKET, RunLock, unix_address
from charrnn_tui.engine.serve import client as client_module
from charrnn_tui.engine.serve import server
from charrnn_tui.engine.serve.client import EngineClient, RunNotLive

ENDLESS_CAP = 16 << 20  # bytes the endless server sends at most before it gives up and closes


# ---- a line without end --------------------------------------------------------------------------
def test_a_line_that_never_ends_is_an_error_after_the_limit_in_bounded_memory(tmp_path, monkeypatch):
    limit = 1 << 20
    monkeypatch.setattr(client_module, "SERVER_LINE_LIMIT", limit)
    sent = [0]

    def endless(conn: socket.socket) -> None:
        chunk = b"x" * (1 << 16)
        while sent[0] < ENDLESS_CAP:  # a cap, so that a client that reads for ever fails the test, not hangs it
            conn.sendall(chunk)
            sent[0] += len(chunk)

    run_dir = tmp_path / "runs" / "endless"
    with fake_engine(run_dir, endless):
        tracemalloc.start()
        try:
            with pytest.raises(CharRNNError) as raised:
                EngineClient(run_dir).connect()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert str(raised.value) == (f"run endless: the run's engine sent a message longer than {limit:,} bytes; "
                                 "disconnected")
    assert peak < 4 * limit, f"the client held {peak:,} bytes"
    assert sent[0] < ENDLESS_CAP / 2  # the client hung up near the limit; it did not read on


def test_a_line_over_the_limit_while_watching_ends_the_watch_with_an_error_notice(tmp_path, monkeypatch):
    monkeypatch.setattr(client_module, "SERVER_LINE_LIMIT", 1 << 16)

    def welcome_then_endless(conn: socket.socket) -> None:
        conn.recv(1024)
        conn.sendall(protocol.encode({"type": "welcome", "version": protocol.VERSION, "run": "w", "events": [
            protocol.event_to_dict(ev.StateChanged("training"))]}))
        for _ in range(64):
            conn.sendall(b"y" * (1 << 12))

    run_dir = tmp_path / "runs" / "w"
    events: list[ev.Event] = []
    with fake_engine(run_dir, welcome_then_endless):
        client = EngineClient(run_dir, events.append)
        client.connect()
        assert client.run() == "detached"  # the run did not end: this connection did
    notices = [e for e in events if isinstance(e, ev.Notice)]
    assert [n.level for n in notices] == ["error"] and "longer than 65,536 bytes" in notices[0].message
    assert client.sock is None


# ---- whose server ----------------------------------------------------------------------------------
def fake_welcoming_engine(stopped: threading.Event, lock_holder: list) -> Callable[[socket.socket], None]:
    """An engine that answers everything, with invented facts: what a stranger's socket could say."""

    def serve(conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        for line in reader:
            message = protocol.decode(line)
            if message["type"] == "hello":
                events = [ev.StateChanged("training"), ev.CheckpointSaved("/elsewhere/latest.pt", 1, "latest", 0.0)]
                answer = {"type": "welcome", "version": protocol.VERSION, "run": "x",
                          "events": [protocol.event_to_dict(e) for e in events]}
            elif message.get("name") == "status":
                answer = {"type": "status", "status": {"pid": None}}
            elif message.get("name") == "stop":
                stopped.set()
                lock_holder.pop().release()  # "ended": a stop that believed it returns at once
                for event in (ev.Progress(999, 999, (), 1.0, 1.0, 1.0, 1.0, None, None, None),
                              ev.CheckpointSaved("/invented/latest.pt", 999, "latest", 0.0),
                              ev.StateChanged("stopped")):
                    conn.sendall(protocol.encode(protocol.event_message(event)))
                return
            else:
                continue
            conn.sendall(protocol.encode(answer))

    return serve


def test_a_socket_served_by_another_user_is_refused_and_stop_prints_none_of_its_answers(tmp_path, monkeypatch):
    # A server run by another uid cannot be made here: the function that reads SO_PEERCRED says so.
    monkeypatch.setattr(client_module, "peer_uid", lambda sock: os.getuid() + 1)
    runs_dir = tmp_path / "runs"
    stopped = threading.Event()
    run_dir = runs_dir / "shared"
    run_dir.mkdir(parents=True, mode=0o700)
    lock = RunLock(run_dir).acquire()
    with fake_engine(run_dir, fake_welcoming_engine(stopped, [lock]), live=False):
        refusal = f"run shared's socket is served by uid {os.getuid() + 1}, not you: refusing to talk to it"
        with pytest.raises(CharRNNError) as raised:
            EngineClient(run_dir).connect()
        assert str(raised.value) == refusal
        out = io.StringIO()
        with pytest.raises(CharRNNError) as raised:
            run_stop(argparse.Namespace(run="shared", runs_dir=runs_dir, no_save=False), out)
        assert str(raised.value) == refusal
        assert out.getvalue() == "" and not stopped.is_set()  # nothing sent, nothing believed
    lock.release()


def test_the_runs_own_server_passes_the_check(repetitive_text, runs_dir):
    run = LocalRun(tiny_config(repetitive_text, report_interval=0.05), runs_dir, "own").start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            with unix_address(run.run_dir / SOCKET) as address:
                raw.connect(address)
            assert client_module.peer_uid(raw) == os.getuid()
        client = run.client(viewer=False)
        client.connect()
        assert client.status()["pid"] == os.getpid()
        client.close()
    finally:
        run.stop()


# ---- busy, or ended ------------------------------------------------------------------------------
def hang_up(conn: socket.socket) -> None:
    """What a full server does (engine/serve/server.py, MAX_CLIENTS): accept, then close without a word."""


def test_a_live_run_that_hangs_up_before_its_welcome_is_busy_not_crashed(tmp_path):
    run_dir = tmp_path / "runs" / "full"
    with fake_engine(run_dir, hang_up), pytest.raises(CharRNNError) as raised:
        EngineClient(run_dir).connect()
    assert str(raised.value) == "run full is busy (too many connections); try again"
    assert not isinstance(raised.value, RunNotLive)


def test_a_run_nobody_holds_that_hangs_up_has_ended(tmp_path):
    run_dir = tmp_path / "runs" / "gone"
    with fake_engine(run_dir, hang_up, live=False), pytest.raises(RunNotLive):
        EngineClient(run_dir).connect()


def test_a_full_server_makes_stop_and_attach_say_busy(repetitive_text, runs_dir, monkeypatch):
    monkeypatch.setattr(server, "MAX_CLIENTS", 1)
    run = LocalRun(tiny_config(repetitive_text, report_interval=0.05), runs_dir, "busy").start()
    first = run.client(viewer=False)
    try:
        first.connect()  # welcomed: it holds the one connection the server serves
        busy = "run busy is busy (too many connections); try again"
        with pytest.raises(CharRNNError) as raised:
            run.client().connect()
        assert str(raised.value) == busy
        out = io.StringIO()
        with pytest.raises(CharRNNError) as raised:
            run_stop(argparse.Namespace(run="busy", runs_dir=runs_dir, no_save=False), out)
        assert str(raised.value) == busy and out.getvalue() == ""
    finally:
        first.close()
        run.stop()
