"""The app's view of a run (tui/run_view.py), event by event: every field the screens draw from."""

import math

import pytest
from helpers import progress_event, run_info

from charrnn_tui.engine import events as ev
from charrnn_tui.tui.run_view import MAX_ERRORS, MAX_SAMPLES, TRAIN_WINDOW, RunView


def test_a_fresh_view_is_starting_with_nothing_learnt():
    view = RunView()
    assert (view.state, view.step, view.lr, view.temperature, view.unsaved_steps) == ("starting", 0, None, 0.8, 0)
    assert view.learning and view.unit == "chars"  # no rate yet: not said to be frozen


def test_the_start_of_a_fresh_run_takes_its_settings():
    view = RunView()
    version = view.version
    assert view.apply(ev.Started(run_info())) is None
    assert view.version == version + 1
    assert view.info.run_name == "run" and view.temperature == 0.6 and view.early_stop == 5
    assert view.step == view.saved_step == 0 and view.saved_at is None
    assert view.val_losses == [] and view.best_val is None and view.first_train_loss is None
    assert view.unit == "chars"
    view.apply(ev.Started(run_info(token_kind="word", config={})))
    # none given: the run samples at the default, and stops early never (as the server and a client say)
    assert view.unit == "tokens" and view.temperature == 0.8 and view.early_stop is None


def test_the_start_of_a_resumed_run_brings_back_its_history():
    history = {"steps": 4, "first": 4.0, "width": 1, "means": [4.0, 3.0, 2.0, 3.5], "lows": [4.0, 3.0, 2.0, 3.5],
               "highs": [4.0, 3.0, 2.0, 3.5], "recent": [3.0, 2.0, 3.5], "timeline": [[2, 0.5], [4, 1.0]]}
    view = RunView()
    view.apply(ev.Started(run_info(resumed_step=4), history, ((2, 3.0), (4, 2.5), (3, 2.7)),
                          ((2, "old one"), (4, "old two"))))
    assert view.step == view.saved_step == 4 and view.saved_at is not None and view.unsaved_steps == 0
    assert list(view.train_losses) == [3.0, 2.0, 3.5]
    assert view.history.steps == 4 and view.history.first == 4.0
    assert view.timeline == [(2, 0.5), (4, 1.0)]
    assert view.first_train_loss == 4.0 and view.best_train_loss == 2.0  # the lowest of the run, not the recent
    assert view.val_losses == [(2, 3.0), (4, 2.5), (3, 2.7)]
    assert (view.best_step, view.best_val) == (4, 2.5)
    assert view.last_val_bits == pytest.approx(2.7 / math.log(2))  # the last point, in bits
    assert [(s.sample_id, s.step, s.prompt, s.temperature, s.text, s.source, s.done)
            for s in view.samples.values()] == [(-2, 2, "", 0.0, "old one", "earlier", True),
                                                (-1, 4, "", 0.0, "old two", "earlier", True)]


def test_progress_moves_the_run_on_and_keeps_its_best_training_loss():
    view = RunView()
    view.apply(ev.Started(run_info()))
    view.apply(progress_event(3, [4.0, 3.0, 3.5]))
    assert (view.step, view.epoch, view.lr, view.tokens_per_s, view.train_seconds) == (3, 0.03, 0.01, 1003.0, 0.3)
    assert (view.eta_seconds, view.epoch_eta_seconds, view.memory_bytes, view.gpu) == (50.0, 5.0, 2048, None)
    assert view.first_train_loss == 4.0 and view.best_train_loss == 3.0
    assert list(view.train_losses) == [4.0, 3.0, 3.5] and view.history.steps == 3
    assert view.timeline == [(3, 0.3)] and view.unsaved_steps == 3
    view.apply(progress_event(5, [3.2, 3.1], epoch_eta_seconds=4.0, gpu_utilisation=90, gpu_memory_used=5,
                         gpu_memory_total=10))
    assert view.best_train_loss == 3.0 and view.first_train_loss == 4.0  # never rises, never moves
    assert view.epoch_eta_seconds == 4.0 and view.gpu == (90, 5, 10)
    view.apply(progress_event(6, [2.5], gpu_utilisation=50))  # NVML without a memory figure
    assert view.best_train_loss == 2.5 and view.gpu == (50, 0, None)
    view.apply(progress_event(6, [], lr=0.0))  # a report with no new step (paused): no new time point
    assert view.timeline == [(3, 0.3), (5, 0.5), (6, 0.6)] and not view.learning
    view.apply(progress_event(6, [], lr=1e-9))
    assert view.learning


def test_the_training_window_keeps_the_latest_losses():
    view = RunView()
    view.apply(progress_event(TRAIN_WINDOW + 10, [float(i) for i in range(TRAIN_WINDOW + 10)]))
    assert len(view.train_losses) == TRAIN_WINDOW and view.train_losses[0] == 10.0
    assert view.timeline == [(TRAIN_WINDOW + 10, (TRAIN_WINDOW + 10) / 10)]
    empty = RunView()
    empty.apply(progress_event(0, []))  # the first report, before a step: the chart's time axis starts
    assert empty.timeline == [(0, 0.0)] and empty.first_train_loss is None and empty.best_train_loss is None


