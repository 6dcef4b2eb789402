"""The edges of issue 25 (nothing crosses into a run unchecked): evaluations and saves a client asks
for keep to a share of the training time, a full server says so before it closes, and an event from
a server is checked field by field before a client believes it."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import socket
import threading
import time
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import LocalRun, examples, fake_engine, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_tui.engine import events as ev
from charrnn_tui.engine import protocol
from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.protocol import EvaluateNow, Pause, Resume, SaveNow, Stop
from charrnn_tui.engine.run import evaluating, saving
from charrnn_tui.engine.run.control import REQUEST_BURST, REQUEST_SHARE, RequestBudget
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import LATEST, SOCKET, unix_address
from charrnn_tui.engine.serve.client import EngineClient


# ---- a raw client, and a fake server ---------------------------------------------------------------
class Raw:
    """A client on a raw socket: what it sends and every message it gets, as JSON."""

    def __init__(self, run_dir: Path, hello: bool = True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        with unix_address(run_dir / SOCKET) as address:
            self.sock.connect(address)
        self.buffer = b""
        self.seen: list[dict] = []
        if hello:
            self.send(protocol.hello())
            self.until(lambda m: m["type"] == "welcome")

    def send(self, message: dict) -> None:
        self.sock.sendall(protocol.encode(message))

    def until(self, predicate: Callable[[dict], bool] | None, timeout: float = 30.0) -> dict | None:
        """The first message (from here on) that `predicate` likes; with None, read to the end."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                self.seen.append(json.loads(line))
                if predicate is not None and predicate(self.seen[-1]):
                    return self.seen[-1]
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                assert predicate is None, f"the connection closed; last: {self.seen[-3:]}"[:2000]
                return None
            self.buffer += chunk
        last = [m["event"]["event"] if m["type"] == "event" else m["type"] for m in self.seen[-5:]]
        raise AssertionError(f"timed out; last: {last}")

    def close(self) -> None:
        self.sock.close()


def notice(text: str) -> Callable[[dict], bool]:
    return lambda m: m["type"] == "event" and m["event"]["event"] == "Notice" and text in m["event"]["message"]


def event(name: str) -> Callable[[dict], bool]:
    return lambda m: m["type"] == "event" and m["event"]["event"] == name


# ---- 1. evaluations and saves asked for: a share of the training time ------------------------------
class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def work_trainer(repetitive_text, runs_dir, monkeypatch):
    """A Trainer set up, whose requests the test serves by hand, with a fake clock: an evaluation or
    a save costs `cost` seconds of it, and is recorded with the step it was served at."""
    made: list[Trainer] = []

    def make(cost: float) -> tuple[Trainer, list[tuple[str, int]]]:
        trainer = Trainer(tiny_config(repetitive_text), runs_dir=runs_dir)
        trainer.setup()
        made.append(trainer)
        clock = Clock()
        trainer.controls.work_budget = RequestBudget(clock=clock)
        served: list[tuple[str, int]] = []

        def work(kind: str, result: Any):
            def carry_out(*args, **kwargs):
                clock.now += cost
                served.append((kind, trainer.trained.step))
                return result
            return carry_out

        monkeypatch.setattr(evaluating, "evaluate_run", work("evaluate", evaluating.Evaluation(False, cost, None)))
        monkeypatch.setattr(saving, "save", work("save", saving.Saved(True)))
        trainer.trained.train_seconds = 0.0
        return trainer, served

    yield make
    for trainer in made:
        trainer.close()


def train(trainer: Trainer, steps: int = 1, seconds: float = 0.01) -> None:
    for _ in range(steps):
        trainer.trained.step += 1
        trainer.trained.train_seconds += seconds
        trainer.serve_requests()


