import pytest
import torch
from helpers import tiny_config

from charrnn_tui.engine.config import ModelConfig
from charrnn_tui.engine.errors import ConfigError
from charrnn_tui.engine.model.inference import load_model
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.model.sampling import SampleSettings, TextGenerator
from charrnn_tui.engine.protocol import Prompt
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import LATEST
from charrnn_tui.engine.text.vocab import CharVocab

TEXT = "the quick brown fox jumps over the lazy dog. "


@pytest.fixture(scope="module")
def fox_checkpoint(tmp_path_factory):
    """A model that has learnt the repetitive text by heart."""
    folder = tmp_path_factory.mktemp("memorised")
    corpus = folder / "fox.txt"
    corpus.write_text(TEXT * 60)
    torch.manual_seed(0)
    trainer = Trainer(tiny_config(corpus, max_steps=400, hidden=48), runs_dir=folder / "runs", run_name="fox")
    assert trainer.run() == "finished"
    return folder / "runs" / "fox" / LATEST


@pytest.fixture(scope="module")
def memorised(fox_checkpoint):
    return load_model(fox_checkpoint, "cpu")


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


def _fixed_distribution_generator(logits: list[float]) -> TextGenerator:
    """A model whose next-token logits are `logits` whatever came before."""
    vocab = CharVocab([chr(ord("a") + i) for i in range(len(logits))])
    model = CharRNN(ModelConfig(kind="lstm", layers=1, hidden=4, embedding=2, vocab_size=len(vocab)))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.head.bias.copy_(torch.tensor(logits))
    return TextGenerator(model, vocab)


def _frequencies(text: str, size: int) -> torch.Tensor:
    counts = torch.bincount(torch.tensor([ord(c) - ord("a") for c in text]), minlength=size)
    return counts / counts.sum()


LOGITS = [2.0, 1.0, 0.0, -1.0]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_samples_follow_the_softmax_of_the_logits_over_the_temperature(temperature):
    gen = _fixed_distribution_generator(LOGITS)
    text = gen.generate("a", SampleSettings(length=6000, temperature=temperature, seed=11)).text
    expected = torch.softmax(torch.tensor(LOGITS) / temperature, dim=0)
    assert torch.allclose(_frequencies(text, 4), expected, atol=0.02), (_frequencies(text, 4), expected)


@pytest.mark.parametrize(
    "settings, expected",
    [
        (SampleSettings(top_k=2), torch.softmax(torch.tensor([2.0, 1.0]) / 0.8, dim=0).tolist() + [0.0, 0.0]),
        (SampleSettings(top_p=0.7, temperature=1.0), [0.731, 0.269, 0.0, 0.0]),  # 0.644 < 0.7, so two stay
        (SampleSettings(top_k=3, temperature=0.4),
         torch.softmax(torch.tensor([2.0, 1.0, 0.0]) / 0.4, 0).tolist() + [0.0]),
    ],
)
def test_top_k_and_top_p_sample_from_the_renormalised_head_of_the_distribution(settings, expected):
    gen = _fixed_distribution_generator(LOGITS)
    settings.length, settings.seed = 6000, 5
    text = gen.generate("a", settings).text
    assert torch.allclose(_frequencies(text, 4), torch.tensor(expected, dtype=torch.float32), atol=0.02)


def test_greedy_always_takes_the_likeliest_token():
    gen = _fixed_distribution_generator([0.0, 3.0, 2.9, 1.0])
    assert gen.generate("a", SampleSettings(length=50, greedy=True)).text == "b" * 50


def test_plain_temperature_sampling_never_falls_back_to_softmax_and_multinomial(monkeypatch):
    """The default path is Gumbel-max on the device: one add and one argmax per token."""
    def refuse(*args, **kwargs):
        raise AssertionError("multinomial on the default path")

    monkeypatch.setattr(torch, "multinomial", refuse)
    assert len(_random_generator().generate("ab", SampleSettings(length=30, seed=1)).text) == 30


