import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config

from charrnn_tui.engine.config import ModelConfig
from charrnn_tui.engine.evaluate import evaluate
from charrnn_tui.engine.model import CharRNN, Stepper
from charrnn_tui.engine.trainer import Trainer


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("embedding", [16, 0])
def test_each_model_kind_learns_a_repetitive_text(kind, embedding, repetitive_text, runs_dir):
    losses = []
    config = tiny_config(repetitive_text, kind=kind, embedding=embedding, max_steps=300, eval_interval=300)
    trainer = Trainer(config, runs_dir=runs_dir, on_event=lambda e: losses.extend(getattr(e, "losses", ())))
    assert trainer.run() == "finished"
    assert losses[0] > 2.5  # starts near log(vocab)
    assert sum(losses[-20:]) / 20 < 0.1, f"{kind} did not memorise: {losses[-5:]}"
    assert trainer.best_val < 0.1


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


@pytest.mark.parametrize("streams", [1, 4, 7])
def test_evaluate_scores_every_token_of_the_split(streams):
    model = CharRNN(ModelConfig(kind="gru", layers=1, hidden=16, embedding=8, vocab_size=9)).eval()
    ids = torch.randint(0, 9, (103,))
    result = evaluate(model, ids, streams=streams, chunk=5)
    assert result.tokens == 102
    if streams == 1:  # one stream is exactly the plain loss over the whole sequence
        assert math.isclose(result.nats, _naive_loss(model, ids), rel_tol=1e-5)
    else:  # parallel streams restart from a zero state, so they can only differ a little
        assert abs(result.nats - _naive_loss(model, ids)) < 0.1
    assert math.isclose(result.bits, result.nats / math.log(2))


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
    from charrnn_tui.engine.inference import load_model
    from charrnn_tui.engine.sampling import SampleSettings, TextGenerator

    corpus = tmp_path / "words.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log.\n" * 80 + "a zebra once.\n")
    config = tiny_config(corpus, tokens="word", min_freq=2, max_steps=200)
    losses = _step_losses(config, runs_dir, "words")
    assert sum(losses[-10:]) / 10 < 0.3
    loaded = load_model(runs_dir / "words" / "latest.pt", "cpu")
    assert loaded.vocab.kind == "word" and "zebra" not in loaded.vocab.index  # seen once: <unk>
    text = TextGenerator(loaded.model, loaded.vocab).generate("the cat", SampleSettings(length=12, greedy=True))
    assert text.text.startswith(" sat on the ") and text.text[len(" sat on the "):][:3] in ("mat", "log")