def test_a_flood_of_evaluations_and_saves_keeps_to_the_share_and_each_is_served_in_the_end(work_trainer):
    trainer, served = work_trainer(cost=0.2)
    told: list[ev.Notice] = []
    for _ in range(5000):  # 50 s of training in steps of 10 ms, both asked for at every boundary
        trainer.request(EvaluateNow(), reply=told.append)
        trainer.request(SaveNow(), reply=told.append)
        train(trainer)
    spent = trainer.controls.work_budget.spent
    assert spent == pytest.approx(0.2 * len(served))
    assert spent <= REQUEST_SHARE * 50.0 + REQUEST_BURST + 0.2  # at most one piece of work past the share
    assert spent >= REQUEST_SHARE * 50.0 - 0.4  # and what the share allows is used: nothing is lost
    assert {kind for kind, _ in served} == {"evaluate", "save"}
    assert len(told) >= 10_000 - len(served)  # every asker not served at once is told, in one line each
    assert all("\n" not in n.message and "get 10% of the training time" in n.message for n in told)
    assert any(n.message.startswith("an evaluation is held already, and yours joins it") for n in told)
    assert trainer.controls._queued_work <= 2  # joined ones count no more: at most the one held of each kind

    # The flood stops; one more of each is held, and each is served at about the step its sender was
    # told (the save after the evaluation held before it, at what an evaluation took last time).
    for _ in range(3000):
        train(trainer)
        if not trainer.controls._held:
            break
    told.clear()
    trainer.request(EvaluateNow(), reply=told.append)
    trainer.request(SaveNow(), reply=told.append)
    train(trainer)
    assert [n.message.split(":")[0] for n in told] == ["the evaluation is held", "the save is held"]
    assert told[0].message.startswith("the evaluation is held: evaluations and saves asked for get 10% of the "
                                      "training time, and the last (")
    near = [int(re.search(r"near step ([\d,]+)$", n.message).group(1).replace(",", "")) for n in told]
    before = len(served)
    for _ in range(3000):  # bounded: work never served fails here, not hangs
        train(trainer)
        if len(served) == before + 2:
            break
    assert [kind for kind, _ in served[before:]] == ["evaluate", "save"]
    assert all(abs(step - predicted) <= 2 for (_, step), predicted in zip(served[before:], near, strict=True)), \
        (served[before:], near)
    assert not trainer.controls._held and trainer.controls._queued_work == 0


@pytest.mark.parametrize("ask, kind", [(EvaluateNow(), "evaluate"), (SaveNow(), "save")])
def test_one_evaluation_or_save_asked_for_is_served_at_once(work_trainer, ask, kind):
    trainer, served = work_trainer(cost=2.0)  # however long it takes
    told: list[ev.Notice] = []
    trainer.request(ask, reply=told.append)
    train(trainer)
    assert served == [(kind, 1)] and told == []


def test_what_is_held_is_served_when_the_run_pauses_and_told_when_it_stops(work_trainer):
    trainer, served = work_trainer(cost=1.0)
    trainer.request(EvaluateNow())
    train(trainer)
    told: list[ev.Notice] = []
    trainer.request(EvaluateNow(), reply=told.append)
    trainer.request(SaveNow(), reply=told.append)
    train(trainer)
    assert served == [("evaluate", 1)] and set(trainer.controls._held) == {EvaluateNow, SaveNow} and len(told) == 2
    trainer.request(Pause())
    for _ in range(3):  # no training to keep: one at each boundary, not charged
        trainer.serve_requests()
    assert served == [("evaluate", 1), ("evaluate", 2), ("save", 2)]
    assert trainer.controls.work_budget.spent == 1.0
    trainer.request(Resume())
    train(trainer)
    told.clear()
    trainer.request(EvaluateNow(), reply=told.append)
    trainer.request(SaveNow(), reply=told.append)
    trainer.request(Stop(save=True))
    trainer.serve_requests()
    assert set(trainer.controls._held) == {EvaluateNow, SaveNow}
    trainer.pull(trainer.controls.drop())
    assert [n.message for n in told[2:]] == ["the run stopped before the evaluation was served"]  # the stop saves
    assert trainer.controls._queued_work == 0


