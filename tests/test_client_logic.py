"""What a client makes of what it reads, without a server: the fields it reads from its fold, the numbers it
trusts, the words it says of a run that is not live; and the few words naming a bad value."""

import math

import pytest

from charrnn_tui.engine import events as ev
from charrnn_tui.engine.protocol import (
    MAX_INT,
    REQUEST_TYPES,
    AskNextTokens,
    EvaluateNow,
    Pause,
    Prompt,
    Resume,
    SampleNow,
    SaveNow,
    SetEarlyStop,
    SetSampleInterval,
    SetTemperature,
    Status,
    Stop,
    TogglePause,
    _kind,
    parse_request,
)
from charrnn_tui.engine.run_state import _number, _whole
from charrnn_tui.engine.runs import SOCKET, _describe, write_status
from charrnn_tui.engine.serve.client import EngineClient


def test_whole_numbers_and_finite_numbers_are_told_from_booleans_and_the_rest():
    assert _whole(3) and _whole(0) and _whole(-2)
    assert not _whole(True) and not _whole(3.0) and not _whole("3") and not _whole(None)
    assert _number(2, None) == 2.0 and isinstance(_number(2, None), float) and _number(0.5, 1.0) == 0.5
    assert _number(True, 0.8) == 0.8 and _number("1", 0.8) == 0.8 and _number(None, 0.7) == 0.7
    assert _number(math.nan, 0.8) == 0.8 and _number(math.inf, None) is None and _number(10**400, 0.8) == 0.8


def test_a_client_mirrors_the_fields_a_caller_reads_and_ignores_the_wrong_kinds(tmp_path):
    client = EngineClient(tmp_path)
    client.run_state.apply(ev.Progress(7, 7, (1.0,), 0.1, 1.0, 0.01, 1.0, None, None, None))
    assert client.step == 7
    client.run_state.apply(ev.Progress(True, 7, (1.0,), 0.1, 1.0, 0.01, 1.0, None, None, None))
    assert client.step == 7
    client.run_state.apply(ev.SettingsChanged(1.2, 4))
    assert (client.temperature, client.early_stop) == (1.2, 4)
    client.run_state.apply(ev.SettingsChanged(True, True))
    assert (client.temperature, client.early_stop) == (1.2, 4)
    client.run_state.apply(ev.SettingsChanged(0.5, None))
    assert (client.temperature, client.early_stop) == (0.5, None)
    client.run_state.apply(ev.StateChanged("error", "boom"))
    assert (client.state, client.error) == ("error", "boom")
    client.run_state.apply(ev.StateChanged("error", 5))
    assert client.error == "training failed"


def test_every_request_goes_on_the_wire_as_the_server_reads_it(tmp_path):
    """One definition each (engine/protocol.py): what the client sends parses back to the same request."""
    client = EngineClient(tmp_path)
    sent: list[dict] = []
    client._send = sent.append
    requests = [Stop(save=False), Stop(), Stop(save=True, unattended=True), Pause(), Resume(), TogglePause(),
                SaveNow(), SampleNow(), EvaluateNow(), SetTemperature(1.5), SetEarlyStop(5), SetEarlyStop(None),
                Prompt("the cat", 20), Prompt("the cat", None, 0.5), AskNextTokens("the ca", 3), AskNextTokens("x"),
                SetSampleInterval(30.0)]
    assert {type(r) for r in requests} | {Status} == set(REQUEST_TYPES.values())  # every one of them
    for request in requests:
        client.request(request)
    assert [parse_request(message) for message in sent] == requests
    assert sent[0] == {"type": "request", "name": "stop", "args": {"save": False, "unattended": False}}
    assert sent[12]["args"] == {"text": "the cat", "length": 20}  # None is left out: the server's default


def test_a_run_that_is_not_live_is_called_crashed_or_not_running_with_how_to_go_on(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    client = EngineClient(run)
    hint = f"`charrnn-tui train --resume r --runs-dir {tmp_path / 'runs'}`"
    assert client._not_live_message() == f"run r is not running (stopped); {hint} continues it"
    for state in ("training", "paused", "starting"):  # it said it was live: its engine is gone
        write_status(run, {"state": state})
        assert client._not_live_message() == \
            f"run r crashed (its engine is gone); {hint} continues it from its last checkpoint"
    write_status(run, {"state": "finished"})
    assert client._not_live_message() == f"run r is not running (finished); {hint} continues it"
    (run / SOCKET).touch()  # a socket left behind: killed while it served
    assert client._not_live_message().startswith("run r crashed")
    (run / SOCKET).unlink()
    write_status(run, {"state": 12})
    assert client._not_live_message().startswith("run r is not running (12); ")
    write_status(run, {"state": ""})
    assert "(stopped)" in client._not_live_message()


@pytest.mark.parametrize(("value", "words"), [
    (None, "null"), (True, "true"), (False, "false"), (3, "an integer"), (-MAX_INT, "an integer"),
    (MAX_INT, "an integer of 19 digits"), (-MAX_INT - 1, "an integer of 19 digits"), (1.5, "a number"),
    (math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity"), ("x", "a string"),
    ([1], "a list of 1 item"), ([1, 2], "a list of 2 items"), ({}, "an object"), (object(), "object"),
])
def test_a_bad_event_field_is_named_by_its_kind_never_its_value(value, words):
    assert _kind(value) == words


def test_a_bad_status_value_is_shown_briefly():
    assert _describe(2**63 - 1) == str(2**63 - 1) and _describe(2**63) == "a number of 19 digits"
    assert _describe(True) == "true" and _describe(None) == "null" and _describe(math.nan) == "NaN"
    assert _describe(-math.inf) == "-Infinity" and _describe("a\x1b" * 30).startswith("'a")
    assert _describe([1]) == "a list" and _describe({}) == "an object" and _describe(1.5) == "1.5"


def _run_info(**changes) -> ev.RunInfo:
    import typing

    fields = {f: "" if h is str else 0 for f, h in typing.get_type_hints(ev.RunInfo).items() if f != "config"}
    return ev.RunInfo(**{**fields, **changes})


def test_a_client_takes_a_runs_step_and_settings_from_its_start(tmp_path):
    client = EngineClient(tmp_path)
    client.run_state.apply(ev.Started(_run_info(resumed_step=40, config={"temperature": 0.6, "early_stop": 3})))
    assert (client.step, client.temperature, client.early_stop) == (40, 0.6, 3)
    client.run_state.apply(ev.Started(_run_info(resumed_step=True, config={"early_stop": "x"})))  # wrong kinds: kept
    assert (client.step, client.temperature, client.early_stop) == (40, 0.8, 3)  # no temperature: the default
    client.run_state.apply(ev.Started(_run_info(config={"early_stop": None})))
    assert (client.step, client.early_stop) == (0, None)


def test_a_runs_record_gives_status_and_a_welcome_before_any_progress():
    from charrnn_tui.engine.serve.server import RunRecord

    record = RunRecord()
    empty = record.status()
    assert (empty["step"], empty["max_steps"], empty["checkpoint_interval"], empty["world_size"]) == (0, None, None, 1)
    record.apply(ev.Started(_run_info(resumed_step=40, max_steps=500, run_name="r")))
    record.apply(ev.StateChanged("paused", "asked"))
    status = record.status()
    assert (status["state"], status["reason"], status["step"], status["max_steps"]) == ("paused", "asked", 40, 500)
    started = next(e for e in record.snapshot() if isinstance(e, ev.Started))
    assert started.loss_history["timeline"] == [] and started.loss_history["steps"] == 0
