import random

import pytest
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_tui.engine.text.novelty import NoveltyIndex, suffix_array


def brute_longest_copy(text: str, corpus: str) -> int:
    best = 0
    for i in range(len(text)):
        for j in range(i + best + 1, len(text) + 1):
            if text[i:j] in corpus:
                best = j - i
            else:
                break
    return best


@settings(max_examples=examples(200), deadline=None)
@given(corpus=st.text(alphabet="ab c\né", max_size=200))
def test_the_suffix_array_sorts_every_suffix(corpus):
    assert list(suffix_array(corpus)) == sorted(range(len(corpus)), key=lambda i: corpus[i:])


@settings(max_examples=examples(200), deadline=None)
@given(corpus=st.text(alphabet="abcd \n", min_size=1, max_size=300), text=st.text(alphabet="abcdez \n", max_size=80))
def test_longest_copy_matches_a_brute_force_search(corpus, text):
    index = NoveltyIndex(corpus)
    assert index.novelty(text).longest_copy == brute_longest_copy(text, corpus)
    assert index.matches(text) == [_longest_at(text, i, corpus) for i in range(len(text))]


def _longest_at(text: str, i: int, corpus: str) -> int:
    n = 0
    while i + n < len(text) and text[i : i + n + 1] in corpus:
        n += 1
    return n


def test_copies_at_the_edges_of_the_corpus_and_none_at_all():
    rng = random.Random(3)
    corpus = "".join(rng.choice("abcdefgh ") for _ in range(5000))
    index = NoveltyIndex(corpus)
    head, tail = corpus[:30], corpus[-25:]
    text = "ZZ" + head + "ZZZ" + tail + "Z"
    result = index.novelty(text, min_span=20)
    assert result.longest_copy == 30
    assert result.spans == [(2, 32), (35, 60)]
    assert index.novelty("ZZZZ").longest_copy == 0 and index.novelty("ZZZZ").spans == []
    assert index.novelty("").longest_copy == 0


def test_a_memorised_line_is_found_in_tiny_shakespeare():
    from charrnn_tui.engine.text.corpus import load_corpus

    corpus = load_corpus("shakespeare").text
    index = NoveltyIndex(corpus)
    line = "First Citizen:\nBefore we proceed any further, hear me speak."
    result = index.novelty("xq" + line + " qx")
    assert result.longest_copy >= len(line) and result.spans[0][0] <= 2


def test_too_big_a_corpus_is_refused_not_indexed(monkeypatch):
    from charrnn_tui.engine.text import novelty

    monkeypatch.setattr(novelty, "MAX_CORPUS_CHARS", 10)
    with pytest.raises(MemoryError, match="11 characters"):
        NoveltyIndex("x" * 11)


