"""The run's server without a UI: raw sockets, every kind of bad client, several good ones."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import time
import typing

import pytest
from helpers import LocalRun, tiny_config

from charrnn_tui.engine import events as ev
from charrnn_tui.engine import protocol
from charrnn_tui.engine.history import LossHistory
from charrnn_tui.engine.protocol import Pause, Prompt, Resume, SetEarlyStop, SetTemperature
from charrnn_tui.engine.runs import SOCKET, unix_address
from charrnn_tui.engine.serve import server
from charrnn_tui.engine.serve.server import RunRecord


@pytest.fixture
def live_run(repetitive_text, runs_dir):
    run = LocalRun(tiny_config(repetitive_text, report_interval=0.02, sample_interval=0.5, sample_length=30,
                               eval_interval=100), runs_dir, "served").start()
    yield run
    run.stop()


def raw_socket(run: LocalRun) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    with unix_address(run.run_dir / SOCKET) as address:
        sock.connect(address)
    return sock


def read_messages(sock: socket.socket, until, timeout: float = 10.0) -> list[dict]:
    """Messages from the server until `until(message)` is true (or the connection closes)."""
    buffer, messages = b"", []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            messages.append(json.loads(line))
            if until(messages[-1]):
                return messages
        chunk = sock.recv(1 << 16)
        if not chunk:
            return messages
        buffer += chunk
    raise AssertionError(f"timed out; got {[m.get('type') for m in messages][-5:]}")


def greeted(run: LocalRun) -> socket.socket:
    sock = raw_socket(run)
    sock.sendall(protocol.encode(protocol.hello()))
    read_messages(sock, lambda m: m["type"] == "welcome")
    return sock


def wait_steps(run: LocalRun, more: int = 20, timeout: float = 30.0) -> None:
    start = run.trainer.trained.step
    deadline = time.monotonic() + timeout
    while run.trainer.trained.step < start + more:
        assert time.monotonic() < deadline, f"training stalled at step {run.trainer.trained.step}"
        time.sleep(0.02)


def test_the_socket_is_the_owners_alone(live_run):
    path = live_run.run_dir / SOCKET
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert os.stat(path).st_mode & 0o077 == 0 and os.stat(live_run.run_dir).st_mode & 0o077 == 0


def test_hostile_clients_never_stop_or_stall_the_run(live_run, monkeypatch):
    monkeypatch.setattr(server, "SEND_TIMEOUT", 1.0)
    run = live_run
    # Garbage before hello: refused and disconnected.
    garbage = raw_socket(run)
    garbage.sendall(b"\x00\xff not json at all\n")
    answer = read_messages(garbage, lambda m: True)
    assert answer[0]["type"] == "error" and "JSON" in answer[0]["message"]
    # After hello, each bad message gets an error and the connection stays.
    client = greeted(run)
    bad = [b"{not json\n", b"[1, 2, 3]\n", b'{"type": "launch"}\n',
           protocol.encode({"type": "request", "name": "rm -rf", "args": {}}),
           protocol.encode({"type": "request", "name": "set_temperature", "args": {"temperature": "hot"}}),
           protocol.encode({"type": "request", "name": "set_temperature", "args": {}}),
           protocol.encode({"type": "request", "name": "pause", "args": {"now": True}}),
           protocol.encode({"type": "request", "name": "stop", "args": {"save": 1}}),
           protocol.encode({"type": "request", "name": "prompt", "args": {"text": ["x"], "length": None}})]
    for line in bad:
        client.sendall(line)
        error = read_messages(client, lambda m: m["type"] == "error")[-1]
        assert error["message"], line
    # A line of megabytes: refused, that client is dropped.
    huge = raw_socket(run)
    huge.sendall(protocol.encode(protocol.hello()))
    with pytest.raises(OSError):
        for _ in range(64):
            huge.sendall(b"x" * (1 << 16))  # 4 MB, no newline
        huge.sendall(b"\n")
        read_messages(huge, lambda m: False, timeout=5)
    # Half a message, then silence; and a client that never reads while events pour out.
    half = raw_socket(run)
    half.sendall(b'{"type": "hel')
    slow = raw_socket(run)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(protocol.encode(protocol.hello()))
    wait_steps(run, 200)
    # A huge temperature is refused by the engine, a prompt flood is capped: still training.
    client.sendall(protocol.encode(protocol.request_message(protocol.SetTemperature(temperature=float("1e309")))))
    for _ in range(50):
        client.sendall(protocol.encode(protocol.request_message(protocol.Prompt(text="the quick " * 50, length=5))))
    wait_steps(run, 50)
    # Afterwards a good client is answered as ever.
    good = run.client()
    good.connect()
    good.request(Pause())
    events = []
    good.on_event = events.append
    import threading

    reader = threading.Thread(target=good.run, daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while not any(isinstance(e, ev.StateChanged) and e.state == "paused" for e in events):
        assert time.monotonic() < deadline, "no pause"
        time.sleep(0.02)
    good.request(Resume())
    wait_steps(run, 20)
    good.detach()
    for sock in (garbage, client, huge, half, slow):
        sock.close()


def test_a_client_that_stops_reading_is_dropped_not_waited_for(live_run, monkeypatch):
    monkeypatch.setattr(server, "SEND_TIMEOUT", 0.5)
    monkeypatch.setattr(server, "CLIENT_QUEUE", 64)
    slow = raw_socket(live_run)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(protocol.encode(protocol.hello()))
    deadline = time.monotonic() + 30
    while not live_run.server.clients:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    while live_run.server.clients:  # it never reads: dropped once it is too far behind
        assert time.monotonic() < deadline, "the slow client was never dropped"
        time.sleep(0.05)
    wait_steps(live_run, 50)
    slow.close()


def test_another_protocol_version_gets_one_line_and_is_closed(live_run):
    sock = raw_socket(live_run)
    sock.sendall(protocol.encode({"type": "hello", "version": 99}))
    messages = read_messages(sock, lambda m: False)
    assert len(messages) == 1 and messages[0]["type"] == "error"
    assert "version 99" in messages[0]["message"] and "version 1" in messages[0]["message"]


def test_viewers_see_each_others_pause_temperature_and_prompts(live_run):
    import threading

    seen: dict[str, list] = {"a": [], "b": []}
    clients = {}
    for name in seen:
        clients[name] = live_run.client(seen[name].append)
        clients[name].connect()
        threading.Thread(target=clients[name].run, daemon=True).start()

    def wait_both(predicate, what):
        deadline = time.monotonic() + 20
        while not all(any(predicate(e) for e in events) for events in seen.values()):
            assert time.monotonic() < deadline, what
            time.sleep(0.02)

    clients["a"].request(Pause())
    wait_both(lambda e: isinstance(e, ev.StateChanged) and e.state == "paused", "a's pause, seen by both")
    clients["b"].request(SetTemperature(1.3))
    wait_both(lambda e: isinstance(e, ev.SettingsChanged) and e.temperature == 1.3, "b's temperature")
    clients["a"].request(Prompt("the lazy", 20))
    wait_both(lambda e: isinstance(e, ev.SampleFinished) and len(e.text) == 20, "a's prompt, continued for both")
    assert live_run.server.record.status()["state"] == "paused"
    clients["b"].request(Resume())
    wait_both(lambda e: isinstance(e, ev.StateChanged) and e.state == "training", "b's resume")
    for client in clients.values():
        client.detach()


def test_a_new_viewer_gets_the_whole_run_so_far_in_its_welcome(live_run):
    wait_steps(live_run, 220)  # two evaluations and some samples
    client = live_run.client(viewer=False)
    events = client.connect()
    started = next(e for e in events if isinstance(e, ev.Started))
    history = LossHistory.from_dict(started.loss_history)
    assert history.steps >= 200 and history.first > 2.0
    assert len(started.val_history) >= 2
    assert any(isinstance(e, ev.SampleFinished) for e in events)
    assert isinstance(events[-1], ev.StateChanged) and events[-1].state == "training"
    assert client.status()["step"] >= 200
    client.close()


def test_a_late_viewer_is_told_the_settings_the_run_started_with_and_those_changed_since():
    info = ev.RunInfo(**{f: "" if h is str else 0 for f, h in typing.get_type_hints(ev.RunInfo).items()
                         if f != "config"}, config={"temperature": 0.6, "early_stop": 5})
    record = RunRecord()
    record.apply(ev.Started(info))
    assert [e for e in record.snapshot() if isinstance(e, ev.SettingsChanged)] == [ev.SettingsChanged(0.6, 5)]
    record.apply(ev.SettingsChanged(1.1, None))
    assert [e for e in record.snapshot() if isinstance(e, ev.SettingsChanged)] == [ev.SettingsChanged(1.1, None)]


def test_a_long_run_welcome_stays_small():
    record = RunRecord()
    info = ev.RunInfo(**{f: "" if h is str else 0 for f, h in typing.get_type_hints(ev.RunInfo).items()
                         if f != "config"})  # values do not matter, but their types must be right
    record.apply(ev.Started(info))
    losses = tuple(2.0 for _ in range(1000))
    for k in range(100):  # 100,000 steps
        record.apply(ev.Progress(step=(k + 1) * 1000, first_step=k * 1000 + 1, losses=losses, epoch=0.0,
                                 tokens_per_s=1.0, lr=0.1, train_seconds=1.0, eta_seconds=None, epoch_eta_seconds=None,
                                 memory_bytes=None))
        record.apply(ev.Evaluated((k + 1) * 1000, 1.5, 2.1, 4.5, 1.5, False, 100, 0.1))
    welcome = protocol.encode({"type": "welcome", "events": [protocol.event_to_dict(e) for e in record.snapshot()]})
    assert len(welcome) < 500_000
    started = protocol.event_from_dict(json.loads(welcome)["events"][0])
    assert LossHistory.from_dict(started.loss_history).steps == 100_000
    assert len(record.timeline) == 100


def test_every_event_survives_the_wire():
    info = ev.RunInfo(**{f: "x" if h is str else 1 for f, h in typing.get_type_hints(ev.RunInfo).items()
                         if f != "config"}, config={"lr": 0.1})
    samples = [
        ev.Started(info, {"steps": 1}, ((1, 2.5),), ((1, "text"),)),
        ev.Progress(3, 1, (1.0, 2.0, 3.0), 0.5, 10.0, 0.1, 1.0, None, 2.0, None),
        ev.Evaluated(3, 1.0, 1.4, 2.7, 1.0, True, 10, 0.1),
        ev.SampleStarted(1, 3, "pr", 0.8, "prompt", ("'é' -> 'e'",)),
        ev.SampleText(1, "[bold]x[/]"), ev.SampleFinished(1, "x\n"),
        ev.SampleText(2, "a cat", (0.5, 0.25), (1, 4)),
        ev.SampleFinished(2, "a cat", (0.5, 0.25), (1, 4), 5, ((0, 5),)),
        ev.NextTokens("the ca", (("t", 0.75), (" ", 0.125)), (0.5, 0.25, 0.125), (1,) * 6, ("'é' -> 'e'",)),
        ev.CheckpointSaved("/p", 3, "latest", 1.0), ev.StateChanged("paused", "why"),
        ev.SettingsChanged(0.9), ev.Notice("hello", "warning"), ev.Validating(3, 0.25, 1000),
    ]
    assert set(protocol.EVENT_TYPES) == {type(e).__name__ for e in samples}
    for event in samples:
        wire = json.loads(protocol.encode(protocol.event_message(event)))
        assert protocol.event_from_dict(wire["event"]) == event


@pytest.mark.parametrize("message, error", [
    ({"type": "request", "name": "pause", "args": []}, "args must be an object"),
    ({"type": "request", "name": "prompt", "args": {"text": "x"}}, None),
    ({"type": "request", "name": "prompt", "args": {"length": 3}}, "missing argument 'text'"),
    ({"type": "request", "name": "prompt", "args": {"text": "x", "temperature": 1.5}}, None),
    ({"type": "request", "name": "prompt", "args": {"text": "x", "temperature": "hot"}}, "wrong type"),
    ({"type": "request", "name": "stop", "args": {"save": True}}, None),
    ({"type": "request", "name": "set_temperature", "args": {"temperature": True}}, "wrong type"),
    ({"type": "hello"}, "unknown message type"),
])
def test_requests_are_checked_against_the_protocol(message, error):
    if error is None:
        request = protocol.parse_request(message)
        assert request.name == message["name"] and isinstance(request, protocol.REQUEST_TYPES[message["name"]])
        assert {k: getattr(request, k) for k in message["args"]} == message["args"]
    else:
        with pytest.raises(protocol.ProtocolError, match=error):
            protocol.parse_request(message)


def test_a_run_folder_deeper_than_a_unix_socket_path_allows_still_serves(repetitive_text, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    run = LocalRun(tiny_config(repetitive_text, report_interval=0.05), deep, "deep").start()
    try:
        assert len(str(run.run_dir / SOCKET)) > 107
        client = run.client(viewer=False)
        assert any(isinstance(e, ev.Started) for e in client.connect())
        client.close()
    finally:
        run.stop()


def test_a_viewer_that_falls_a_queue_behind_never_freezes_the_run(live_run, monkeypatch):
    """Found in review: a full queue made the training thread wait for a lock it held."""
    monkeypatch.setattr(server, "CLIENT_QUEUE", 8)
    monkeypatch.setattr(server, "SEND_TIMEOUT", 30.0)  # the queue fills long before a write times out
    slow = raw_socket(live_run)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(protocol.encode(protocol.hello()))
    wait_steps(live_run, 300)
    late = live_run.client(viewer=False)
    assert any(isinstance(e, ev.Started) for e in late.connect())
    assert late.status()["step"] > 0
    late.close()
    slow.close()


def test_a_request_flood_is_rate_limited_and_training_goes_on(live_run):
    flood = greeted(live_run)
    for _ in range(3000):
        flood.sendall(protocol.encode(protocol.request_message(protocol.SampleNow())))
    wait_steps(live_run, 100)
    errors = [m["message"] for m in read_messages(flood, lambda m: m["type"] == "error" and "too many" in m["message"])
              if m["type"] == "error"]
    assert any("too many requests" in e for e in errors)
    flood.close()


def test_connections_that_never_say_hello_are_bounded_and_timed_out(live_run, monkeypatch):
    monkeypatch.setattr(server, "HELLO_TIMEOUT", 1.0)
    monkeypatch.setattr(server, "SEND_TIMEOUT", 0.2)
    trickle = raw_socket(live_run)
    silent = [raw_socket(live_run) for _ in range(server.MAX_CLIENTS + 10)]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            trickle.sendall(b" ")  # never a whole line
        time.sleep(0.2)  # a trickle, for longer than HELLO_TIMEOUT: its answer is awaited below, not here
        assert live_run.server.connections <= server.MAX_CLIENTS
    assert read_messages(trickle, lambda m: True)[0]["message"] == "no hello in time"
    for sock in silent:
        sock.close()
    deadline = time.monotonic() + 10
    while live_run.server.connections:
        assert time.monotonic() < deadline, live_run.server.connections
        time.sleep(0.05)
    good = live_run.client(viewer=False)
    good.connect()  # still accepting
    good.close()


@pytest.mark.parametrize("line", [b"\n", b"   \n"], ids=["empty", "spaces"])
def test_a_blank_line_is_not_a_hello(live_run, line):
    sock = raw_socket(live_run)
    sock.sendall(line + protocol.encode(protocol.request_message(protocol.Status())))
    answer = read_messages(sock, lambda m: True)
    assert answer[0]["type"] == "error" and "first message must be hello" in answer[0]["message"]


@pytest.mark.parametrize("line", [
    b"[" * 100_000 + b"\n",
    b'{"type": "request", "name": "set_temperature", "args": {"temperature": 1' + b"0" * 5000 + b"}}\n",
    protocol.encode(protocol.request_message(protocol.SetTemperature(temperature=10 ** 400))),
    protocol.encode(protocol.request_message(protocol.Prompt(text="x", length=10 ** 30))),
], ids=["nested-100k-deep", "5000-digit-number", "temperature-1e400", "length-1e30"])
def test_pathological_json_gets_an_error_and_the_connection_stays(live_run, line):
    sock = greeted(live_run)
    sock.sendall(line)
    assert read_messages(sock, lambda m: m["type"] == "error")[-1]["type"] == "error"
    sock.sendall(protocol.encode(protocol.request_message(protocol.Status())))
    assert read_messages(sock, lambda m: m["type"] == "status")[-1]["status"]["state"] in ("training", "starting")


def test_status_json_is_never_seen_half_written(tmp_path):
    import threading

    from charrnn_tui.engine.runs import read_status, write_status

    stop = threading.Event()

    def writer(k: int) -> None:
        while not stop.is_set():
            write_status(tmp_path, {"state": "training", "step": k, "pad": "x" * 2000})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            status = read_status(tmp_path)
            assert status == {} or status["state"] == "training"
            if status:
                assert len(status["pad"]) == 2000
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert read_status(tmp_path)["state"] == "training"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary files left


def test_stop_from_a_signal_handler_cannot_deadlock_the_request_queue():
    """A signal can land while the loop is inside get_nowait(); Queue.put would then wait for the
    lock the loop holds for ever. SimpleQueue.put is reentrant."""
    import queue as queue_module

    from charrnn_tui.engine.run.trainer import Trainer

    trainer = Trainer(tiny_config("x"))
    assert isinstance(trainer.controls._requests, queue_module.SimpleQueue)


def test_a_client_leaves_out_arguments_that_are_none_so_an_older_run_takes_the_request():
    from charrnn_tui.engine.serve.client import EngineClient

    sent = []
    client = EngineClient("/nowhere", None)
    client._send = sent.append
    client.request(Prompt("abc"))
    client.request(Prompt("abc", 20, 1.5))
    client.request(SetEarlyStop(None))
    assert sent == [protocol.request_message(protocol.Prompt(text="abc")),
                    protocol.request_message(protocol.Prompt(text="abc", length=20, temperature=1.5)),
                    protocol.request_message(protocol.SetEarlyStop())]
    for message in sent:  # and this version's server takes them all
        protocol.parse_request(message)


def test_a_comparison_of_temperatures_is_not_replayed_to_viewers_who_attach_later():
    from charrnn_tui.engine.serve.server import RunRecord

    info = ev.RunInfo(**{f: "" if h is str else 0 for f, h in typing.get_type_hints(ev.RunInfo).items()
                         if f != "config"})
    record = RunRecord()
    record.apply(ev.Started(info))
    record.apply(ev.SampleStarted(1, 5, "ab", 0.5, "temperatures"))
    record.apply(ev.SampleFinished(1, "cd", (0.5, 0.5)))
    record.apply(ev.SampleStarted(2, 5, "", 0.8, "live"))
    record.apply(ev.SampleText(2, "xy", (0.25, 0.75)))
    record.apply(ev.SampleText(2, "z", (1.0,)))
    samples = [e for e in record.snapshot() if isinstance(e, (ev.SampleStarted, ev.SampleText, ev.SampleFinished))]
    assert samples == [ev.SampleStarted(2, 5, "", 0.8, "live"),
                       ev.SampleText(2, "xyz", (0.25, 0.75, 1.0))]  # under way: joined, with its confidences
    record.apply(ev.SampleFinished(2, "xyz", (0.25, 0.75, 1.0)))
    samples = [e for e in record.snapshot() if isinstance(e, (ev.SampleStarted, ev.SampleText, ev.SampleFinished))]
    assert samples == [ev.SampleStarted(2, 5, "", 0.8, "live"), ev.SampleFinished(2, "xyz", (0.25, 0.75, 1.0))]
