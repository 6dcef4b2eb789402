"""The one fold of a run's events (engine/run_state.py), event by event, and the point of there being
one: the server's welcome, a client's attributes and the app's view say the same after the same run."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import progress_event, run_info

from charrnn_tui.engine import events as ev
from charrnn_tui.engine.history import MAX_TIMELINE, MAX_VAL, LossHistory
from charrnn_tui.engine.run_state import DEFAULT_TEMPERATURE, MAX_SAMPLES, RunState

GIB = 1 << 30


def _history(losses: list[float], timeline: list[list[float]]) -> dict:
    history = LossHistory()
    history.extend(losses)
    return {**history.to_dict(), "timeline": timeline}


# ---- each event -------------------------------------------------------------------------------------
def test_a_fresh_fold_knows_nothing_but_its_defaults():
    run = RunState()
    assert (run.info, run.state, run.reason, run.error, run.step) == (None, "starting", "", "", 0)
    assert (run.temperature, run.early_stop) == (DEFAULT_TEMPERATURE, None) and DEFAULT_TEMPERATURE == 0.8
    assert (run.epoch, run.tokens_per_s, run.lr, run.train_seconds) == (0.0, 0.0, None, 0.0)
    assert (run.eta_seconds, run.epoch_eta_seconds, run.memory_bytes, run.gpu) == (None, None, None, None)
    assert run.history.steps == 0 and run.timeline == [] and run.first_train_loss is None
    assert run.best_train_loss is None and run.val_losses == [] and run.best_val is None and run.best_step == 0
    assert (run.overfitting_since, run.last_val_bits, run.evaluated, run.validating) == (None, None, None, None)
    assert (run.saved_step, run.saved_path, run.saved_at, run.unsaved_steps) == (0, "", None, 0)
    assert run.samples == {} and run.learning


def test_the_start_of_a_fresh_run_gives_its_settings_and_nothing_saved():
    run = RunState()
    assert run.apply(ev.Started(run_info())) is None
    assert run.info == run_info() and (run.temperature, run.early_stop) == (0.6, 5)
    assert (run.step, run.saved_step, run.saved_at, run.saved_path) == (0, 0, None, "")
    assert run.history.steps == 0 and run.best_train_loss is None and run.val_losses == [] and run.samples == {}
    run.apply(ev.Started(run_info(config={})))  # a config that names neither: the defaults, not what was before
    assert (run.temperature, run.early_stop) == (DEFAULT_TEMPERATURE, None)
    run.apply(ev.Started(run_info(config={"temperature": True, "early_stop": 2.5})))  # of the wrong kind: kept
    assert (run.temperature, run.early_stop) == (DEFAULT_TEMPERATURE, None)
    run.apply(ev.Started(run_info(config=["not", "a", "dict"])))
    assert (run.temperature, run.early_stop) == (DEFAULT_TEMPERATURE, None)
    run.apply(ev.Started("not a RunInfo"))  # ignored, whole
    assert run.info == run_info(config=["not", "a", "dict"])


def test_the_start_of_a_resumed_run_brings_back_its_history():
    before = time.time()
    run = RunState()
    run.apply(ev.Started(run_info(resumed_step=4), _history([4.0, 3.0, 2.0, 3.5], [[2, 0.5], [4, 1.0]]),
                         ((2, 3.0), (4, 2.5), (3, 2.7)), ((2, "old one"), (4, "old two"))))
    assert run.step == run.saved_step == 4 and run.saved_at >= before and run.unsaved_steps == 0
    assert run.saved_path == ""  # no save since it resumed: a welcome tells of none
    assert run.history.steps == 4 and run.first_train_loss == 4.0 and run.best_train_loss == 2.0
    assert list(run.history.recent) == [4.0, 3.0, 2.0, 3.5]
    assert run.timeline == [(2, 0.5), (4, 1.0)]
    assert run.val_losses == [(2, 3.0), (4, 2.5), (3, 2.7)] and (run.best_step, run.best_val) == (4, 2.5)
    assert run.last_val_bits == pytest.approx(2.7 / math.log(2)) and run.overfitting_since is None
    assert [(s.sample_id, s.step, s.prompt, s.temperature, s.source, s.text, s.done)
            for s in run.samples.values()] == [(-2, 2, "", 0.0, "earlier", "old one", True),
                                               (-1, 4, "", 0.0, "earlier", "old two", True)]
    many = tuple((i, f"s{i}") for i in range(MAX_SAMPLES + 5))
    run.apply(ev.Started(run_info(), {}, (), many))  # a new start: what the earlier one told goes
    assert list(run.samples) == list(range(-MAX_SAMPLES, 0)) and run.samples[-1].text == f"s{MAX_SAMPLES + 4}"
    assert run.history.steps == 0 and run.timeline == [] and run.val_losses == [] and run.best_val is None
    assert run.step == 0 and run.saved_at is None and run.last_val_bits is None


def test_a_start_whose_history_cannot_be_read_starts_an_empty_one():
    run = RunState()
    run.apply(ev.Started(run_info(), {"means": [1.0], "lows": [], "highs": [], "steps": 1, "first": 1.0, "width": 1,
                                   "recent": [], "timeline": [["x", 1]]}))
    assert run.history.steps == 0 and run.timeline == [] and run.best_train_loss is None


def test_progress_moves_the_run_on():
    run = RunState()
    run.apply(ev.Started(run_info()))
    run.apply(progress_event(0, []))  # the first report, before a step: the time axis starts
    assert run.timeline == [(0, 0.0)] and run.best_train_loss is None and run.history.steps == 0
    run.apply(progress_event(3, [4.0, 3.0, 3.5]))
    assert (run.step, run.epoch, run.lr, run.tokens_per_s, run.train_seconds) == (3, 0.03, 0.01, 1003.0, 0.3)
    assert (run.eta_seconds, run.epoch_eta_seconds, run.memory_bytes, run.gpu) == (50.0, 5.0, 2048, None)
    assert run.first_train_loss == 4.0 and run.best_train_loss == 3.0 and run.history.steps == 3
    assert run.timeline == [(0, 0.0), (3, 0.3)] and run.unsaved_steps == 3
    run.apply(progress_event(5, [3.2, 2.5], gpu_utilisation=90, gpu_memory_used=5 * GIB, gpu_memory_total=8 * GIB))
    assert run.gpu == (90, 5 * GIB, 8 * GIB) and run.best_train_loss == 2.5
    run.apply(progress_event(6, [2.9]))  # a report without an NVML reading keeps the last one
    assert run.gpu == (90, 5 * GIB, 8 * GIB) and run.best_train_loss == 2.5 and run.first_train_loss == 4.0
    run.apply(progress_event(7, [2.8], gpu_utilisation=50))  # a reading without memory
    assert run.gpu == (50, 0, None)
    run.apply(progress_event(7, [], lr=0.0))  # no new step (paused): no time point; a rate of 0 learns nothing
    assert run.timeline == [(0, 0.0), (3, 0.3), (5, 0.5), (6, 0.6), (7, 0.7)] and not run.learning
    assert run.progress.lr == 0.0
    run.apply(progress_event(True, [1.0]))  # a step of the wrong kind: the report is ignored
    assert run.step == 7 and run.history.steps == 7


def test_each_report_with_steps_adds_to_the_history_of_the_runs_speed_rate_cpu_memory_and_gpu():
    run = RunState()
    run.apply(ev.Started(run_info()))
    run.apply(progress_event(0, []))  # no step yet: no point
    run.apply(progress_event(3, [4.0, 3.0, 3.5], rss_bytes=GIB))  # the first report has no CPU rate
    run.apply(progress_event(5, [3.2, 2.5], cpu_percent=180.0, rss_bytes=2 * GIB, gpu_utilisation=90,
                             gpu_memory_used=5 * GIB))
    run.apply(progress_event(5, [], cpu_percent=3.0))  # paused: no step, no point
    run.apply(progress_event(6, [2.9], cpu_percent=math.nan, rss_bytes=True))  # not numbers: not read
    reports = run.reports
    assert reports.series("tokens_per_s") == [(3, 1003.0), (5, 1005.0), (6, 1006.0)]
    assert reports.series("lr") == [(3, 0.01), (5, 0.01), (6, 0.01)]
    assert reports.series("cpu_percent") == [(5, 180.0)]
    assert reports.series("rss_bytes") == [(3, GIB), (5, 2 * GIB)]
    assert reports.series("gpu_utilisation") == [(5, 90.0)] and reports.series("gpu_memory_used") == [(5, 5 * GIB)]
    run.apply(ev.Started(run_info(), reports={"width": 1, "steps": [9], "lr": [0.5]}))  # a welcome's
    assert run.reports.series("lr") == [(9, 0.5)] and run.reports.series("tokens_per_s") == []
    run.apply(ev.Started(run_info(), reports={"width": 1, "steps": [9], "lr": [0.5, 0.1]}))  # does not add up
    assert len(run.reports) == 0


def test_evaluations_keep_the_validation_history_and_its_best():
    run = RunState()
    run.apply(ev.Validating(10, 0.5, 100))
    assert run.validating == ev.Validating(10, 0.5, 100)
    first = ev.Evaluated(10, 2.0, 2.0 / math.log(2), math.e ** 2, 2.0, True, 100, 1.0, best_step=10)
    run.apply(first)
    assert run.validating is None and run.evaluated == first and run.val_losses == [(10, 2.0)]
    assert (run.best_val, run.best_step, run.overfitting_since) == (2.0, 10, None)
    assert run.last_val_bits == pytest.approx(2.0 / math.log(2))
    run.apply(ev.Evaluated(10, 2.0, 2.885, 7.4, 2.0, True, 100, 1.0, best_step=10))  # a welcome repeats the last
    assert run.val_losses == [(10, 2.0)]
    later = ev.Evaluated(20, 2.5, 3.6, 12.2, 2.0, False, 100, 1.0, best_step=10, overfitting_since=20)
    run.apply(later)
    assert run.val_losses == [(10, 2.0), (20, 2.5)] and run.overfitting_since == 20 and run.last_val_bits == 3.6
    assert run.evaluated == later and run.best_val == 2.0 and run.best_step == 10
    run.apply(ev.Evaluated(True, 1.0, 1.4, 2.7, 1.0, True, 100, 1.0))  # a step of the wrong kind: ignored
    assert run.evaluated == later and len(run.val_losses) == 2


def test_only_a_save_of_latest_counts_as_saved():
    run = RunState()
    run.apply(progress_event(25, [1.0] * 5))
    run.apply(ev.CheckpointSaved("/runs/run/best.pt", 20, "best", 123.0))
    assert (run.saved_step, run.saved_path, run.saved_at, run.unsaved_steps) == (0, "", None, 25)
    run.apply(ev.CheckpointSaved("/runs/run/latest.pt", 24, "latest", 456.0))
    assert (run.saved_step, run.saved_path, run.saved_at, run.unsaved_steps) == (24, "/runs/run/latest.pt", 456.0, 1)
    run.apply(ev.CheckpointSaved("/runs/run/latest.pt", 30, "latest", 457.0))
    assert run.unsaved_steps == 0  # a save past the last report: none unsaved, not fewer than none


def test_states_and_the_error_a_failed_run_gives():
    run = RunState()
    run.apply(ev.StateChanged("paused", "asked\x1b[2J"))
    assert (run.state, run.reason, run.error) == ("paused", "asked\x1b[2J", "")  # the words as they came
    run.apply(ev.StateChanged("error", "boom"))
    assert (run.state, run.reason, run.error) == ("error", "boom", "boom")
    run.apply(ev.StateChanged("error", 5))
    assert (run.state, run.reason, run.error) == ("error", "", "training failed")
    run.apply(ev.StateChanged(7, "x"))  # a state of the wrong kind: ignored, whole
    assert (run.state, run.reason) == ("error", "")
    run.apply(ev.StateChanged("stopped"))
    assert (run.state, run.reason, run.error) == ("stopped", "", "")


def test_settings_take_only_a_finite_temperature_and_a_whole_number_of_evaluations():
    run = RunState()
    run.apply(ev.SettingsChanged(1.3, 7))
    assert (run.temperature, run.early_stop) == (1.3, 7)
    run.apply(ev.SettingsChanged(1, None))
    assert (run.temperature, run.early_stop) == (1.0, None) and isinstance(run.temperature, float)
    for temperature, early_stop in ((math.nan, "x"), (True, True), (math.inf, 2.0), ("1", False), (10**400, 1.5)):
        run.apply(ev.SettingsChanged(temperature, early_stop))
        assert (run.temperature, run.early_stop) == (1.0, None)
    run.apply(ev.SettingsChanged(math.inf, 3))
    assert (run.temperature, run.early_stop) == (1.0, 3)


def test_samples_are_written_as_they_come_and_the_oldest_go():
    run = RunState()
    sample = run.apply(ev.SampleStarted(1, 40, "The ", 0.7, "prompt", ("a note",)))
    assert (sample.sample_id, sample.step, sample.prompt, sample.temperature, sample.source, sample.notes) == (
        1, 40, "The ", 0.7, "prompt", ("a note",))
    assert run.apply(ev.SampleText(1, "cat", (0.5, 0.25, 0.125))) is sample
    assert run.apply(ev.SampleText(1, " sat", (0.5,), (4,))) is sample
    assert sample.text == "cat sat" and sample.probs == (0.5, 0.25, 0.125, 0.5) and sample.token_lengths == (4,)
    assert not sample.done and sample.longest_copy is None
    assert run.apply(ev.SampleFinished(1, "cat sat.", (0.1,), (8,), 5, ((0, 3),))) is sample
    assert (sample.text, sample.done, sample.probs, sample.token_lengths, sample.longest_copy, sample.copies) == (
        "cat sat.", True, (0.1,), (8,), 5, ((0, 3),))
    assert run.apply(ev.SampleText(99, "lost")) is None and run.apply(ev.SampleFinished(99, "lost")) is None
    odd = run.apply(ev.SampleStarted(2, "7", 12345, "hot", "live", (7,)))  # a peer's fields of the wrong kind
    assert (odd.step, odd.temperature, odd.prompt, odd.notes) == (0, 0.0, "", ("",))
    run.apply(ev.SampleText(2, None))
    assert odd.text == ""
    for i in range(3, MAX_SAMPLES + 5):  # one that never finishes goes in its turn
        run.apply(ev.SampleStarted(i, i, "", 0.8, "live"))
    assert len(run.samples) == MAX_SAMPLES and min(run.samples) == 5 and max(run.samples) == MAX_SAMPLES + 4


def test_what_one_client_is_told_is_not_the_runs():
    run = RunState()
    run.apply(ev.Started(run_info()))
    before = dict(vars(run))
    assert run.apply(ev.Notice("careful", "error")) is None
    assert run.apply(ev.NextTokens("ab", (("c", 0.5),))) is None
    assert vars(run) == before


def test_a_long_run_is_folded_in_bounded_memory():
    run = RunState()
    run.apply(ev.Started(run_info()))
    for k in range(3 * MAX_VAL):
        step = (k + 1) * 100
        run.apply(progress_event(step, [2.0 + (k % 7) / 10] * 100, train_seconds=float(step)))
        run.apply(ev.Evaluated(step, 1.5 + (k % 5) / 10, 2.1, 4.5, 1.5, False, 100, 0.1))
        run.apply(ev.SampleStarted(k, step, "", 0.8, "live"))
        run.apply(ev.SampleFinished(k, "text"))
    assert run.history.steps == 3 * MAX_VAL * 100 and len(run.history.recent) <= 4096
    assert len(run.history.binned()[1]) <= 2 * run.history.bins
    assert len(run.val_losses) <= MAX_VAL and run.val_losses[-1][0] == 3 * MAX_VAL * 100
    assert len(run.timeline) <= MAX_TIMELINE and run.timeline[0] == (100, 100.0)
    assert len(run.samples) == MAX_SAMPLES and run.best_train_loss == 2.0
    assert len(run.reports.steps) < 2 * run.reports.bins and run.reports.series("lr")[-1][0] == 3 * MAX_VAL * 100


# ---- the point of one fold -----------------------------------------------------------------------------
def _a_run(run_dir: Path) -> tuple[ev.Event, list[ev.Event]]:
    """A resumed run's Started, and what happens after it: every kind of event a fold keeps."""
    started = ev.Started(run_info(run_dir=str(run_dir), resumed_step=100),
                         _history([3.0 - i / 100 for i in range(100)], [[50, 5.0], [100, 10.0]]),
                         ((50, 2.5), (100, 2.2)), ((60, "old a"), (90, "old b")))
    return started, [
        ev.StateChanged("training"),
        progress_event(110, [2.0 + i / 100 for i in range(10)], gpu_utilisation=80, gpu_memory_used=GIB,
                  gpu_memory_total=8 * GIB),
        ev.SampleStarted(1, 110, "", 0.6, "live"),
        ev.SampleText(1, "the ", (0.5, 0.5, 0.5, 0.5)),
        ev.SampleText(1, "cat", (0.25, 0.25, 0.25)),
        ev.SampleFinished(1, "the cat", (0.5,) * 7, (), 3, ((0, 3),)),
        ev.Notice("only for some", "error"),
        ev.Validating(120, 0.5, 1000),
        ev.Evaluated(120, 2.0, 2.0 / math.log(2), math.e ** 2, 2.0, True, 1000, 1.0, best_step=120),
        ev.CheckpointSaved(str(run_dir / "latest.pt"), 120, "latest", 1234.5),
        ev.CheckpointSaved(str(run_dir / "best.pt"), 120, "best", 1234.6),
        progress_event(130, [1.9] * 10, cpu_percent=95.0, rss_bytes=GIB),  # no NVML reading: the last one stands
        ev.SettingsChanged(1.1, None),
        ev.NextTokens("ab", (("c", 0.5),)),
        ev.SampleStarted(2, 130, "Once", 1.1, "prompt", ("a note",)),
        ev.SampleText(2, "upon", (0.9, 0.8, 0.7, 0.6)),  # under way
        ev.Validating(140, 0.25, 1000),  # under way
        ev.StateChanged("stopped", "asked"),
    ]


