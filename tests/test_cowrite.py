"""Writing with the model: the next tokens while typing, with the state carried between keystrokes."""

import pytest
import torch

from charrnn_tui.engine.config import ModelConfig
from charrnn_tui.engine.model.cowrite import TypingState
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.model.sampling import TextGenerator
from charrnn_tui.engine.protocol import AskNextTokens
from charrnn_tui.engine.text.vocab import UNK, CharVocab, WordVocab


def _model(vocab, kind="lstm"):
    torch.manual_seed(3)
    return CharRNN(ModelConfig(kind=kind, layers=2, hidden=24, embedding=8, vocab_size=len(vocab)))


def _full_pass(model, vocab, text):
    """Every typed token's probability and the next token's distribution, from scratch."""
    ids, _ = vocab.encode_prompt(text)
    with torch.no_grad():
        model.eval()
        logits, _ = model(torch.tensor([ids]))
    probs = torch.softmax(logits[0], dim=-1)
    typed = [float(probs[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    return typed, probs[-1]


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_a_keystroke_feeds_only_what_is_new_and_gives_what_a_full_pass_gives(kind):
    vocab = CharVocab.build("abcdefgh the quick brown fox\n")
    model = _model(vocab, kind)
    typing = TypingState(model, vocab)
    text = ""
    for ch in "the quick fox":
        text += ch
        fed = typing.fed
        got = typing.expect(text, top=3)
        assert typing.fed == fed + 1  # one token per keystroke
        typed, next_probs = _full_pass(model, vocab, text)
        assert got.probs == pytest.approx(typed, abs=1e-5)
        values, order = torch.topk(next_probs, 3)
        assert [t for t, _ in got.top] == [vocab.tokens[i] for i in order.tolist()]
        assert [p for _, p in got.top] == pytest.approx(values.tolist(), abs=1e-5)
        assert got.token_lengths == [1] * len(text)
    fed = typing.fed
    shorter = typing.expect("the quick f", top=3)  # backspace twice: states already there
    assert typing.fed == fed and shorter.probs == pytest.approx(_full_pass(model, vocab, "the quick f")[0], abs=1e-5)
    typing.expect("the quick dog", top=3)  # an edit: fed again from where it differs
    assert typing.fed == fed + 3


def test_the_first_suggestion_is_what_next_and_greedy_sampling_give():
    vocab = CharVocab.build("abcdefgh the quick brown fox\n")
    model = _model(vocab)
    generator = TextGenerator(model, vocab)
    typing = TypingState(model, vocab)
    for text in ("", "the", "the quick br"):
        got = typing.expect(text, top=5)
        ranked, _ = generator.next_tokens(text, 5)
        assert [t for t, _ in got.top] == [t for t, _ in ranked]
        assert [p for _, p in got.top] == pytest.approx([p for _, p in ranked], abs=1e-5)


def test_word_level_suggestions_never_offer_unk_and_report_unknown_words():
    vocab = WordVocab.build("the cat sat on the mat. the dog sat on the log. " * 3, min_freq=1)
    model = _model(vocab, "gru")
    with torch.no_grad():
        model.head.bias[0] = 10.0
    got = TypingState(model, vocab).expect("the zebra sat", top=4)
    assert UNK not in [t for t, _ in got.top] and len(got.top) == 4
    assert got.notes == [f"'zebra' -> {UNK}"]
    assert sum(got.token_lengths) == len("the") + len(" ") + len(UNK) + len(" sat")


def test_the_model_is_left_as_it_was_found():
    vocab = CharVocab.build("abc ")
    model = _model(vocab)
    model.train()
    TypingState(model, vocab).expect("abc", 2)
    assert model.training


def test_a_run_answers_the_latest_text_only(repetitive_text, runs_dir):
    from helpers import tiny_config

    from charrnn_tui.engine.events import NextTokens
    from charrnn_tui.engine.protocol import RequestRefused
    from charrnn_tui.engine.run.trainer import Trainer

    events: list = []
    trainer = Trainer(tiny_config(repetitive_text, max_steps=3), runs_dir=runs_dir, on_event=events.append)
    with pytest.raises(RequestRefused):
        trainer.request(AskNextTokens("x" * 10_001))
    with pytest.raises(RequestRefused):
        trainer.request(AskNextTokens("ab", top=0))
    for text in ("a", "ab", "abc"):  # typed faster than the run reaches a step boundary
        trainer.request(AskNextTokens(text, top=3))
    trainer.run()
    answers = [e for e in events if isinstance(e, NextTokens)]
    assert [a.text for a in answers] == ["abc"] and len(answers[0].top) == 3
    assert len(answers[0].probs) == 2 and answers[0].token_lengths == (1, 1, 1)


def test_keystrokes_are_answered_between_the_chunks_of_an_evaluation(repetitive_text, runs_dir, monkeypatch):
    """An evaluation takes seconds on a real corpus: while someone types, it runs in short chunks and
    answers keystrokes between them, with the same result."""
    from helpers import tiny_config

    from charrnn_tui.engine.events import Evaluated, NextTokens
    from charrnn_tui.engine.model import evaluate as evaluate_module
    from charrnn_tui.engine.run.trainer import Trainer

    events: list = []
    trainer = Trainer(tiny_config(repetitive_text, max_steps=20, eval_interval=10), runs_dir=runs_dir,
                      on_event=events.append)
    calls = []
    real = evaluate_module.evaluate

    def evaluate(model, ids, **kwargs):
        calls.append(kwargs)
        if kwargs.get("between"):
            trainer.request(AskNextTokens("ab"))  # typed while the evaluation runs
        quiet = real(model, ids)
        result = real(model, ids, **kwargs)
        assert result.nats == pytest.approx(quiet.nats, abs=1e-6)
        return result

    monkeypatch.setattr("charrnn_tui.engine.run.evaluating.evaluate", evaluate)
    trainer.request(AskNextTokens("a"))  # someone started typing before the first evaluation
    trainer.run()
    assert calls[0]["chunk"] == 32 and calls[0]["between"] is not None
    order = [type(e).__name__ for e in events if isinstance(e, (Evaluated, NextTokens))]
    assert order[:3] == ["NextTokens", "NextTokens", "Evaluated"]  # "ab" answered inside the evaluation


def test_the_typed_text_is_shaded_by_surprisal_and_the_suggestions_follow():
    from charrnn_tui.engine.events import NextTokens
    from charrnn_tui.tui.sample_text import confidence_style
    from charrnn_tui.tui.widgets.prompt_panel import render_expectation

    answer = NextTokens("the cat", (("s", 0.5), (" ", 0.25)), (0.9, 0.6, 0.3, 0.05, 0.005, 0.7), (1,) * 7)
    line = render_expectation(answer, highlight=1)
    assert line.plain == "the\u2423cat  next: s 50%  \u2423 25%  "
    styles = [str(span.style) for span in line.spans]
    assert styles[0] == "bold"  # the first character: nothing before it to judge it by
    assert styles[1:7] == [confidence_style(p) for p in (0.9, 0.6, 0.3, 0.05, 0.005, 0.7)]
    assert "reverse bold" in styles  # the highlighted suggestion
    words = NextTokens("the zebra", (("!", 1.0),), (0.2, 0.001), (3, 1, 5))  # word level: a shade per token
    shaded = render_expectation(words)
    assert [(s.start, s.end) for s in shaded.spans[:3]] == [(0, 3), (3, 4), (4, 9)]


@pytest.mark.parametrize("typed, pasted", [("the quick fox", False), ("the quick brown fox\n" * 10, True)],
                         ids=["keystrokes", "paste"])
def test_a_keystroke_or_a_paste_goes_to_the_device_in_one_copy_and_comes_back_in_one(monkeypatch, typed, pasted):
    """Its tokens in one tensor (pinned on CUDA: engine/sampling.to_device), not one per token; the
    suggestions and the new tokens' probabilities back together."""
    from charrnn_tui.engine.model import cowrite

    vocab = CharVocab.build("abcdefgh the quick brown fox\n")
    model = _model(vocab)
    expected = TypingState(model, vocab).expect(typed, top=4)
    created, copies_in, copies_out = [], [], []
    real_tensor, real_in, real_out = torch.tensor, cowrite.to_device, cowrite.to_host

    def tensor(*args, **kwargs):
        created.append(args[0])
        return real_tensor(*args, **kwargs)

    def to_device(ids, device):
        copies_in.append(list(ids))
        return real_in(ids, device)

    def to_host(values):
        copies_out.append(values.numel())
        return real_out(values)

    monkeypatch.setattr(torch, "tensor", tensor)
    monkeypatch.setattr(cowrite, "to_device", to_device)
    monkeypatch.setattr(cowrite, "to_host", to_host)
    typing = TypingState(model, vocab)
    assert typing.expect("t", top=4).top  # the first keystroke: its one token, one copy each way
    assert copies_in == [[vocab.index["t"]]] and len(created) == 1 and copies_out == [2 * 4]
    created.clear(), copies_in.clear(), copies_out.clear()
    got = typing.expect(typed, top=4)  # the rest at once: a paste, or keys typed faster than answered
    new = vocab.encode_prompt(typed)[0][1:]
    assert copies_in == [new] and len(created) == 1  # one tensor for all of them, one copy to the device
    assert copies_out == [2 * 4 + len(new)]  # one copy back: the top 4 (ids, probabilities) and each token's
    assert (got.top, got.probs) == (expected.top, expected.probs)
    assert typing.fed == len(new) + 1 and (len(new) > cowrite.STEPPED_FEED) == pasted
