"""What a run keeps of its text (engine/text/run_text.py): a fingerprint of its corpus, told against the
file on a resume and by `eval`, and its validation split, so that `eval RUN` works without the file."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from charrnn_tui.engine.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint
from charrnn_tui.engine.cli.main import main, parse, run_eval
from charrnn_tui.engine.errors import CheckpointError
from charrnn_tui.engine.events import Notice, Progress
from charrnn_tui.engine.protocol import Stop
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import LATEST
from charrnn_tui.engine.text.run_text import (
    VALIDATION,
    TextFingerprint,
    describe_change,
    load_validation,
    save_validation,
)

TEXT = "the quick brown fox jumps over the lazy dog. " * 60


def train(stop_at: int | None = None, **kwargs) -> tuple[Trainer, list]:
    """Train (or resume) until max-steps or `stop_at`, saving at the end; the trainer and its events."""
    events: list = []
    trainer: Trainer

    def on_event(e):
        events.append(e)
        if stop_at is not None and isinstance(e, Progress) and e.step >= stop_at:
            trainer.request(Stop(save=True))

    trainer = Trainer(on_event=on_event, **kwargs)
    trainer.run()
    return trainer, events


@pytest.fixture
def run(tmp_path, runs_dir):
    """A run of 30 steps (of a planned 200) on a corpus file; its checkpoint path."""
    corpus = tmp_path / "fox.txt"
    corpus.write_text(TEXT)
    config = tiny_config(corpus, max_steps=200, eval_interval=10, report_interval=1e-9)
    train(stop_at=30, config=config, runs_dir=runs_dir, run_name="r")
    return runs_dir / "r" / LATEST


def corpus_of(run) -> Path:
    return run.parent.parent.parent / "fox.txt"  # RUNS/r/latest.pt -> the tmp_path the fixture wrote it in


def evaluate_run(runs_dir, capsys) -> tuple[str, str]:
    out = io.StringIO()
    assert run_eval(parse(["eval", "r", "--runs-dir", str(runs_dir)]), out) == 0
    return out.getvalue(), capsys.readouterr().err


# ---- the fingerprint -----------------------------------------------------------------------------
def test_a_fingerprint_tells_the_same_text_from_a_grown_changed_or_shrunk_one():
    stored = TextFingerprint.of("abcdef" * 1000)
    assert describe_change(stored, "abcdef" * 1000) is None
    assert describe_change(stored, "abcdef" * 1000 + "x" * 12_345) == "grew by 12,345 characters at the end"
    assert describe_change(stored, "X" + "abcdef" * 1000) == "changed and grew by 1 character"
    assert describe_change(stored, "abcdef" * 999) == "shrank by 6 characters"
    assert describe_change(stored, "abcdeF" + "abcdef" * 999) == "changed (the same length, 6,000 characters)"


def test_a_fingerprint_is_the_same_however_the_text_is_sliced_to_hash_it(monkeypatch):
    from charrnn_tui.engine.text import run_text

    text = "é, \ud800 and ☃ " * 50  # multi-byte characters and a lone surrogate
    whole = TextFingerprint.of(text)
    monkeypatch.setattr(run_text, "_HASH_CHUNK", 7)
    assert TextFingerprint.of(text) == whole and whole.chars == len(text)


def test_a_checkpoint_from_before_fingerprints_holds_none():
    assert TextFingerprint.from_dict({"chars": "3", "sha256": "ab"}) is None
    assert TextFingerprint.from_dict(None) is None
    assert TextFingerprint.from_dict({"chars": 3, "sha256": "ab"}) == TextFingerprint(3, "ab")


# ---- resuming ------------------------------------------------------------------------------------
def test_a_resume_after_text_was_appended_says_so_trains_on_it_and_records_it(run):
    corpus = corpus_of(run)
    with corpus.open("a") as f:
        f.write("the lazy dog naps. " * 20)
    trainer, events = train(stop_at=40, resume=run)
    notices = [e.message for e in events if isinstance(e, Notice) and "corpus" in e.message]
    assert notices == [f"corpus {corpus} grew by 380 characters at the end since the checkpoint (step 30): the run "
                       "goes on with the text as it is now and validates on its last 10% (earlier figures scored "
                       "the old text)"]
    assert trainer.trained.step == 40 and trainer.state == "stopped"  # trained on, and saved
    now = TextFingerprint.of(corpus.read_text())
    assert TextFingerprint.from_dict(load_checkpoint(run)["corpus_fingerprint"]) == now  # recorded from here on
    assert load_validation(run.parent, len(trainer.built.vocab)).fingerprint == now
    _, events = train(stop_at=45, resume=run)  # the same text again: nothing to say
    assert not [e for e in events if isinstance(e, Notice) and "corpus" in e.message]


def test_a_resume_from_a_checkpoint_without_a_fingerprint_says_nothing_and_starts_keeping_one(run):
    checkpoint = load_checkpoint(run)
    del checkpoint["corpus_fingerprint"]
    torch.save(checkpoint, run)
    (run.parent / VALIDATION).unlink()
    (corpus_of(run)).write_text(TEXT + "the end. ")
    trainer, events = train(stop_at=35, resume=run)
    assert not [e for e in events if isinstance(e, Notice) and "corpus" in e.message]
    assert load_validation(run.parent, len(trainer.built.vocab)) is not None


def test_a_resume_on_a_corpus_with_characters_the_run_never_saw_is_one_line_naming_the_change(run):
    corpus = corpus_of(run)
    corpus.write_text(TEXT + "Zebra!")
    before = run.read_bytes()
    with pytest.raises(CheckpointError) as e:
        train(resume=run)
    message = str(e.value)  # the middle is the vocabulary's own words for the first unknown character
    assert message.startswith(f"corpus {corpus} grew by 6 characters at the end since the checkpoint: ")
    assert message.endswith("; put back the text it trained on to resume, or start a new run on this one")
    assert "'Z'" in message and "\n" not in message
    assert run.read_bytes() == before


def test_a_resume_whose_corpus_file_is_gone_is_one_line_saying_so(run, capsys):
    corpus = corpus_of(run)
    corpus.unlink()
    files = sorted(p.name for p in run.parent.iterdir())
    assert main(["train", "--resume", str(run), "--max-steps", "10", "--headless"]) == 2
    assert capsys.readouterr().err == (f"charrnn-tui: error: corpus {corpus} of run r is gone: put the file back "
                                       f"there to resume (`charrnn-tui eval r --runs-dir {run.parent.parent}` still "
                                       "scores the validation text the run kept)\n")
    assert sorted(p.name for p in run.parent.iterdir()) == files


# ---- the validation text the run keeps --------------------------------------------------------------
def test_eval_of_a_run_whose_corpus_file_is_gone_prints_the_figures_it_printed_before(run, runs_dir, capsys):
    before, _ = evaluate_run(runs_dir, capsys)
    assert "validation split (the last 10%)" in before and "bits/char" in before
    (corpus_of(run)).unlink()
    after, err = evaluate_run(runs_dir, capsys)
    assert after == before and err == ""


def test_eval_of_a_run_whose_corpus_changed_scores_what_the_run_kept_and_says_so(run, runs_dir, capsys):
    before, _ = evaluate_run(runs_dir, capsys)
    corpus = corpus_of(run)
    corpus.write_text("a new text altogether, " * 100)
    after, err = evaluate_run(runs_dir, capsys)
    assert after == before
    assert err == (f"note: corpus {corpus} shrank by 400 characters since training; scoring the validation text "
                   "the run kept\n")


def test_eval_of_a_run_without_kept_text_reads_its_corpus_or_says_it_is_gone(run, runs_dir, capsys):
    before, _ = evaluate_run(runs_dir, capsys)
    (run.parent / VALIDATION).unlink()  # a run from before validation text was kept
    assert evaluate_run(runs_dir, capsys)[0] == before
    corpus = corpus_of(run)
    corpus.unlink()
    assert main(["eval", "r", "--runs-dir", str(runs_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"charrnn-tui: error: {corpus}: no such file or folder") and err.count("\n") == 1
    assert err.endswith("; run r predates kept validation text, so `eval` needs its corpus: put the file back, "
                        "or give a FILE to score\n")


def test_the_kept_validation_text_is_the_whole_split_user_only_and_no_bigger_than_it(run):
    kept = load_validation(run.parent, 40)
    assert len(kept.ids) == len(TEXT) // 10 and kept.ids.dtype == torch.uint8
    assert kept.source == str(corpus_of(run))
    path = run.parent / VALIDATION
    assert path.stat().st_mode & 0o777 == 0o600
    # the split's 270 bytes and torch.save's own (about 1.9 kB), not the whole corpus's ids its slice shared
    assert path.stat().st_size < len(TEXT)


def rewrite(path, **changes):
    data = {**load_checkpoint(path), **changes}
    torch.save(data, path)


@pytest.mark.parametrize(("changes", "why"), [
    ({"ids": torch.tensor([1.0, 2.0, 3.0])}, "its ids are not a 1-D tensor of integers"),
    ({"ids": torch.tensor([[1, 2], [3, 4]])}, "its ids are not a 1-D tensor of integers"),
    ({"ids": [1, 2, 3]}, "its ids are not a 1-D tensor of integers"),
    ({"ids": torch.tensor([1, 2, 40])}, "ids outside the run's vocabulary of 40 tokens"),
    ({"ids": torch.tensor([1, -1, 2])}, "ids outside the run's vocabulary of 40 tokens"),
    ({"ids": torch.tensor([1])}, "1 id, too few to score (at least 2)"),
    ({"kind": "model"}, "not a run's validation text"),
    ({"corpus": "fox"}, "not a run's validation text"),
])
def test_a_spoilt_validation_file_is_one_line_naming_it_and_what_to_do(run, changes, why):
    path = run.parent / VALIDATION
    rewrite(path, **changes)
    with pytest.raises(CheckpointError) as e:
        load_validation(run.parent, 40)
    assert str(e.value) == f"{path}: {why}; delete it to score the run's corpus file instead"


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("content", [b"not a pickle at all", b"", "hostile", "plain"])
def test_an_unreadable_or_hostile_validation_file_is_refused_in_one_line_by_eval(run, runs_dir, content, capsys):
    path = run.parent / VALIDATION
    if content == "hostile":
        payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "ids": Payload()}
        path.write_bytes(pickle.dumps(payload, protocol=2))
    elif content == "plain":
        torch.save(torch.arange(10), path)  # a bare tensor: not what a run writes
    else:
        path.write_bytes(content)
    assert main(["eval", "r", "--runs-dir", str(runs_dir)]) == 2
    captured = capsys.readouterr()
    assert "pwned" not in captured.out and captured.out == ""
    assert captured.err.startswith(f"charrnn-tui: error: {path}: ") and captured.err.count("\n") == 1
    assert captured.err.endswith("; delete it to score the run's corpus file instead\n")


def test_a_validation_file_that_cannot_be_written_is_one_line_and_nothing_is_left(tmp_path):
    folder = tmp_path / "gone"  # no such folder: the write fails
    with pytest.raises(CheckpointError) as e:
        save_validation(folder, torch.tensor([1, 2, 3]), "fox", TextFingerprint.of("abc"))
    assert str(e.value) == f"cannot keep the validation text in {folder / VALIDATION} (No such file or directory)"


def test_eval_tokens_apply_to_the_kept_text_as_training_applied_them(run, runs_dir, capsys):
    """`eval` reads the first --eval-tokens of the kept split, as training did; all of it for 0."""
    checkpoint = load_checkpoint(run)
    checkpoint["config"]["eval_tokens"] = 100
    torch.save(checkpoint, run)
    (corpus_of(run)).unlink()  # the kept text it is, not the corpus cut again
    assert ": 99 chars predicted" in evaluate_run(runs_dir, capsys)[0]
    checkpoint["config"]["eval_tokens"] = 0
    torch.save(checkpoint, run)
    assert f": {len(TEXT) // 10 - 1} chars predicted" in evaluate_run(runs_dir, capsys)[0]