def test_top_k_and_top_p_samples_are_seeded():
    gen = _random_generator()
    for settings in (dict(top_k=4), dict(top_p=0.9)):
        a = gen.generate("ab", SampleSettings(length=60, seed=7, **settings)).text
        assert a == gen.generate("ab", SampleSettings(length=60, seed=7, **settings)).text
        assert a != gen.generate("ab", SampleSettings(length=60, seed=8, **settings)).text


def test_an_empty_prompt_starts_from_a_newline_or_else_the_first_token():
    model = _random_generator().model  # ten tokens
    gen = TextGenerator(model, CharVocab(list("\t\nabcdefgh")))  # the newline is token 1
    assert gen.prepare("") == ([1], [])
    greedy = SampleSettings(length=20, greedy=True)
    assert gen.generate("", greedy).text == gen.generate("\n", greedy).text
    no_newline = TextGenerator(model, CharVocab(list("xabcdefgh ")))
    assert no_newline.prepare("") == ([0], [])
    assert no_newline.prepare("☃") == ([0], ["'☃' dropped (not in vocabulary)"])


def test_a_continuation_records_its_prompt_and_notes():
    result = _random_generator().generate("ábc", SampleSettings(length=5, seed=0))
    assert result.prompt == "ábc" and result.notes == ["'á' -> 'a'"] and len(result.text) == 5


@pytest.mark.parametrize("settings", [SampleSettings(length=41, seed=3, chunk=7),
                                      SampleSettings(length=30, top_k=3, temperature=0.5, seed=1),
                                      SampleSettings(length=20, greedy=True)])
def test_each_token_comes_with_the_probability_the_model_gave_it(settings):
    """At temperature 1, whatever the sampler's settings: the model's own confidence."""
    gen = _random_generator()
    torch.manual_seed(0)
    result = gen.generate("abc", settings)
    assert len(result.probs) == len(result.token_lengths) == settings.length
    assert result.token_lengths == [1] * settings.length
    prompt = gen.prepare("abc")[0]
    ids = prompt + [gen.vocab.index[c] for c in result.text]
    with torch.no_grad():
        logits, _ = gen.model(torch.tensor([ids]))
    probs = torch.softmax(logits[0, len(prompt) - 1 : -1], dim=-1)
    expected = probs.gather(1, torch.tensor(ids[len(prompt):]).unsqueeze(1)).squeeze(1)
    assert torch.allclose(torch.tensor(result.probs), expected, atol=1e-5)
    if settings.greedy:
        assert torch.allclose(torch.tensor(result.probs), probs.max(dim=-1).values, atol=1e-5)


def test_word_tokens_carry_their_lengths_in_characters():
    from charrnn_tui.engine.text.vocab import WordVocab

    vocab = WordVocab.build("the cat sat on the mat. the dog sat, the cat ran! " * 3, min_freq=1)
    model = CharRNN(ModelConfig(kind="gru", layers=1, hidden=16, embedding=8, vocab_size=len(vocab)))
    result = TextGenerator(model, vocab).generate("the", SampleSettings(length=25, seed=2, chunk=4))
    assert len(result.token_lengths) == len(result.probs) == 25
    assert sum(result.token_lengths) == len(result.text)
    assert any(n > 1 for n in result.token_lengths)


def test_a_prompt_at_a_temperature_of_its_own_leaves_the_runs_alone(repetitive_text, runs_dir):
    from charrnn_tui.engine.events import SampleStarted
    from charrnn_tui.engine.protocol import RequestRefused

    events: list = []
    trainer = Trainer(tiny_config(repetitive_text, max_steps=3), runs_dir=runs_dir, on_event=events.append)
    for bad in (0, -1, 10.5, float("nan")):
        with pytest.raises(RequestRefused, match="temperature must be above 0 and at most 10"):
            trainer.request(Prompt("ab", None, bad))
    trainer.request(Prompt("ab", 12, 1.5))
    trainer.request(Prompt("ab", 12))
    trainer.run()
    started = [e for e in events if isinstance(e, SampleStarted) and e.prompt == "ab"]
    assert [(e.source, e.temperature) for e in started] == [("temperatures", 1.5), ("prompt", 0.8)]
    assert trainer.temperature == 0.8