def _facts(run) -> dict:
    """Every fact of a fold, as values (the last report's are read through its properties)."""
    return {
        "info": run.info, "state": run.state, "reason": run.reason, "error": run.error, "step": run.step,
        "epoch": run.epoch, "tokens_per_s": run.tokens_per_s, "lr": run.lr, "train_seconds": run.train_seconds,
        "eta": (run.eta_seconds, run.epoch_eta_seconds), "memory": run.memory_bytes, "gpu": run.gpu,
        "settings": (run.temperature, run.early_stop), "history": run.history.to_dict(), "timeline": run.timeline,
        "reports": run.reports.to_dict(),
        "train": (run.first_train_loss, run.best_train_loss), "val": run.val_losses,
        "best": (run.best_val, run.best_step, run.overfitting_since, run.last_val_bits),
        "evaluated": run.evaluated, "validating": run.validating,
        "saved": (run.saved_step, run.saved_path, run.saved_at),
        "samples": [(s.sample_id, s.step, s.prompt, s.temperature, s.source, s.text, s.notes, s.done, s.probs,
                     s.token_lengths, s.longest_copy, s.copies) for s in run.samples.values()],
    }


def test_the_server_a_client_and_the_app_fold_a_run_alike_from_its_start_or_attaching_late(tmp_path, monkeypatch):
    """Through a real server and its socket: a client and an app view that watch from the start, and
    a client and a view that attach at the end, know what the server's record knows."""
    from charrnn_tui.engine.serve import client as client_module
    from charrnn_tui.engine.serve import server as server_module
    from charrnn_tui.engine.serve.client import EngineClient
    from charrnn_tui.tui.run_view import RunView

    monkeypatch.setattr(server_module, "VIEWER_PROGRESS", 0.0)  # every report to the clients, none merged
    monkeypatch.setattr(client_module, "is_live", lambda run_dir: True)  # no engine holds the run's lock here
    server = server_module.RunServer(SimpleNamespace(), required=True)
    started, rest = _a_run(tmp_path)
    server.handle_event(started)  # the server listens on the run's start
    early, early_view = EngineClient(tmp_path, viewer=True), RunView()
    early.on_event = early_view.apply
    early.connect()
    watching = threading.Thread(target=early.run)
    watching.start()
    try:
        for event in rest:
            server.handle_event(event)
        late, late_view = EngineClient(tmp_path, viewer=True), RunView()
        for event in late.connect():
            late_view.apply(event)
        late.close()
    finally:
        server.close()
        watching.join(10)
    assert not watching.is_alive()

    record = server.record
    facts = _facts(record)
    assert facts["gpu"] == (80, GIB, 8 * GIB) and facts["settings"] == (1.1, None) and facts["step"] == 130
    assert facts["state"] == "stopped" and facts["validating"] == ev.Validating(140, 0.25, 1000)
    assert [s[0] for s in facts["samples"]] == [-2, -1, 1, 2] and facts["samples"][3][7] is False
    assert facts["saved"] == (120, str(tmp_path / "latest.pt"), 1234.5)
    for fold in (early.run_state, early_view, late.run_state, late_view):
        assert _facts(fold) == facts
    for client in (early, late):
        assert (client.state, client.step, client.temperature, client.early_stop, client.error) == (
            "stopped", 130, 1.1, None, "")
    assert record.status()["step"] == 130 and record.status()["best_val"] == 2.0
    assert early_view.errors == ["only for some"] and late_view.errors == []  # a Notice is the view's, not the run's