class GatedBudget(RequestBudget):
    """A budget that allows work only once the test says so."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()

    def allows(self) -> bool:
        return self.gate.is_set()


def test_a_held_evaluation_is_told_to_its_sender_and_served_once_for_two_askings(repetitive_text, runs_dir):
    run = LocalRun(tiny_config(repetitive_text, report_interval=0.05, eval_interval=10_000), runs_dir, "held")
    run.trainer.controls.work_budget = budget = GatedBudget()
    run.start()
    asker = other = None
    try:
        asker, other = Raw(run.run_dir), Raw(run.run_dir)
        asker.send(protocol.request_message(protocol.EvaluateNow()))
        asker.until(notice("the evaluation is held: evaluations and saves asked for get 10% of the training time"))
        asker.send(protocol.request_message(protocol.EvaluateNow()))
        asker.until(notice("an evaluation is held already, and yours joins it"))
        budget.gate.set()
        asker.until(event("Evaluated"))
        other.until(event("Evaluated"))
    finally:
        run.stop()
        for client in (asker, other):
            if client is not None:
                client.until(None)  # to the end: the run has closed the connection
                client.close()
    assert sum(event("Evaluated")(m) for m in asker.seen) == 1
    assert not any(notice("held")(m) for m in other.seen)  # the asker's alone


# ---- 2. a full server says so ----------------------------------------------------------------------
def test_a_full_server_sends_one_line_before_it_closes_and_the_client_shows_it(repetitive_text, runs_dir):
    run = LocalRun(tiny_config(repetitive_text, report_interval=0.05), runs_dir, "full")
    run.server.max_clients = 2
    run.start()
    held = [run.client(viewer=False), run.client(viewer=False)]
    try:
        for client in held:
            client.connect()
        turned_away = Raw(run.run_dir, hello=False)
        turned_away.until(None)
        turned_away.close()
        assert turned_away.seen == [{"type": "error", "message": "too many connections", "busy": True}]
        with pytest.raises(CharRNNError) as raised:
            run.client().connect()  # says hello first: the line is read all the same
        assert str(raised.value) == "run full is busy (too many connections); try again"
        assert run.server.connections == 2
    finally:
        for client in held:
            client.close()
        run.stop()


def test_the_client_shows_what_a_busy_server_says(tmp_path):
    def busy(conn: socket.socket) -> None:
        conn.sendall(protocol.encode(protocol.busy("64 clients are connected")))

    run_dir = tmp_path / "runs" / "crowded"
    with fake_engine(run_dir, busy), pytest.raises(CharRNNError) as raised:
        EngineClient(run_dir).connect()
    assert str(raised.value) == "run crowded is busy (64 clients are connected); try again"


# ---- 3. an event's fields, checked -----------------------------------------------------------------
INFO = ev.RunInfo("r", "/runs/r", "c", "/c.txt", 100, 90, 10, "char", 30, "lstm", 1, 32, 16, 1000, "cpu",
                  "CPU, 2 threads", "fp32", "tiny", 4, 16, 100, None, 3600.0, 0, {"temperature": 0.8})
EXAMPLES = [
    ev.Started(INFO, {"steps": 2, "first": 3.0, "width": 1, "means": [3.0, 2.0], "lows": [3.0, 2.0],
                      "highs": [3.0, 2.0], "recent": [3.0, 2.0], "timeline": [[2, 0.5]]}, ((1, 2.5),), ((1, "x"),)),
    ev.Progress(3, 1, (1.0, 2.0, 3.0), 0.5, 10.0, 0.1, 1.0, None, 2.0, None, 50, 1 << 33, 1 << 34),
    ev.Evaluated(3, 1.0, 1.4, 2.7, 1.0, True, 10, 0.1, 3, None),
    ev.Validating(3, 0.25, 1000),
    ev.SampleStarted(1, 3, "pr", 0.8, "prompt", ("a note",)),
    ev.SampleText(1, "a cat", (0.5, 0.25), (1, 4)),
    ev.SampleFinished(1, "a cat", (0.5, 0.25), (1, 4), 5, ((0, 5),)),
    ev.NextTokens("the ca", (("t", 0.75), (" ", 0.125)), (0.5, 0.25), (1,) * 6, ("a note",)),
    ev.CheckpointSaved("/p", 3, "latest", 1.0),
    ev.StateChanged("paused", "why"),
    ev.SettingsChanged(0.9, 3),
    ev.Notice("hello", "warning"),
]
BY_NAME = {type(e).__name__: e for e in EXAMPLES}
HUGE = "x" * (protocol.MAX_TEXT + 1)
JUNK = st.one_of(st.text(max_size=4), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner[0], True
    return hint, False


def good(hint: Any) -> st.SearchStrategy:
    """JSON values of a field's type: what a server may send."""
    inner, nullable = optional(hint)
    if nullable:
        return st.none() | good(inner)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(-(1 << 63), (1 << 63) - 1)
    if hint is float:
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6, 10**6)
    if hint is str:
        return st.text(max_size=20)
    if hint is Any:
        return st.integers() | st.text(max_size=3)
    if dataclasses.is_dataclass(hint):
        return st.just(json.loads(json.dumps(dataclasses.asdict(INFO))))
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args[-1] is Ellipsis:
        return st.lists(good(args[0]), max_size=4)
    if typing.get_origin(hint) is tuple:
        return st.tuples(*map(good, args)).map(list)
    if typing.get_origin(hint) is dict:  # keys no client reads (those have tests of their own)
        return st.dictionaries(st.text(max_size=4).map(lambda k: "x_" + k), st.integers() | st.text(max_size=3),
                               max_size=3)
    raise AssertionError(f"no strategy for {hint}")


