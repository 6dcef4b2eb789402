import math

import pytest
import torch
import torch.nn.functional as F
from helpers import examples, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_tui.engine.config import ModelConfig
from charrnn_tui.engine.model.evaluate import eval_layout, evaluate, stream_count
from charrnn_tui.engine.model.model import CharRNN, Stepper
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.text.data import IGNORE


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("embedding", [16, 0])
def test_each_model_kind_learns_a_repetitive_text(kind, embedding, repetitive_text, runs_dir):
    losses = []
    config = tiny_config(repetitive_text, kind=kind, embedding=embedding, max_steps=300, eval_interval=300)
    trainer = Trainer(config, runs_dir=runs_dir, on_event=lambda e: losses.extend(getattr(e, "losses", ())))
    assert trainer.run() == "finished"
    assert losses[0] > 2.5  # starts near log(vocab)
    assert sum(losses[-20:]) / 20 < 0.1, f"{kind} did not memorise: {losses[-5:]}"
    assert trainer.trained.best_val < 0.1


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_stepper_matches_the_full_forward(kind):
    model = CharRNN(ModelConfig(kind=kind, layers=2, hidden=24, embedding=8, vocab_size=11)).eval()
    ids = torch.randint(0, 11, (3, 7))
    full, _ = model(ids)
    stepper, state = Stepper(model), model.initial_state(3)
    for t in range(7):
        logits, state = stepper.step(ids[:, t], state)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-4, atol=1e-5)


def _naive_loss(model, ids):
    logits, _ = model(ids[:-1].long().unsqueeze(0))
    return F.cross_entropy(logits[0], ids[1:].long()).item()


def _small_model(vocab=9, kind="gru"):
    torch.manual_seed(3)
    return CharRNN(ModelConfig(kind=kind, layers=1, hidden=16, embedding=8, vocab_size=vocab)).eval()


