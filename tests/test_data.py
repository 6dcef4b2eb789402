import pytest
import torch

from charrnn_tui.engine.data import RandomWindowBatcher, SequentialBatcher, split_tokens
from charrnn_tui.engine.errors import CorpusError


def test_split_is_the_last_fraction():
    ids = torch.arange(1000)
    train, val = split_tokens(ids, 0.1)
    assert len(val) == 100 and torch.equal(val, ids[-100:]) and torch.equal(train, ids[:900])


def test_sequential_batches_shapes_and_state_carry():
    data = torch.arange(10_000) % 251
    batcher = SequentialBatcher(data.to(torch.uint8), batch_size=4, seq_len=10, seed=0)
    x1, y1, reset1 = batcher.next()
    x2, y2, reset2 = batcher.next()
    assert x1.shape == y1.shape == (4, 10) and x1.dtype == torch.long
    assert reset1 and not reset2
    # Targets are inputs shifted by one, and each stream continues where it left off.
    assert torch.equal(x1[:, 1:], y1[:, :-1])
    assert torch.equal(x2[:, 0], y1[:, -1])
    # Streams are contiguous slices of the text, one per row.
    stream_len = 10_000 // 4
    assert torch.equal(x1[:, 0], (torch.arange(4) * stream_len) % 251)


def test_sequential_epoch_boundary_resets_and_offsets():
    data = torch.arange(400).to(torch.int16)
    batcher = SequentialBatcher(data, batch_size=2, seq_len=9, seed=3)
    n = batcher.batches_in_epoch()
    resets = [batcher.next()[2] for _ in range(n + 1)]
    assert resets[0] and not any(resets[1:n]) and resets[n]
    assert batcher.epoch == 1 and 1.0 < batcher.epoch_float < 2.0


def test_sequential_state_dict_round_trip():
    data = torch.arange(500)
    a = SequentialBatcher(data, 2, 8, seed=1)
    for _ in range(40):
        a.next()
    b = SequentialBatcher(data, 2, 8, seed=1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.next()[0], b.next()[0])


def test_random_windows_are_seeded_and_resumable():
    data = torch.arange(1000)
    a = RandomWindowBatcher(data, 3, 5, seed=7)
    a.next()
    b = RandomWindowBatcher(data, 3, 5, seed=0)
    b.load_state_dict(a.state_dict())
    xa, ya, reset = a.next()
    xb, _, _ = b.next()
    assert reset and torch.equal(xa, xb) and torch.equal(xa[:, 1:], ya[:, :-1])


def test_corpus_shorter_than_a_batch_is_refused_with_numbers():
    with pytest.raises(CorpusError, match=r"has 50 tokens; batch-size 4 x \(seq-len 16 \+ 1\) needs 68"):
        SequentialBatcher(torch.arange(50), batch_size=4, seq_len=16)