def bad(hint: Any) -> st.SearchStrategy:
    """JSON values that are not of a field's type: what a broken or hostile server may send."""
    inner, nullable = optional(hint)
    if nullable:
        return bad(inner).filter(lambda v: v is not None)
    none = st.none()
    if hint is bool:
        return none | st.integers() | st.floats() | JUNK
    if hint is int:
        return (none | st.booleans() | st.floats() | JUNK | st.integers(min_value=1 << 63)
                | st.integers(max_value=-(1 << 63) - 1))
    if hint is float:
        return (none | st.booleans() | st.sampled_from([math.nan, math.inf, -math.inf]) | JUNK
                | st.integers(min_value=10**400, max_value=10**401))
    if hint is str:
        return none | st.booleans() | st.integers() | st.floats() | st.lists(st.text(max_size=2), max_size=2) \
            | st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=2) | st.just(HUGE)
    if dataclasses.is_dataclass(hint):
        return none | st.booleans() | st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=2)
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        not_a_list = none | st.booleans() | st.integers() | st.text(max_size=3) | st.dictionaries(
            st.text(max_size=2), st.integers(), max_size=2)
        if args[-1] is Ellipsis:
            one_bad = st.tuples(st.lists(good(args[0]), max_size=2), bad(args[0]), st.lists(good(args[0]), max_size=2))
            return not_a_list | one_bad.map(lambda t: [*t[0], t[1], *t[2]])
        wrong_length = st.lists(st.integers(), max_size=4).filter(lambda v: len(v) != len(args))
        one_bad = st.integers(0, len(args) - 1).flatmap(
            lambda i: st.tuples(*[bad(a) if j == i else good(a) for j, a in enumerate(args)]).map(list))
        return not_a_list | wrong_length | one_bad
    if typing.get_origin(hint) is dict:
        return none | st.booleans() | st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=2)
    raise AssertionError(f"no strategy for {hint}")


def wire(e: ev.Event) -> dict:
    return json.loads(protocol.encode(protocol.event_message(e)))["event"]


def fields_of(name: str) -> list[tuple[str, Any]]:
    """(where, type) of every field of an event, those of the RunInfo a Started holds included."""
    cls = protocol.EVENT_TYPES[name]
    found = [(f.name, hints(cls)[f.name]) for f in dataclasses.fields(cls)]
    if cls is ev.Started:
        found += [(f"info.{f.name}", hints(ev.RunInfo)[f.name]) for f in dataclasses.fields(ev.RunInfo)]
    return found


def replaced(data: dict, where: str, value: Any) -> dict:
    data = json.loads(json.dumps(data))
    *path, last = where.split(".")
    inner = data
    for key in path:
        inner = inner[key]
    inner[last] = value
    return data


def test_the_examples_cover_every_event():
    assert set(BY_NAME) == set(protocol.EVENT_TYPES)


@pytest.mark.parametrize("name", sorted(protocol.EVENT_TYPES))
@settings(max_examples=examples(150), deadline=None)
@given(data=st.data())
def test_a_field_of_the_wrong_type_is_refused_naming_the_event_and_the_field(name, data):
    where, hint = data.draw(st.sampled_from(fields_of(name)), label="field")
    value = data.draw(bad(hint), label="value")
    with pytest.raises(protocol.BadEvent) as raised:
        protocol.event_from_dict(replaced(wire(BY_NAME[name]), where, value))
    message = str(raised.value)
    assert message.startswith(f"event {name}: {where}") and " must be " in message, message
    assert "\n" not in message and len(message) < 200


