import pytest
import torch
from helpers import tiny_config

from charrnn_tui.engine.config import ModelConfig
from charrnn_tui.engine.errors import ConfigError
from charrnn_tui.engine.inference import load_model
from charrnn_tui.engine.model import CharRNN
from charrnn_tui.engine.runs import LATEST
from charrnn_tui.engine.sampling import SampleSettings, TextGenerator
from charrnn_tui.engine.trainer import Trainer
from charrnn_tui.engine.vocab import CharVocab

TEXT = "the quick brown fox jumps over the lazy dog. "


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """A model that has learnt the repetitive text by heart."""
    folder = tmp_path_factory.mktemp("memorised")
    corpus = folder / "fox.txt"
    corpus.write_text(TEXT * 60)
    torch.manual_seed(0)
    trainer = Trainer(tiny_config(corpus, max_steps=400, hidden=48), runs_dir=folder / "runs", run_name="fox")
    assert trainer.run() == "finished"
    return load_model(folder / "runs" / "fox" / LATEST, "cpu")


def _random_generator():
    vocab = CharVocab.build("abcdefgh \n")
    model = CharRNN(ModelConfig(kind="lstm", layers=2, hidden=16, embedding=8, vocab_size=len(vocab)))
    return TextGenerator(model, vocab)


def test_same_seed_same_sample_different_seed_different_sample():
    gen = _random_generator()
    a = gen.generate("abc", SampleSettings(length=80, seed=5)).text
    b = gen.generate("abc", SampleSettings(length=80, seed=5)).text
    c = gen.generate("abc", SampleSettings(length=80, seed=6)).text
    assert a == b and a != c and len(a) == 80


def test_greedy_sampling_reproduces_the_memorised_text(memorised):
    gen = TextGenerator(memorised.model, memorised.vocab)
    out = gen.generate("the quick ", SampleSettings(length=len(TEXT) * 2, greedy=True)).text
    assert ("the quick " + out).startswith((TEXT * 3)[: len(TEXT) * 2])


def test_streaming_yields_chunks_that_add_up():
    gen = _random_generator()
    pieces = list(gen.stream("", SampleSettings(length=50, chunk=8, seed=1)))
    assert [len(p) for p in pieces] == [8] * 6 + [2]
    assert "".join(pieces) == gen.generate("", SampleSettings(length=50, chunk=8, seed=1)).text


def test_one_network_step_per_generated_character(monkeypatch):
    gen = _random_generator()
    calls = {"forward": 0, "step": 0}

    def counted(name, fn):
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)
        return wrapper

    monkeypatch.setattr(gen.model, "forward", counted("forward", gen.model.forward))
    monkeypatch.setattr(gen.stepper, "step_layers", counted("step", gen.stepper.step_layers))
    gen.generate("a long prompt of many characters", SampleSettings(length=100, seed=0))
    assert calls == {"forward": 1, "step": 99}  # the prompt is read once, never re-run


def test_top_k_one_is_greedy_and_top_p_limits_choices():
    gen = _random_generator()
    greedy = gen.generate("ab", SampleSettings(length=40, greedy=True)).text
    assert gen.generate("ab", SampleSettings(length=40, top_k=1, seed=3)).text == greedy
    assert gen.generate("ab", SampleSettings(length=40, top_p=1e-6, seed=4)).text == greedy


def test_unknown_prompt_characters_are_reported_not_fatal():
    gen = _random_generator()
    result = gen.generate("ábc☃", SampleSettings(length=5, seed=0))
    assert len(result.text) == 5
    assert "'á' -> 'a'" in result.notes[0] and "dropped" in result.notes[1]


@pytest.mark.parametrize(
    "settings, message",
    [
        (SampleSettings(temperature=0), "temperature"),
        (SampleSettings(temperature=float("nan")), "temperature"),
        (SampleSettings(top_k=999), "top-k"),
        (SampleSettings(length=-1), "length"),
        (SampleSettings(top_p=1.5), "top-p"),
    ],
)
def test_bad_settings_are_clear_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        _random_generator().generate("a", settings)