def test_a_late_welcome_leaves_out_a_comparison_of_temperatures_and_keeps_the_latest_samples():
    from charrnn_tui.engine.serve.server import MAX_IN_FLIGHT, RunRecord
    from charrnn_tui.engine.serve.server import MAX_SAMPLES as REPLAYED
    from charrnn_tui.tui.run_view import RunView

    record = RunRecord()
    record.apply(ev.Started(run_info()))
    for i in range(REPLAYED + 5):
        record.apply(ev.SampleStarted(i, i, "", 0.8, "live"))
        record.apply(ev.SampleFinished(i, f"sample {i}"))
    record.apply(ev.SampleStarted(100, 9, "ab", 0.5, "temperatures"))
    record.apply(ev.SampleFinished(100, "cd"))
    for i in range(200, 200 + MAX_IN_FLIGHT + 2):  # some never finish (failed half-way)
        record.apply(ev.SampleStarted(i, 9, "", 0.8, "live"))
        record.apply(ev.SampleText(i, "x"))
    view = RunView()
    for event in record.snapshot():
        view.apply(event)
    assert [s.sample_id for s in view.samples.values()] == [
        *range(5, REPLAYED + 5), *range(202, 200 + MAX_IN_FLIGHT + 2)]
    assert all(s.done for s in view.samples.values() if s.sample_id < 200)
    assert not any(s.done for s in view.samples.values() if s.sample_id >= 200)
    assert view.samples[203].text == "x"