@pytest.mark.parametrize("name", sorted(protocol.EVENT_TYPES))
def test_a_required_field_left_out_is_refused(name):
    required = [f.name for f in dataclasses.fields(protocol.EVENT_TYPES[name])
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for field in required:
        data = wire(BY_NAME[name])
        del data[field]
        with pytest.raises(protocol.BadEvent, match=f"^event {name}: {field} is missing$"):
            protocol.event_from_dict(data)


@pytest.mark.parametrize("name", sorted(protocol.EVENT_TYPES))
@settings(max_examples=examples(100), deadline=None)
@given(data=st.data())
def test_fields_of_the_right_type_are_taken_as_sent(name, data):
    sent = {"event": name, **{f: data.draw(good(h), label=f) for f, h in fields_of(name) if "." not in f}}
    received = protocol.event_from_dict(sent)
    assert json.loads(json.dumps(protocol.event_to_dict(received))) == json.loads(json.dumps(sent))


@pytest.mark.parametrize("name, where, value, said", [
    ("Progress", "step", "12", "event Progress: step must be an integer, not a string"),
    ("Progress", "step", True, "event Progress: step must be an integer, not true"),
    ("Progress", "losses", [2.5, math.nan], "event Progress: losses[1] must be a finite number, not NaN"),
    ("Progress", "eta_seconds", math.inf, "event Progress: eta_seconds must be a finite number or null, not Infinity"),
    ("Progress", "cpu_percent", math.nan, "event Progress: cpu_percent must be a finite number or null, not NaN"),
    ("Progress", "rss_bytes", 1.5, "event Progress: rss_bytes must be an integer or null, not a number"),
    ("Started", "reports", {"width": 1, "steps": ["9"]},
     "event Started: reports.steps[0] must be an integer, not a string"),
    ("Started", "reports", {"width": 1, "steps": [9], "lr": [True]},
     "event Started: reports.lr[0] must be a finite number or null, not true"),
    ("Started", "reports", {"steps": [9]}, "event Started: reports.width is missing"),
    ("Started", "reports", {"width": 1, "steps": [9], "tokens_per_s": [1.0, 2.0]},
     "event Started: reports: each field must be as long as steps"),
    ("Started", "reports", {"width": 2, "pending": 2, "steps": [9]},
     "event Started: reports.width must be at least 1 and pending from 0 to under it"),
    ("Notice", "message", ["a"], "event Notice: message must be a string of at most 1,048,576 characters, "
                                 "not a list of 1 item"),
    ("Notice", "message", HUGE, "event Notice: message must be a string of at most 1,048,576 characters, "
                                "not a string of 1,048,577 characters"),
    ("SampleText", "text", {"nested": {"object": 1}}, "event SampleText: text must be a string of at most "
                                                       "1,048,576 characters, not an object"),
    ("Started", "info.layers", 2.0, "event Started: info.layers must be an integer, not a number"),
    ("Started", "info.config", {"temperature": "hot"},
     "event Started: info.config.temperature must be a finite number, not a string"),
    ("Started", "loss_history", {"steps": 1, "first": 2.0}, "event Started: loss_history.width is missing"),
    ("Started", "loss_history", {"steps": 1, "first": 2.0, "width": 1, "means": [2.0], "lows": [], "highs": [2.0],
                                 "recent": [2.0]},
     "event Started: loss_history.means, lows and highs must be as long as each other"),
    ("NextTokens", "top", [["t", 0.5, 1]], "event NextTokens: top[0] must be a list of 2, not a list of 3 items"),
])
def test_what_a_bad_field_is_told(name, where, value, said):
    with pytest.raises(protocol.BadEvent) as raised:
        protocol.event_from_dict(replaced(wire(BY_NAME[name]), where, value))
    assert str(raised.value) == said


def test_a_client_drops_bad_events_says_so_once_and_reads_on(tmp_path):
    good_events = [ev.StateChanged("training"), ev.Notice("fine")]
    bad_progress = {**wire(BY_NAME["Progress"]), "step": "many"}

    def broken(conn: socket.socket) -> None:
        conn.recv(1024)
        conn.sendall(protocol.encode({"type": "welcome", "version": protocol.VERSION, "run": "b", "events": [
            wire(good_events[0]), bad_progress, {**wire(BY_NAME["SettingsChanged"]), "temperature": math.nan}]}))
        for data in (bad_progress, {"event": ["not", "a", "name"]}, {"event": "FromTheFuture"}, wire(good_events[1]),
                     {**wire(BY_NAME["Notice"]), "message": HUGE}, wire(ev.StateChanged("stopped"))):
            conn.sendall(protocol.encode({"type": "event", "event": data}))

    run_dir = tmp_path / "runs" / "broken"
    got: list[ev.Event] = []
    with fake_engine(run_dir, broken):
        client = EngineClient(run_dir, got.append)
        client.connect()
        assert client.run() == "stopped"
    warnings = [e.message for e in got if isinstance(e, ev.Notice) and e.level == "warning"]
    assert warnings == [
        "run broken sent a malformed event, ignored (2 such events in its welcome): event Progress: step must be an "
        "integer, not a string",
        "run broken sent a malformed event, ignored: event Progress: step must be an integer, not a string",
    ]
    assert [e for e in got if not isinstance(e, ev.Notice) or e.level != "warning"] == [
        good_events[0], good_events[1], ev.StateChanged("stopped")]


def readable(data: dict) -> None:
    """An event as a server sent it is taken, and nothing of it is lost or changed."""
    received = protocol.event_from_dict(data)
    assert json.loads(protocol.encode(protocol.event_to_dict(received))) == data


@pytest.mark.parametrize("tokens", ["char", "word"])
def test_every_event_a_real_run_sends_is_taken(repetitive_text, runs_dir, tokens):
    config = tiny_config(repetitive_text, tokens=tokens, report_interval=0.02, eval_interval=40,
                         checkpoint_interval=40, sample_interval=0.2, sample_length=20)
    run = LocalRun(config, runs_dir, tokens).start()
    watcher = latecomer = None
    try:
        watcher = Raw(run.run_dir)
        for request in (protocol.request_message(protocol.SetTemperature(temperature=0.01)),
                        protocol.request_message(protocol.SetEarlyStop(evaluations=50)),
                        protocol.request_message(protocol.Prompt(text="the quick", length=20, temperature=1.5)),
                        protocol.request_message(protocol.AskNextTokens(text="the qu", top=3)),
                        protocol.request_message(protocol.SampleNow()), protocol.request_message(protocol.SaveNow()),
                        protocol.request_message(protocol.EvaluateNow())):
            watcher.send(request)
        for name in ("NextTokens", "SampleFinished", "CheckpointSaved", "Evaluated", "Validating"):
            watcher.until(event(name))
        watcher.until(lambda m: m["type"] == "event" and m["event"]["event"] == "Evaluated"
                      and m["event"]["step"] >= 80)  # the run's own too, a best among them
        latecomer = Raw(run.run_dir)  # its welcome: the run so far, as the server folds it
    finally:
        run.stop()
        for client in (watcher, latecomer):
            if client is not None:
                client.until(None)
                client.close()
    messages = [*watcher.seen, *latecomer.seen]
    sent = [e for m in messages if m["type"] == "welcome" for e in m["events"]]
    sent += [m["event"] for m in messages if m["type"] == "event"]
    assert {e["event"] for e in sent} == set(protocol.EVENT_TYPES)
    for data in sent:
        readable(data)
    # and what a resumed run starts with: its history, samples and validations from the checkpoint
    emitted: list[ev.Event] = []
    resumed = Trainer(resume=run.run_dir / LATEST, runs_dir=runs_dir, on_event=emitted.append,
                      overrides={"max_steps": run.trainer.trained.step + 5})
    assert resumed.run() == "finished"
    started = next(e for e in emitted if isinstance(e, ev.Started))
    assert started.loss_history["steps"] > 0 and started.val_history and started.samples
    for e in emitted:
        readable(wire(e))


def test_sets_go_on_the_wire_as_sorted_lists_and_nothing_else_unknown_does():
    from charrnn_tui.engine import protocol

    assert protocol.encode({"tokens": {"c", "a", "b"}, "ids": frozenset({3, 1})}) == \
        b'{"tokens":["a","b","c"],"ids":[1,3]}\n'
    with pytest.raises(TypeError, match="^object is not JSON serialisable$"):
        protocol.encode({"x": object()})


def test_the_sample_interval_is_set_while_the_run_trains(repetitive_text, runs_dir):
    """set_sample_interval, the request added as one definition (engine/protocol.py) and one case in
    the loop (Controls._carry_out); the app's palette offers it."""
    from charrnn_tui.engine.protocol import RequestRefused, SetSampleInterval

    events: list = []
    trainer: Trainer

    def on_event(e):
        events.append(e)
        if isinstance(e, ev.Progress) and e.step >= 5 and trainer.config.sample_interval == 0:
            trainer.request(SetSampleInterval(0.05))
        if isinstance(e, ev.SampleFinished):
            trainer.request(Stop(save=False))

    config = tiny_config(repetitive_text, sample_interval=0, report_interval=1e-9)
    trainer = Trainer(config, runs_dir=runs_dir, on_event=on_event)
    trainer.run()
    live = [e for e in events if isinstance(e, ev.SampleStarted) and e.source == "live"]
    said = [e.message for e in events if isinstance(e, ev.Notice)]
    assert live and live[0].step >= 5 and "a live sample every 0.05 s" in said  # none before it was asked for
    assert trainer.config.sample_interval == 0.05  # saved with the config
    for seconds in (-1.0, 86_401.0):
        with pytest.raises(RequestRefused, match="the sample interval is 0"):
            trainer.request(SetSampleInterval(seconds))
