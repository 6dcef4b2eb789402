"""Sampling and co-writing on a CUDA GPU without hidden host syncs: torch.cuda.set_sync_debug_mode
("error") raises on any synchronizing call (a blocking copy, .item(), a stream synchronize). The one
sync each chunk (and each keystroke) needs is the wait for its copy back, on an event
(engine/sampling.to_host), which that mode does not watch: it is counted here instead.

These run when torch sees a GPU and skip, saying why, everywhere else."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from test_sampling import CHI2_999, SPREAD, _draws, _kept_distribution

from charrnn_tui.engine.config import ModelConfig
from charrnn_tui.engine.model import cowrite, sampling
from charrnn_tui.engine.model.cowrite import TypingState
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.model.sampling import SampleSettings, TextGenerator
from charrnn_tui.engine.text.vocab import UNK, CharVocab, WordVocab

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")

TEXT = "the quick brown fox jumps over the lazy dog.\n"


@contextlib.contextmanager
def no_host_syncs() -> Iterator[None]:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _model(vocab_size: int, kind: str = "lstm") -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(kind=kind, layers=2, hidden=64, embedding=16, vocab_size=vocab_size)).cuda().eval()


def _counted(monkeypatch, module, name: str) -> list:
    calls = []
    real = getattr(module, name)

    def wrapper(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(module, name, wrapper)
    return calls


SETTINGS = [dict(), dict(top_k=5), dict(top_p=0.9), dict(top_k=8, top_p=0.8, temperature=1.3), dict(greedy=True)]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()) or "plain")
def test_sampling_makes_no_host_sync_but_one_wait_for_each_chunks_copy_back(monkeypatch, kind, settings):
    vocab = CharVocab.build(TEXT)
    gen = TextGenerator(_model(len(vocab), kind), vocab)
    gen.generate("the", SampleSettings(length=20, seed=0, **settings))  # warm-up: cuBLAS, cuDNN, allocator
    waits = _counted(monkeypatch, sampling, "to_host")
    with no_host_syncs():
        result = gen.generate("the quick", SampleSettings(length=100, chunk=16, seed=3, **settings))
    assert len(result.text) == 100 and len(result.probs) == 100
    assert [tuple(args[0].shape) for args in waits] == [(2, 16)] * 6 + [(2, 4)]  # one copy back a chunk
    again = gen.generate("the quick", SampleSettings(length=100, chunk=16, seed=3, **settings))
    assert (again.text, again.probs) == (result.text, result.probs)  # seeded on the device


def test_a_word_model_masks_unk_without_a_host_sync():
    vocab = WordVocab.build("the cat sat on the mat . a dog ran ! " * 5, min_freq=1)
    model = _model(len(vocab), "gru")
    with torch.no_grad():
        model.head.bias[0] = 8.0  # <unk> most of the probability
    gen = TextGenerator(model, vocab)
    gen.generate("the", SampleSettings(length=5, seed=0))
    with no_host_syncs():
        result = gen.generate("the", SampleSettings(length=200, seed=4, top_k=3))
    assert UNK not in result.text


@pytest.mark.parametrize("settings", [SampleSettings(temperature=0.7), SampleSettings(top_k=3),
                                      SampleSettings(temperature=0.9, top_p=0.8),
                                      SampleSettings(temperature=1.3, top_k=5, top_p=0.6)])
def test_draws_on_the_gpu_follow_the_softmax_over_exactly_the_kept_set(settings):
    expected = _kept_distribution(SPREAD, settings.temperature, settings.top_k, settings.top_p)
    n = 100_000
    counts = torch.bincount(_draws(SPREAD, settings, n, seed=20, device="cuda"), minlength=len(SPREAD))
    assert all(counts[i] == 0 for i in range(len(SPREAD)) if i not in expected), (counts, expected)
    chi2 = sum((counts[i].item() - n * p) ** 2 / (n * p) for i, p in expected.items())
    assert chi2 < CHI2_999[len(expected) - 1], (chi2, counts, expected)


def test_typing_makes_no_host_sync_but_one_wait_a_keystroke_and_copies_from_pinned_memory(monkeypatch):
    vocab = CharVocab.build(TEXT)
    model = _model(len(vocab))
    typing = TypingState(model, vocab)
    typing.expect("th", top=5)  # warm-up
    pinned = []
    real_tensor = torch.tensor

    def tensor(*args, **kwargs):
        pinned.append(kwargs.get("pin_memory", False))
        return real_tensor(*args, **kwargs)

    monkeypatch.setattr(torch, "tensor", tensor)
    waits = _counted(monkeypatch, cowrite, "to_host")
    text = "th"
    with no_host_syncs():
        for ch in "e quick":
            text += ch
            typing.expect(text, top=5)
        typing.expect(TEXT * 4, top=5)  # a paste, fed in chunks
    assert len(waits) == len("e quick") + 1 and pinned and all(pinned)  # one copy back a keystroke


def test_to_device_and_to_host_round_trip_through_pinned_memory():
    ids = list(range(1000))
    on_gpu = sampling.to_device(ids, torch.device("cuda"))
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.long
    back = sampling.to_host(on_gpu * 2)
    assert back.device.type == "cpu" and back.is_pinned() and back.tolist() == [2 * i for i in ids]
