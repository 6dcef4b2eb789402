"""The request queue on its own (engine/run/control.py): no Trainer, no model. What it asks the loop to
do comes out as actions, one at a time, and what came of each goes back in."""

from dataclasses import dataclass
from typing import ClassVar

import pytest

from charrnn_tui.engine import protocol
from charrnn_tui.engine.protocol import Pause, Prompt, SaveNow, SetTemperature, Setting
from charrnn_tui.engine.run.control import (
    Announce,
    Apply,
    ChangeState,
    Controls,
    FlushProgress,
    SaveCheckpoint,
    StartSample,
    WritePiece,
)
from charrnn_tui.engine.run.run import Trained


def test_a_save_then_a_pause_ask_the_loop_to_report_save_report_and_pause_in_that_order():
    controls = Controls(Trained())
    controls.request(SaveNow())
    controls.request(Pause())
    actions = controls.serve(block=False)
    assert next(actions) == FlushProgress()  # a save never goes ahead of the losses not yet read (a NaN)
    assert actions.send(True) == SaveCheckpoint()
    assert actions.send(True) == FlushProgress()
    assert actions.send(True) == ChangeState("paused")
    with pytest.raises(StopIteration):
        actions.send(None)
    assert controls.paused


def test_a_report_that_failed_the_run_stops_the_serving_and_nothing_is_paused():
    controls = Controls(Trained())
    controls.request(Pause())
    actions = controls.serve(block=False)
    assert next(actions) == FlushProgress()
    with pytest.raises(StopIteration):
        actions.send(False)  # the report found a NaN: the loop must look at its state
    assert not controls.paused


def test_what_the_loop_raises_goes_back_to_the_one_who_asked_and_serving_goes_on():
    controls = Controls(Trained())
    told = []
    controls.request(SaveNow(), reply=told.append)
    controls.request(SetTemperature(0.01), reply=told.append)
    actions = controls.serve(block=False)
    assert next(actions) == FlushProgress()
    assert actions.send(True) == SaveCheckpoint()
    # the save raised: thrown back, it is told to its sender, and the next request is served
    assert actions.throw(OSError("disk gone")) == Apply(SetTemperature(0.05))  # raised to the lowest, sender told
    with pytest.raises(StopIteration):
        actions.send(None)
    assert [n.message for n in told][0] == "the save failed: OSError: disk gone; training goes on"
    assert "0.05 is used" in told[1].message and controls._queued_work == 0


def test_a_prompt_is_written_a_piece_a_turn_until_the_loop_says_it_has_finished():
    controls = Controls(Trained())
    controls.request(Prompt("Once", length=8))
    controls.paused = True  # no budget while paused: one piece of work per turn
    actions = controls.serve(block=False)
    assert next(actions) == StartSample(prompt="Once", source="prompt", length=8)
    pieces = iter(())  # the loop's generator: here, one with nothing to write
    with pytest.raises(StopIteration):
        actions.send(pieces)  # paused: one piece of work per turn, and starting it was this one
    for more in (True, False):
        actions = controls.serve(block=False)
        assert next(actions) == WritePiece(pieces)
        with pytest.raises(StopIteration):
            actions.send(more)  # the loop's answer: whether more is to come
        assert controls._queued_work == (1 if more else 0)  # a prompt counts as work until it has finished


def test_a_message_for_nobody_in_particular_is_announced_by_the_loop():
    controls = Controls(Trained())
    controls.request(SetTemperature(0.01))  # no reply: everyone is told
    actions = controls.serve(block=False)
    announced = next(actions)
    assert isinstance(announced, Announce) and "0.05 is used" in announced.event.message
    assert actions.send(None) == Apply(SetTemperature(0.05))


def test_a_new_setting_is_one_class_and_the_controls_hand_it_to_the_loop_unchanged(monkeypatch):
    """Issue 27's "a new request is one definition and one handler": a Setting defined here, nowhere
    else, is taken off the wire and reaches the loop as Apply(it), for its case in Trainer._apply."""

    @dataclass(frozen=True)
    class SetPatience(Setting):
        name: ClassVar[str] = "set_patience_for_this_test"
        what: ClassVar[str] = "the patience"
        seconds: float

    # as the module does for its own at import (a class defined in a test comes after that)
    monkeypatch.setitem(protocol.REQUEST_TYPES, SetPatience.name, SetPatience)
    request = protocol.parse_request({"type": "request", "name": SetPatience.name, "args": {"seconds": 2.5}})
    assert request == SetPatience(2.5) and SetPatience.described() == "the patience"
    controls = Controls(Trained())
    controls.request(request)
    actions = controls.serve(block=False)
    assert next(actions) == Apply(SetPatience(2.5))
    with pytest.raises(StopIteration):
        actions.send(None)