@settings(max_examples=examples(200), deadline=None)
@given(predictions=st.integers(1, 3000), streams=st.integers(1, 300), warmup=st.integers(0, 400))
def test_the_evaluation_layout_scores_every_prediction_exactly_once(predictions, streams, warmup):
    streams = min(streams, predictions)
    inputs, targets = eval_layout(predictions, streams, warmup)
    scored = targets != IGNORE
    assert sorted(targets[scored].tolist()) == list(range(1, predictions + 1))
    assert torch.equal(inputs[scored], targets[scored] - 1)  # each from the token just before it
    # Each row reads consecutive tokens up to its last scored one (warm-up first, padding after).
    last = torch.where(scored, torch.arange(inputs.size(1)), -1).max(dim=1).values
    for row, end in zip(inputs, last.tolist(), strict=True):
        assert torch.equal(row[1 : end + 1] - row[:end], torch.ones(end, dtype=row.dtype))
        assert row[0] >= 0 and (scored.sum() == predictions)
    assert (inputs.size(1) - (-(-predictions // streams))) <= warmup


@pytest.mark.parametrize("streams", [1, 4, 7, 102])
def test_evaluate_with_a_warmup_as_long_as_the_text_is_one_sequential_read(streams):
    model, ids = _small_model(), torch.randint(0, 9, (103,))
    result = evaluate(model, ids, streams=streams, warmup=len(ids), chunk=5)
    assert result.tokens == 102
    assert math.isclose(result.nats, _naive_loss(model, ids), rel_tol=1e-5)
    assert math.isclose(result.bits, result.nats / math.log(2))
    assert math.isclose(result.perplexity, math.exp(result.nats))


def test_evaluate_without_warmup_scores_each_stream_from_a_cold_state():
    """A cross-check of the layout by hand: stream k from a zero state over its own slice."""
    model, ids = _small_model(), torch.randint(0, 9, (101,))
    total = 0.0
    for k in range(4):  # 100 predictions, 25 per stream
        piece = ids[k * 25 : k * 25 + 26]
        total += _naive_loss(model, piece) * 25
    assert math.isclose(evaluate(model, ids, streams=4, warmup=0).nats, total / 100, rel_tol=1e-5)


@settings(max_examples=examples(30), deadline=None)
@given(length=st.integers(2, 400), chunk=st.integers(1, 500), seed=st.integers(0, 3))
def test_evaluate_gives_the_same_answer_for_any_chunk_size(length, chunk, seed):
    model = _small_model(kind="lstm")
    ids = torch.randint(0, 9, (length,), generator=torch.Generator().manual_seed(seed))
    reference = evaluate(model, ids, streams=3, warmup=7, chunk=10_000).nats
    assert math.isclose(evaluate(model, ids, streams=3, warmup=7, chunk=chunk).nats, reference, rel_tol=1e-6)


def test_the_default_evaluation_depends_on_the_text_alone_and_reads_like_one_stream():
    model, ids = _small_model(), torch.randint(0, 9, (20_000,))
    assert stream_count(20_000 - 1) > 1
    default = evaluate(model, ids)
    assert default.tokens == 19_999
    # The warm-up gives every stream the context a single sequential read would have had.
    assert math.isclose(default.nats, evaluate(model, ids, streams=1).nats, rel_tol=1e-5)
    assert evaluate(model, ids, warmup=0).nats != default.nats  # the warm-up is really there


def test_evaluate_leaves_the_model_in_training_mode_if_it_was():
    model = _small_model().train()
    evaluate(model, torch.randint(0, 9, (50,)))
    assert model.training
    model = _small_model().eval()
    evaluate(model, torch.randint(0, 9, (50,)))
    assert not model.training


def _step_losses(config, runs_dir, name):
    losses = []
    Trainer(config, runs_dir=runs_dir, run_name=name,
            on_event=lambda e: losses.extend(getattr(e, "losses", ()))).run()
    return losses


def test_same_seed_same_run(repetitive_text, runs_dir):
    config = tiny_config(repetitive_text, max_steps=40, dropout=0.3, layers=2)
    assert _step_losses(config, runs_dir, "a") == _step_losses(config, runs_dir, "b")
    other = _step_losses(tiny_config(repetitive_text, max_steps=40, dropout=0.3, layers=2, seed=2), runs_dir, "c")
    assert other != _step_losses(config, runs_dir, "d")


def test_sgd_trains(repetitive_text, runs_dir):
    losses = _step_losses(tiny_config(repetitive_text, max_steps=150, optimizer="sgd", lr=0.5), runs_dir, "sgd")
    assert sum(losses[-10:]) / 10 < losses[0] - 1.0


def test_word_level_model_learns_and_samples(tmp_path, runs_dir):
    from charrnn_tui.engine.model.inference import load_model
    from charrnn_tui.engine.model.sampling import SampleSettings, TextGenerator

    corpus = tmp_path / "words.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log.\n" * 80 + "a zebra once.\n")
    config = tiny_config(corpus, tokens="word", min_freq=2, max_steps=200)
    losses = _step_losses(config, runs_dir, "words")
    assert sum(losses[-10:]) / 10 < 0.3
    loaded = load_model(runs_dir / "words" / "latest.pt", "cpu")
    assert loaded.vocab.kind == "word" and "zebra" not in loaded.vocab.index  # seen once: <unk>
    text = TextGenerator(loaded.model, loaded.vocab).generate("the cat", SampleSettings(length=12, greedy=True))
    assert text.text.startswith(" sat on the ") and text.text[len(" sat on the "):][:3] in ("mat", "log")


def test_evaluating_fewer_than_two_tokens_says_why():
    from charrnn_tui.engine.config import ModelConfig
    from charrnn_tui.engine.model.evaluate import evaluate
    from charrnn_tui.engine.model.model import CharRNN

    model = CharRNN(ModelConfig(kind="lstm", layers=1, hidden=8, embedding=4, vocab_size=5))
    with pytest.raises(ValueError) as raised:
        evaluate(model, torch.tensor([1]))
    assert str(raised.value) == "evaluation needs at least 2 tokens"
