"""The run listing's words: what `runs --json` gives, and why a run has no checkpoint to load yet.
Run folders are made by hand (status.json, and the lock held here for a live run)."""

import contextlib
from pathlib import Path

import pytest

from charrnn_tui.engine.errors import ConfigError
from charrnn_tui.engine.runs import (
    RunEntry,
    RunLock,
    check_new_run_name,
    no_checkpoint_message,
    run_entry,
    write_status,
)


def _run(runs_dir: Path, name: str, **status) -> Path:
    folder = runs_dir / name
    folder.mkdir(mode=0o700, parents=True)
    write_status(folder, status)
    return folder


@contextlib.contextmanager
def _live(folder: Path):
    lock = RunLock(folder).acquire()
    try:
        yield
    finally:
        lock.release()


def test_a_run_entry_as_json_has_every_field_under_its_own_name(tmp_path):
    entry = RunEntry(name="n", path=tmp_path / "n", state="training", live=True, step=7, best_val=1.5,
                     corpus="c.txt", model="lstm 2x64", viewers=2, updated=12.5, tokens="word", world_size=3,
                     problem="p")
    assert entry.to_dict() == {
        "name": "n", "path": str(tmp_path / "n"), "state": "training", "live": True, "step": 7, "best_val": 1.5,
        "corpus": "c.txt", "model": "lstm 2x64", "viewers": 2, "updated": 12.5, "tokens": "word", "world_size": 3,
        "problem": "p"}
    assert entry.model_label == "lstm 2x64 (3 ranks)"


def test_a_run_that_ended_before_its_first_save_has_nothing_to_load(runs_dir):
    folder = _run(runs_dir, "done", state="finished", step=1234)
    assert no_checkpoint_message(folder) == \
        "run done finished at step 1,234 before saving a checkpoint: nothing to load"
    folder = _run(runs_dir, "odd", state="resting")  # a state with no words of its own: itself
    assert no_checkpoint_message(folder) == "run odd resting before saving a checkpoint: nothing to load"
    folder = _run(runs_dir, "err", state="error", step=0)
    assert no_checkpoint_message(folder) == "run err ended with an error at step 0 before saving a checkpoint: " \
        "nothing to load"


def test_a_live_run_without_a_checkpoint_says_when_its_first_comes(runs_dir):
    hint = f"to save one now, press c in `charrnn-tui attach live --runs-dir {runs_dir}`"
    folder = _run(runs_dir, "live", state="training", step=1250, checkpoint_interval=500, max_steps=0)
    with _live(folder):
        assert no_checkpoint_message(folder) == (
            "run live is training and has saved no checkpoint yet: its first comes at step 1,500 (at step 1,250 by "
            f"its last report); {hint}")
        write_status(folder, {"state": "training", "step": 1500, "checkpoint_interval": 500})
        assert "its first comes at step 2,000 (at step 1,500 " in no_checkpoint_message(folder)
        write_status(folder, {"state": "training", "step": 1250, "checkpoint_interval": 500, "max_steps": 1300})
        assert "its first comes at step 1,300 (at step 1,250 " in no_checkpoint_message(folder)  # the end comes first
        write_status(folder, {"state": "training", "step": 1300, "checkpoint_interval": 0, "max_steps": 1300})
        assert no_checkpoint_message(folder) == (  # at its end already: the save is the final one
            "run live is training (at step 1,300 by its last report) and saves its first checkpoint when it ends "
            f"(--checkpoint-interval 0); {hint}")
        write_status(folder, {"state": "training", "checkpoint_interval": 1})  # no report yet: from step 0
        assert "its first comes at step 1 (at step 0 by its last report)" in no_checkpoint_message(folder)
        write_status(folder, {"state": "training", "checkpoint_interval": 0, "max_steps": 40})
        assert "its first comes at step 40 (at step 0 " in no_checkpoint_message(folder)
        write_status(folder, {"state": "paused", "step": 3, "checkpoint_interval": 500})
        assert no_checkpoint_message(folder) == f"run live is paused at step 3 and has saved no checkpoint yet; {hint}"
        write_status(folder, {"state": "training", "step": 3})  # an engine from before status said its interval
        assert no_checkpoint_message(folder) == \
            f"run live is training at step 3 and has saved no checkpoint yet; {hint}"


def test_a_folder_that_is_no_run_or_is_unreadable_says_so(runs_dir):
    empty = runs_dir / "empty"
    empty.mkdir(parents=True)
    assert no_checkpoint_message(empty) == f"{empty}: run folder has no latest.pt"
    bad = _run(runs_dir, "bad", state="training", step="many")
    assert no_checkpoint_message(bad) == \
        f"{bad}: run folder has no latest.pt (and status.json: step is not a whole number ('many'))"


def test_a_taken_name_is_refused_with_where_it_is(runs_dir):
    _run(runs_dir, "taken", state="finished")
    with pytest.raises(ConfigError) as refused:
        check_new_run_name("taken", runs_dir)
    assert str(refused.value) == (f"run taken already exists in {runs_dir}: continue it with --resume taken, or "
                                  "choose another --name")
    check_new_run_name("free", runs_dir)
    check_new_run_name(None, runs_dir)


def test_a_run_entrys_state_follows_its_lock(runs_dir):
    folder = _run(runs_dir, "r", state="training", step=5, viewers=2, tokens="word", world_size=2)
    entry = run_entry(folder)
    assert (entry.state, entry.live, entry.viewers, entry.tokens, entry.world_size) == ("crashed", False, 0, "word", 2)
    with _live(folder):
        entry = run_entry(folder)
        assert (entry.state, entry.live, entry.viewers, entry.step) == ("training", True, 2, 5)
        write_status(folder, {"state": "finished", "tokens": "bytes"})
        entry = run_entry(folder)
        assert (entry.state, entry.tokens, entry.world_size) == ("starting", None, 1)
