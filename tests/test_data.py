import pytest
import torch
from helpers import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_tui.engine.errors import CorpusError
from charrnn_tui.engine.text.data import (
    IGNORE,
    RandomWindowBatcher,
    SequentialBatcher,
    legacy_epoch_float,
    make_batcher,
    split_tokens,
)


def test_split_is_the_last_fraction():
    ids = torch.arange(1000)
    train, val = split_tokens(ids, 0.1)
    assert len(val) == 100 and torch.equal(val, ids[-100:]) and torch.equal(train, ids[:900])


def test_split_keeps_two_validation_tokens_and_refuses_a_text_too_short_to_split():
    train, val = split_tokens(torch.arange(10), 0.01)
    assert len(val) == 2 and len(train) == 8
    with pytest.raises(CorpusError, match="only 3 tokens"):
        split_tokens(torch.arange(3), 0.1)


def _epoch(batcher) -> list:
    """The batches of one whole epoch, from where the batcher stands (at an epoch's start)."""
    first = batcher.next()
    batches = [first]
    while batcher.index < batcher.batches_in_epoch():
        batches.append(batcher.next())
    return batches


def _scored(batches) -> tuple[list[int], list[int]]:
    """Input positions and targets of every scored prediction (the data is arange: ids are positions)."""
    inputs, targets = [], []
    for b in batches:
        keep = b.y != IGNORE
        inputs += b.x[keep].tolist()
        targets += b.y[keep].tolist()
    return inputs, targets


def _check_epoch(batcher, n: int, epoch: int) -> list:
    """One epoch of a batcher over arange(n): every prediction made exactly once, each target the
    token after its input, the scored count right, and the epoch counter at a whole epoch after it."""
    batches = _epoch(batcher)
    inputs, targets = _scored(batches)
    assert sorted(inputs) == list(range(n - 1)), f"epoch {epoch}"
    assert all(t == i + 1 for i, t in zip(inputs, targets, strict=True))
    assert sum(b.predictions for b in batches) == n - 1
    assert batcher.epoch_float == epoch + 1
    return batches


lengths = st.integers(min_value=2, max_value=1500)
batch_sizes = st.integers(min_value=1, max_value=12)
seq_lens = st.integers(min_value=1, max_value=40)


@settings(max_examples=examples(150), deadline=None)
@given(n=lengths, batch_size=batch_sizes, seq_len=seq_lens, seed=st.integers(0, 5), epochs=st.integers(1, 3))
def test_sequential_epochs_make_every_prediction_exactly_once(n, batch_size, seq_len, seed, epochs):
    if n - 1 < batch_size * seq_len:
        with pytest.raises(CorpusError, match="lower --batch-size or --seq-len"):
            SequentialBatcher(torch.arange(n), batch_size, seq_len, seed)
        return
    batcher = SequentialBatcher(torch.arange(n), batch_size, seq_len, seed)
    for epoch in range(epochs):
        batches = _check_epoch(batcher, n, epoch)
        assert [b.reset for b in batches] == [True] + [False] * (len(batches) - 1)
        assert all(1 <= b.x.size(1) <= seq_len and b.x.size(0) == batch_size for b in batches)
        # Each stream goes on where it stopped: the state carried over is the right context.
        for before, after in zip(batches, batches[1:], strict=False):
            rows = (before.y[:, -1] != IGNORE) & (after.y[:, 0] != IGNORE)
            assert torch.equal(after.x[rows, 0], before.x[rows, -1] + 1)


@settings(max_examples=examples(150), deadline=None)
@given(n=lengths, batch_size=batch_sizes, seq_len=seq_lens, seed=st.integers(0, 5), epochs=st.integers(1, 3))
def test_random_window_epochs_make_every_prediction_exactly_once(n, batch_size, seq_len, seed, epochs):
    if n < seq_len + 1:
        with pytest.raises(CorpusError, match="lower --seq-len"):
            RandomWindowBatcher(torch.arange(n), batch_size, seq_len, seed)
        return
    batcher = RandomWindowBatcher(torch.arange(n), batch_size, seq_len, seed)
    for epoch in range(epochs):
        batches = _check_epoch(batcher, n, epoch)
        assert all(b.reset for b in batches)
        assert all(b.x.size(1) == seq_len and 1 <= b.x.size(0) <= batch_size for b in batches)