def test_sample_json_gives_the_text_and_what_was_copied(tmp_path):
    import json

    from helpers import run_cli

    corpus = tmp_path / "fox.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    runs = tmp_path / "runs"
    trained = run_cli("train", str(corpus), "--preset", "tiny", "--hidden", "48", "--seq-len", "16", "--batch-size",
                      "4", "--max-steps", "400", "--device", "cpu", "--threads", "1", "--sample-interval", "0",
                      "--headless", "--runs-dir", str(runs), "--name", "fox")
    assert trained.returncode == 0, trained.stderr
    result = run_cli("sample", "fox", "--runs-dir", str(runs), "--prime", "the quick", "-n", "80", "--greedy",
                     "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["prime"] == "the quick" and len(data["text"]) == 80 and not data["text"].startswith("the quick")
    assert data["novelty"]["longest_copy"] == 80  # memorised: all of it is in the corpus
    assert data["novelty"]["spans"] == [[0, 80]] and data["novelty"]["min_span"] == 20
    corpus.unlink()
    gone = run_cli("sample", "fox", "--runs-dir", str(runs), "-n", "10", "--json")
    assert gone.returncode == 0 and json.loads(gone.stdout)["novelty"] is None and "no copy check" in gone.stderr


def test_the_background_index_is_built_off_the_calling_thread_and_says_why_it_was_skipped(monkeypatch):
    from charrnn_tui.engine.text import novelty

    built = novelty.BackgroundIndex("the cat sat on the mat")
    assert built.wait(30) is not None and built.index.occurs("cat sat") and built.skipped is None
    monkeypatch.setattr(novelty, "MAX_CORPUS_CHARS", 10)
    skipped = novelty.BackgroundIndex("x" * 11)
    assert skipped.wait(30) is None
    assert skipped.skipped == ("samples are not checked for copied text: the corpus has 11 characters; the copy "
                               "index stops at 10")


def test_indexing_more_than_half_the_free_memory_is_refused(monkeypatch):
    from charrnn_tui.engine.text import novelty

    monkeypatch.setattr(novelty, "_available_memory", lambda: 2_000 * novelty.BUILD_BYTES_PER_CHAR)
    assert NoveltyIndex("x" * 1_000).occurs("xx")
    with pytest.raises(MemoryError, match="indexing 1,001 characters needs about 0 MB; 0 MB are free"):
        NoveltyIndex("x" * 1_001)


def test_a_runs_samples_carry_their_confidence_and_what_they_copied(tmp_path):
    """Live samples of a model that learnt its corpus by heart: probabilities near 1, all copied."""
    import torch
    from helpers import tiny_config

    from charrnn_tui.engine import events as ev
    from charrnn_tui.engine.model.sampling import SampleSettings
    from charrnn_tui.engine.run.trainer import Trainer

    corpus = tmp_path / "fox.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    events: list = []
    torch.manual_seed(0)
    trainer = Trainer(tiny_config(corpus, max_steps=400, hidden=48, sample_length=60, temperature=0.1),
                      runs_dir=tmp_path / "runs", on_event=events.append)
    trainer.run()
    assert trainer.built.copy_index.wait(60) is not None
    settings = SampleSettings(length=60, temperature=0.1, top_k=trainer.config.top_k, top_p=trainer.config.top_p)
    for _ in trainer.answers.sample(trainer.trained.step, "the quick", "prompt", settings):
        pass
    finished = [e for e in events if isinstance(e, ev.SampleFinished)][-1]
    texts = [e for e in events if isinstance(e, ev.SampleText) and e.sample_id == finished.sample_id]
    assert "".join(t.text for t in texts) == finished.text and len(finished.text) == 60
    assert sum((t.probs for t in texts), ()) == finished.probs and len(finished.probs) == 60
    assert finished.token_lengths == () and all(t.token_lengths == () for t in texts)  # char level
    assert sum(finished.probs) / 60 > 0.9 and all(0 <= p <= 1 for p in finished.probs)
    assert finished.longest_copy == 60 and finished.copies == ((0, 60),)


def test_closing_the_background_index_stops_a_build_under_way(monkeypatch):
    import threading
    import time

    from charrnn_tui.engine.text import novelty

    under_way, suffix_array = threading.Event(), novelty.suffix_array

    def watched(text, cancelled):  # the build asks `cancelled` before each round: it has begun
        return suffix_array(text, lambda: under_way.set() or cancelled())

    monkeypatch.setattr(novelty, "suffix_array", watched)
    text = "".join(chr(97 + (i * 7919) % 26) for i in range(3_000_000))
    building = novelty.BackgroundIndex(text)
    assert under_way.wait(60)
    started = time.monotonic()
    building.close()
    assert not building._thread.is_alive() and building.index is None and building.skipped is None
    assert time.monotonic() - started < 60  # one round of the build at most, not all of it


def test_a_run_that_ends_while_its_index_is_built_exits_cleanly(tmp_path):
    """The index thread is not a daemon: a process exiting in the middle of torch's sort aborted."""
    from helpers import run_cli

    result = run_cli("train", "shakespeare", "--preset", "tiny", "--hidden", "32", "--max-steps", "1",
                     "--sample-interval", "0", "--device", "cpu", "--headless", "--runs-dir", str(tmp_path))
    assert result.returncode == 0, (result.returncode, result.stderr[-500:])
    assert "terminate called" not in result.stderr


def test_a_build_that_fails_says_why_instead_of_dying_quietly(monkeypatch):
    from charrnn_tui.engine.text import novelty

    def broken(text, cancelled):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB\nmore")

    monkeypatch.setattr(novelty, "suffix_array", broken)
    index = novelty.BackgroundIndex("abc")
    assert index.wait(30) is None
    assert index.skipped == ("samples are not checked for copied text: DefaultCPUAllocator: can't allocate memory: "
                             "you tried to allocate 9 GB")


def test_a_build_out_of_memory_without_a_message_says_so(monkeypatch):
    """MemoryError() says nothing: the reason given is 'out of memory', not an empty one (an exception is
    always true, so `e or ...` never fell back; the type checker's truthy-bool check found it)."""
    from charrnn_tui.engine.text import novelty

    def exhausted(text, cancelled):
        raise MemoryError

    monkeypatch.setattr(novelty, "suffix_array", exhausted)
    index = novelty.BackgroundIndex("abc")
    assert index.wait(30) is None
    assert index.skipped == "samples are not checked for copied text: out of memory"