def _cli(*argv: str) -> tuple[int, str]:
    import io

    from charrnn_tui.engine.cli.main import build_parser
    from charrnn_tui.engine.cli.model_commands import run_next, run_sample

    args = build_parser().parse_args(list(argv))
    out = io.StringIO()
    code = (run_next if args.command == "next" else run_sample)(args, out)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def word_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("words")
    corpus = folder / "words.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log. a cat and a dog! " * 40 + "zebra quokka")
    torch.manual_seed(0)
    trainer = Trainer(tiny_config(corpus, tokens="word", min_freq=2, max_steps=150, seq_len=8),
                      runs_dir=folder / "runs", run_name="w")
    assert trainer.run() == "finished"
    return folder / "runs" / "w" / LATEST


@pytest.mark.parametrize("level", ["char", "word"])
@pytest.mark.parametrize("prime", ["the quick", "the cat sat on", "", "zebra"])
def test_next_ranks_tokens_and_its_first_is_what_greedy_sampling_writes(level, prime, fox_checkpoint, word_model):
    import json

    path = fox_checkpoint if level == "char" else word_model
    code, out = _cli("next", str(path), "--prime", prime, "--top", "5", "--json", "--device", "cpu")
    assert code == 0
    data = json.loads(out)
    assert data["prime"] == prime and len(data["top"]) == 5
    probs = [t["prob"] for t in data["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert all(t["token"] != "<unk>" for t in data["top"])
    _, greedy = _cli("sample", str(path), "--prime", prime, "-n", "1", "--greedy", "--device", "cpu")
    assert greedy == prime + data["top"][0]["token"] + "\n"


def test_weights_gone_non_finite_give_no_confidence_rather_than_nan():
    gen = _random_generator()
    with torch.no_grad():
        gen.model.head.weight.fill_(float("nan"))
    result = gen.generate("ab", SampleSettings(length=10, seed=1))
    assert result.probs == [0.0] * 10


@pytest.mark.parametrize("settings", [SampleSettings(length=10_000, seed=4, chunk=256),
                                      SampleSettings(length=2_000, seed=4, top_k=3),
                                      SampleSettings(length=500, greedy=True)])
def test_unk_is_never_sampled_even_when_the_model_favours_it(settings):
    from charrnn_tui.engine.text.vocab import UNK, WordVocab

    vocab = WordVocab.build("the cat sat on the mat . a dog ran ! " * 5, min_freq=1)
    model = CharRNN(ModelConfig(kind="gru", layers=1, hidden=16, embedding=8, vocab_size=len(vocab)))
    with torch.no_grad():
        model.head.bias[0] = 8.0  # <unk> most of the probability
    gen = TextGenerator(model, vocab)
    result = gen.generate("the", settings)
    assert UNK not in result.text and len(result.probs) == settings.length
    allowed = gen.generate("the", SampleSettings(length=200, seed=4, allow_unk=True, greedy=settings.greedy))
    assert UNK in allowed.text
    ranked, _ = gen.next_tokens("the", 3)
    assert UNK not in [t for t, _ in ranked] and gen.next_tokens("the", 1, allow_unk=True)[0][0][0] == UNK


def test_eval_of_a_word_model_reports_perplexity_per_word_and_a_char_model_bits_per_char(word_model, fox_checkpoint):
    import math
    import re

    from charrnn_tui.engine.cli.main import build_parser
    from charrnn_tui.engine.cli.model_commands import run_eval

    def evaluate(path):
        import io

        out = io.StringIO()
        assert run_eval(build_parser().parse_args(["eval", str(path), "--device", "cpu"]), out) == 0
        return out.getvalue()

    line = evaluate(word_model)
    match = re.search(r"([\d,]+) tokens predicted \(([\d,]+) of them words\); perplexity ([\d.]+) per word "
                      r"\(([\d.]+) nats/token, perplexity ([\d.]+) per token\)", line)
    assert match, line
    tokens, words = (int(match[i].replace(",", "")) for i in (1, 2))
    nats = float(match[4])
    assert 0 < words < tokens
    assert float(match[3]) == pytest.approx(math.exp(nats * tokens / words), rel=2e-3)
    assert float(match[5]) == pytest.approx(math.exp(nats), rel=2e-3)
    assert "bits/char (" in evaluate(fox_checkpoint) and "per word" not in evaluate(fox_checkpoint)


@pytest.mark.parametrize(("settings", "error"), [
    (SampleSettings(temperature=float("inf")), "temperature must be a positive number, not inf"),
    (SampleSettings(temperature=0.0), "temperature must be a positive number, not 0.0"),
    (SampleSettings(top_p=0.0), "top-p must be in (0, 1], not 0.0"),
    (SampleSettings(top_k=0), "top-k must be between 1 and the vocabulary size (10), not 0"),
    (SampleSettings(length=-1), "length must be 0 or more, not -1"),
    (SampleSettings(top_p=1.0, top_k=10, length=0), None),  # the edges that are allowed
])
def test_sample_settings_are_checked_at_their_edges(settings, error):
    if error is None:
        settings.validate(10)
        return
    with pytest.raises(ConfigError) as raised:
        settings.validate(10)
    assert str(raised.value) == error


# ---- the sampler on its own: exact draws from the kept set, no host sync, one copy back a chunk -------------

SPREAD = [1.5, 0.3, 2.2, -0.4, 0.9, 0.0, -1.2, 1.1]  # eight distinct logits
# The chi-square statistic's 0.999 quantile by degrees of freedom: a correct sampler exceeds it once
# in a thousand seeds; these draws are seeded, so the test is deterministic either way.
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32}


def _kept_distribution(logits: list[float], temperature: float, top_k: int | None, top_p: float | None) -> dict:
    """What top-k and top-p sampling should draw from, worked out one token at a time: the softmax
    of logits / T over the k likeliest, then, renormalised, over the smallest head of those whose
    mass reaches top_p (a token stays if the mass before it is at most top_p)."""
    probs = torch.softmax(torch.tensor(logits, dtype=torch.float64) / temperature, dim=0).tolist()
    order = sorted(range(len(logits)), key=lambda i: -logits[i])
    kept = order[:top_k] if top_k is not None else order
    total = sum(probs[i] for i in kept)
    if top_p is not None:
        before, head = 0.0, []
        for i in kept:
            if before > top_p:
                break
            head.append(i)
            before += probs[i] / total
        kept = head
    total = sum(probs[i] for i in kept)
    return {i: probs[i] / total for i in kept}


def _draws(logits: list[float], settings: SampleSettings, n: int, seed: int, device: str = "cpu") -> torch.Tensor:
    """n independent draws of the sampler from one row of logits, as one batch (the chunk's noise
    for n tokens, each row with its own)."""
    from charrnn_tui.engine.model.sampling import _Picker

    generator = torch.Generator(device=device).manual_seed(seed)
    picker = _Picker(settings, generator, len(logits), torch.device(device))
    picker.draw_noise(n)
    return picker.pick(torch.tensor(logits, device=device).expand(n, -1), slice(None)).cpu()


SAMPLERS = [
    SampleSettings(temperature=0.7),
    SampleSettings(temperature=1.0, top_k=3),
    SampleSettings(temperature=0.9, top_p=0.8),
    SampleSettings(temperature=1.3, top_k=5, top_p=0.6),
    SampleSettings(temperature=2.0, top_p=0.95),
    SampleSettings(temperature=1.0, top_k=1),
]


@pytest.mark.parametrize("settings", SAMPLERS, ids=lambda s: f"T{s.temperature}-k{s.top_k}-p{s.top_p}")
def test_draws_follow_the_softmax_over_exactly_the_kept_set(settings):
    expected = _kept_distribution(SPREAD, settings.temperature, settings.top_k, settings.top_p)
    n = 100_000
    counts = torch.bincount(_draws(SPREAD, settings, n, seed=20), minlength=len(SPREAD))
    outside = [i for i in range(len(SPREAD)) if i not in expected]
    assert all(counts[i] == 0 for i in outside), (counts, expected)  # never a token the set leaves out
    assert all(counts[i] > 0 for i in expected)  # and every token it keeps turns up
    if len(expected) > 1:
        chi2 = sum((counts[i].item() - n * p) ** 2 / (n * p) for i, p in expected.items())
        assert chi2 < CHI2_999[len(expected) - 1], (chi2, counts, expected)


def test_the_kept_set_at_its_edges():
    """softmax(SPREAD) sorted: 0.405, 0.201, 0.135, 0.110, 0.061, 0.045, 0.030, 0.014 (tokens 2, 0, 7,
    4, 1, 5, 3, 6). A token stays while the mass before it is at most top_p."""
    def kept(**settings):
        return set(_draws(SPREAD, SampleSettings(**settings), 20_000, seed=1).unique().tolist())

    assert kept(temperature=1.0, top_p=0.3) == {2}  # 0.405 before token 0
    assert kept(temperature=1.0, top_p=0.5) == {2, 0}
    assert kept(temperature=1.0, top_p=0.7) == {2, 0, 7}
    assert kept(temperature=1.0, top_k=4) == {2, 0, 7, 4}
    assert kept(temperature=1.0, top_k=4, top_p=0.6) == {2, 0}  # over the four: 0.476 + 0.236 > 0.6
    assert kept(temperature=1.0, top_p=1.0) == set(range(8))


@pytest.mark.parametrize("settings", [dict(top_k=4), dict(top_p=0.9), dict(top_k=5, top_p=0.5), dict()])
def test_no_sampler_calls_multinomial(monkeypatch, settings):
    """Every sampled mode is Gumbel-max on the device: multinomial's input checks cost host syncs
    (or, on CUDA, a device-side assert) for every token."""
    def refuse(*args, **kwargs):
        raise AssertionError("multinomial")

    monkeypatch.setattr(torch, "multinomial", refuse)
    assert len(_random_generator().generate("ab", SampleSettings(length=30, seed=1, **settings)).text) == 30


def test_non_finite_weights_under_top_k_and_top_p_give_text_with_no_confidence_not_an_error():
    gen = _random_generator()
    with torch.no_grad():
        gen.model.head.weight.fill_(float("nan"))
    for settings in (dict(top_k=3), dict(top_p=0.9)):
        result = gen.generate("ab", SampleSettings(length=10, seed=1, **settings))
        assert len(result.text) == 10 and result.probs == [0.0] * 10


@pytest.mark.parametrize("settings", [SampleSettings(length=50, chunk=8, seed=1),
                                      SampleSettings(length=50, chunk=8, seed=1, top_k=3, top_p=0.9),
                                      SampleSettings(length=50, chunk=8, greedy=True)])
def test_each_chunk_comes_back_in_one_copy_with_its_tokens_and_probabilities(monkeypatch, settings):
    from charrnn_tui.engine.model import sampling

    gen = _random_generator()
    expected = gen.generate("ab", settings)
    copies, reads = [], {"tolist": 0, "item": 0, "cpu": 0}
    real_to_host = sampling.to_host

    def to_host(values):
        copies.append(tuple(values.shape))
        return real_to_host(values)

    def counted(name):
        real = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            reads[name] += 1
            return real(self, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(sampling, "to_host", to_host)
    for name in reads:
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    result = gen.generate("ab", settings)
    assert copies == [(2, 8)] * 6 + [(2, 2)]  # tokens and probabilities, stacked: one copy a chunk
    assert reads == {"tolist": 7, "item": 0, "cpu": 7}  # and nothing else read back
    assert (result.text, result.probs) == (expected.text, expected.probs)