def test_epoch_boundaries_move_between_epochs_and_are_seeded():
    def first_windows(seed):
        batcher = SequentialBatcher(torch.arange(4001), 4, 50, seed)
        return [b.x.size(1) for b in _epoch(batcher)[:1] + _epoch(batcher)[:1] + _epoch(batcher)[:1]]

    widths = first_windows(3)
    assert widths[0] == 50 and widths[1:] != [50, 50]  # the first epoch starts at 0; later ones elsewhere
    assert first_windows(3) == widths and first_windows(4) != widths


def test_random_windows_are_shuffled_and_seeded():
    def starts(seed):
        batcher = RandomWindowBatcher(torch.arange(2001), 4, 10, seed)
        return [b.x[:, 0].tolist() for b in _epoch(batcher)][:5]

    assert starts(1) == starts(1) and starts(1) != starts(2)
    assert starts(1) != sorted(starts(1))


@pytest.mark.parametrize("kind", ["sequential", "random"])
@pytest.mark.parametrize("steps", [0, 1, 37, 101, 250])
def test_state_dict_round_trip_continues_identically(kind, steps):
    data = torch.arange(3001) % 97
    a = make_batcher(kind, data, 4, 16, 1)
    for _ in range(steps):
        a.next()
    b = make_batcher(kind, data, 4, 16, 1)
    b.load_state_dict(a.state_dict())
    assert b.epoch_float == a.epoch_float
    for _ in range(60):  # across an epoch boundary for the larger step counts
        x, y = a.next(), b.next()
        assert torch.equal(x.x, y.x) and torch.equal(x.y, y.y) and x.reset == y.reset


@pytest.mark.parametrize("kind", ["sequential", "random"])
def test_seek_lands_at_the_same_point_of_the_epoch_for_another_shape(kind):
    data = torch.arange(5001)
    old = make_batcher(kind, data, 8, 20, 0)
    for _ in range(45):
        old.next()
    new = make_batcher(kind, data, 4, 16, 0)
    new.seek(old.epoch_float)
    assert new.epoch == old.epoch
    assert new.epoch_float == pytest.approx(old.epoch_float, abs=2 / new.batches_in_epoch())


def test_seek_to_a_whole_epoch_starts_it():
    batcher = SequentialBatcher(torch.arange(1001), 2, 10, 0)
    batcher.seek(2.0)
    assert batcher.epoch == 2 and batcher.index == 0 and batcher.next().reset


