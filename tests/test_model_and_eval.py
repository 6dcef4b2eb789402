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