def test_evaluations_validation_and_saves():
    view = RunView()
    view.apply(ev.Validating(10, 0.5, 100))
    assert view.validating == ev.Validating(10, 0.5, 100)
    view.apply(ev.Evaluated(10, 2.0, 2.0 / math.log(2), math.e ** 2, 2.0, True, 100, 1.0, best_step=10))
    assert view.validating is None and view.val_losses == [(10, 2.0)]
    assert (view.best_val, view.best_step, view.overfitting_since) == (2.0, 10, None)
    assert view.last_val_bits == pytest.approx(2.0 / math.log(2))
    view.apply(ev.Evaluated(10, 2.0, 2.885, 7.4, 2.0, True, 100, 1.0, best_step=10))  # an attach repeats it
    assert view.val_losses == [(10, 2.0)]
    view.apply(ev.Evaluated(20, 2.5, 3.6, 12.2, 2.0, False, 100, 1.0, best_step=10, overfitting_since=20))
    assert view.val_losses == [(10, 2.0), (20, 2.5)] and view.overfitting_since == 20 and view.last_val_bits == 3.6
    view.apply(progress_event(25, [1.0] * 5))
    view.apply(ev.CheckpointSaved("/runs/run/best.pt", 20, "best", 123.0))  # only latest counts as saved
    assert (view.saved_step, view.saved_path, view.saved_at, view.unsaved_steps) == (0, "", None, 25)
    view.apply(ev.CheckpointSaved("/runs/run/latest.pt", 24, "latest", 456.0))
    assert (view.saved_step, view.saved_path, view.saved_at, view.unsaved_steps) == (24, "/runs/run/latest.pt",
                                                                                    456.0, 1)
    view.apply(ev.CheckpointSaved("/runs/run/latest.pt", 30, "latest", 457.0))
    assert view.unsaved_steps == 0  # a save past the last report: none unsaved, not fewer than none


def test_states_settings_and_errors():
    view = RunView()
    view.apply(ev.StateChanged("paused", "asked\x1b[2J"))
    assert view.state == "paused" and view.reason == "asked\N{SYMBOL FOR ESCAPE}[2J"
    view.apply(ev.SettingsChanged(1.3, 7))
    assert (view.temperature, view.early_stop) == (1.3, 7)
    view.apply(ev.SettingsChanged(1, None))
    assert (view.temperature, view.early_stop) == (1.0, None) and isinstance(view.temperature, float)
    view.apply(ev.SettingsChanged(float("nan"), "x"))  # from a peer: nothing that is not a setting
    assert (view.temperature, view.early_stop) == (1.0, None)
    view.apply(ev.SettingsChanged(math.inf, 3))
    assert (view.temperature, view.early_stop) == (1.0, 3)
    view.apply(ev.Notice("only a word", "information"))
    view.apply(ev.Notice("careful", "warning"))
    assert view.errors == []
    for i in range(MAX_ERRORS + 3):
        view.apply(ev.Notice(f"bad {i}", "error"))
    assert len(view.errors) == MAX_ERRORS and view.errors[0] == "bad 3" and view.errors[-1] == f"bad {MAX_ERRORS + 2}"


def test_samples_are_written_as_they_come_and_the_oldest_go():
    view = RunView()
    sample = view.apply(ev.SampleStarted(1, 40, "The ", 0.7, "prompt", ("a note",)))
    assert (sample.sample_id, sample.step, sample.prompt, sample.temperature, sample.source, sample.notes) == (
        1, 40, "The ", 0.7, "prompt", ("a note",))
    assert view.apply(ev.SampleText(1, "cat", (0.5, 0.25, 0.125))) is sample
    assert view.apply(ev.SampleText(1, " sat", (0.5,), (4,))) is sample
    assert sample.text == "cat sat" and sample.probs == (0.5, 0.25, 0.125, 0.5) and sample.token_lengths == (4,)
    assert not sample.done and sample.longest_copy is None
    assert view.apply(ev.SampleFinished(1, "cat sat.", (0.1,), (8,), 5, ((0, 3),))) is sample
    assert (sample.text, sample.done, sample.probs, sample.token_lengths, sample.longest_copy, sample.copies) == (
        "cat sat.", True, (0.1,), (8,), 5, ((0, 3),))
    assert view.apply(ev.SampleText(99, "lost")) is None and view.apply(ev.SampleFinished(99, "lost")) is None
    odd = view.apply(ev.SampleStarted(2, "7", "p", "hot", "live"))  # a peer's fields of the wrong kind
    assert odd.step == 0 and odd.temperature == 0.0
    for i in range(3, MAX_SAMPLES + 5):
        view.apply(ev.SampleStarted(i, i, "", 0.8, "live"))
    assert len(view.samples) == MAX_SAMPLES and min(view.samples) == 5 and max(view.samples) == MAX_SAMPLES + 4


def test_events_the_view_does_not_draw_change_nothing_but_the_version():
    view = RunView()
    before = (view.state, view.step, view.samples, view.errors)
    version = view.version
    assert view.apply(ev.NextTokens("ab", (("c", 0.5),))) is None
    assert view.version == version + 1 and (view.state, view.step, view.samples, view.errors) == before


def test_a_runs_words_are_made_printable_but_its_folder_is_kept_as_it_names_it():
    view = RunView()
    view.apply(ev.Started(run_info(run_name="a\x1b]0;title\x07b", corpus_name="c\x1b[2J", run_dir="/runs/x\x1by")))
    assert "\x1b" not in view.info.run_name and view.info.run_name.startswith("a") and "\x07" not in view.info.run_name
    assert "\x1b" not in view.info.corpus_name
    assert view.info.run_dir == "/runs/x\x1by"  # shown through printable where it is drawn
    assert view.info.layers == 2 and view.info.config == {"temperature": 0.6, "early_stop": 5}


def test_a_peers_sample_fields_of_the_wrong_kind_become_empty_text():
    view = RunView()
    sample = view.apply(ev.SampleStarted(1, 3, 12345, 0.5, "prompt", (7,)))
    assert sample.prompt == "" and sample.notes == ("",)
    view.apply(ev.SampleText(1, None))
    assert sample.text == ""