def test_sequential_batches_are_int64_and_targets_are_the_next_inputs():
    data = (torch.arange(10_000) % 251).to(torch.uint8)
    batcher = SequentialBatcher(data, batch_size=4, seq_len=10, seed=0)
    b = batcher.next()
    assert b.x.shape == b.y.shape == (4, 10) and b.x.dtype == b.y.dtype == torch.long
    assert torch.equal(b.x[:, 1:], b.y[:, :-1]) and b.predictions == 40
    stream_len = -(-9_999 // 4)
    assert torch.equal(b.x[:, 0], (torch.arange(4) * stream_len) % 251)  # one contiguous stream per row


def test_legacy_positions_map_to_the_same_fraction_of_an_epoch():
    assert legacy_epoch_float("sequential", {"epoch": 2, "index": 25}, 4, 10, 4004) == pytest.approx(2.25)
    # the old cut: (4000 // 4 - 1) // 10 = 99 whole batches an epoch, the last partial one dropped
    assert legacy_epoch_float("sequential", {"epoch": 0, "index": 33}, 4, 10, 4000) == pytest.approx(33 / 99)
    # a text too short for one whole batch still counted one batch an epoch
    assert legacy_epoch_float("sequential", {"epoch": 3, "index": 0}, 4, 10, 40) == 3.0
    assert legacy_epoch_float("sequential", {"epoch": 0, "index": 1}, 4, 10, 40) == 1.0
    assert legacy_epoch_float("random", {"steps": 50, "generator": None}, 4, 10, 4000) == pytest.approx(0.5)


@settings(max_examples=examples(200), deadline=None)
@given(n=st.integers(min_value=2, max_value=800), batch_size=batch_sizes, seq_len=seq_lens, seed=st.integers(0, 5),
       steps=st.integers(0, 400))
def test_a_sequential_batcher_seeks_back_exactly_to_where_one_of_its_shape_stood(n, batch_size, seq_len, seed,
                                                                                steps):
    if n - 1 < batch_size * seq_len:
        return
    walked = SequentialBatcher(torch.arange(n), batch_size, seq_len, seed)
    for _ in range(steps):
        walked.next()
    sought = SequentialBatcher(torch.arange(n), batch_size, seq_len, seed)
    sought.seek(walked.epoch_float)
    at = walked.epoch_float
    if at != int(at):  # a whole epoch is the next epoch's start, which is the same point
        assert (sought.epoch, sought.index) == (walked.epoch, walked.index)
    assert sought.epoch_float == walked.epoch_float
    assert torch.equal(sought.next().x, walked.next().x)


def test_seek_into_the_last_window_of_an_epoch_goes_to_the_next_epoch():
    batcher = SequentialBatcher(torch.arange(1001), 2, 10, 0)  # 500 predictions per stream, 50 windows
    batcher.seek(3 + 495 / 500)
    assert (batcher.epoch, batcher.index) == (3, batcher.batches_in_epoch())
    assert batcher.next().reset and batcher.epoch == 4


@pytest.mark.parametrize("kind", ["sequential", "random"])
def test_epoch_queries_answer_for_the_epoch_asked_not_the_current_one(kind):
    data = torch.arange(1000)
    streams = 3 if kind == "sequential" else 1  # so that the batch count differs between epochs
    batcher = make_batcher(kind, data, streams, 7, 2)
    fresh = {e: (batcher.offset(e), batcher.batches_in_epoch(e)) for e in range(6)}
    for epoch in range(6):
        at = make_batcher(kind, data, streams, 7, 2)
        at.load_state_dict({"epoch": epoch, "index": 0})
        assert (at.offset(), at.batches_in_epoch()) == fresh[epoch]
    assert len({offset for offset, _ in fresh.values()}) > 2  # the offsets differ, so the test can tell
    assert len({count for _, count in fresh.values()}) > 1
    if kind == "random":
        assert [batcher.windows_in_epoch(e) for e in range(6)] == [-(-(999 - o) // 7) + (o > 0) for o, _ in
                                                                   fresh.values()]


def test_a_random_batcher_resumed_in_a_later_epoch_serves_that_epochs_windows():
    data = torch.arange(700)
    walked = RandomWindowBatcher(data, 4, 9, 3)
    for _ in range(2 * walked.batches_in_epoch() + 3):
        walked.next()
    resumed = RandomWindowBatcher(data, 4, 9, 3)
    resumed.load_state_dict(walked.state_dict())
    for _ in range(walked.batches_in_epoch() + 2):
        a, b = walked.next(), resumed.next()
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and a.predictions == b.predictions


def test_corpus_shorter_than_a_batch_is_refused_with_numbers():
    with pytest.raises(CorpusError, match=r"has 50 tokens; batch-size 4 x seq-len 16 needs 65"):
        SequentialBatcher(torch.arange(50), batch_size=4, seq_len=16)
    with pytest.raises(CorpusError, match=r"has 10 tokens, shorter than one sequence \(seq-len 16\)"):
        RandomWindowBatcher(torch.arange(10), batch_size=4, seq_len=16)
