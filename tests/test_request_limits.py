"""What a client asks for can neither end a run nor take its training time: temperatures held to a
range, failures answered to the asker, requests bounded by a window and by a budget of time."""

from __future__ import annotations

import json
import socket
import time

import pytest
import torch
from helpers import LocalRun, tiny_config

from charrnn_tui.engine import events as ev
from charrnn_tui.engine import protocol
from charrnn_tui.engine.config import ModelConfig
from charrnn_tui.engine.model import cowrite, sampling
from charrnn_tui.engine.model.cowrite import TypingState, window_start
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.model.sampling import SampleSettings, TextGenerator, top_next
from charrnn_tui.engine.protocol import AskNextTokens, Prompt, SampleNow, SetTemperature
from charrnn_tui.engine.run import control
from charrnn_tui.engine.run.control import REQUEST_SHARE, RequestBudget
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import SOCKET, unix_address
from charrnn_tui.engine.serve.server import RunServer
from charrnn_tui.engine.text.vocab import CharVocab, WordVocab

WORDS = "the cat sat on the mat . the dog sat on the log . a cat and a dog ! "
HIDDEN = 24


# ---- a run and its clients ------------------------------------------------------------------------
class Raw:
    """A welcomed client on a raw socket, reading whatever the run sends it."""

    def __init__(self, run: LocalRun):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        with unix_address(run.run_dir / SOCKET) as address:
            self.sock.connect(address)
        self.buffer = b""
        self.seen: list[dict] = []
        self.send(protocol.hello())
        self.until(lambda m: m["type"] == "welcome")

    def send(self, message: dict) -> None:
        self.sock.sendall(protocol.encode(message))

    def until(self, predicate, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                self.seen.append(json.loads(line))
                if predicate(self.seen[-1]):
                    return self.seen[-1]
            chunk = self.sock.recv(1 << 16)
            assert chunk, f"the run closed the connection; last: {self.seen[-3:]}"
            self.buffer += chunk
        raise AssertionError(f"timed out; last: {self.seen[-3:]}")

    def close(self) -> None:
        self.sock.close()


def notice(text: str):
    return lambda m: m["type"] == "event" and m["event"]["event"] == "Notice" and text in m["event"]["message"]


def event(name: str, **fields):
    return lambda m: (m["type"] == "event" and m["event"]["event"] == name
                      and all(m["event"].get(k) == v for k, v in fields.items()))


def wait_steps(run: LocalRun, more: int, timeout: float = 60.0) -> None:
    """Training goes on: `more` steps after now (a run that ended fails this at once)."""
    start = run.trainer.trained.step
    deadline = time.monotonic() + timeout
    while run.trainer.trained.step < start + more:
        assert run.thread.is_alive(), f"the run ended: {run.result} {run.trainer.error}"
        assert time.monotonic() < deadline, f"training stalled at step {run.trainer.trained.step}"
        time.sleep(0.02)
    assert run.trainer.state == "training"


@pytest.fixture
def top_k_run(repetitive_text, runs_dir):
    run = LocalRun(tiny_config(repetitive_text, top_k=3, report_interval=0.05, eval_interval=10_000),
                   runs_dir, "top-k").start()
    yield run
    run.stop()
    assert not run.thread.is_alive()


def test_a_temperature_of_1e_300_on_a_top_k_run_is_raised_to_the_lowest_and_the_run_goes_on(top_k_run):
    asker, other = Raw(top_k_run), Raw(top_k_run)
    asker.send(protocol.request_message(protocol.SetTemperature(temperature=1e-300)))
    asker.until(notice("below 0.05"))
    asker.until(event("SettingsChanged", temperature=protocol.MIN_TEMPERATURE))
    asker.send(protocol.request_message(protocol.Prompt(text="the quick", length=40, temperature=1e-300)))
    asker.until(notice("below 0.05"))
    started = asker.until(event("SampleStarted", source="temperatures"))
    assert started["event"]["temperature"] == protocol.MIN_TEMPERATURE
    asker.until(event("SampleFinished", sample_id=started["event"]["sample_id"]))
    # at the run's temperature, now 0.05
    asker.send(protocol.request_message(protocol.Prompt(text="the quick", length=40)))
    asker.until(event("SampleFinished", sample_id=started["event"]["sample_id"] + 1))
    wait_steps(top_k_run, 30)
    assert top_k_run.trainer.temperature == protocol.MIN_TEMPERATURE
    # The notices were the asker's alone; the change of setting, everyone's.
    other.until(event("SettingsChanged", temperature=protocol.MIN_TEMPERATURE))
    other.until(event("SampleFinished", sample_id=started["event"]["sample_id"] + 1))
    assert not any(notice("below")(m) for m in other.seen)
    asker.close()
    other.close()


@pytest.mark.parametrize("temperature", [0.0, -1.0, 10.5])
def test_what_is_not_a_temperature_is_refused_to_its_sender(top_k_run, temperature):
    asker = Raw(top_k_run)
    asker.send(protocol.request_message(protocol.SetTemperature(temperature=temperature)))
    error = asker.until(lambda m: m["type"] == "error")
    assert "temperature must be above 0 and at most 10" in error["message"]
    wait_steps(top_k_run, 10)
    assert top_k_run.trainer.temperature == 0.8
    asker.close()


def test_top_k_and_top_p_at_a_vanishing_temperature_are_greedy_not_an_error():
    vocab = CharVocab.build("abcdefgh \n")
    model = CharRNN(ModelConfig(kind="lstm", layers=1, hidden=16, embedding=8, vocab_size=len(vocab)))
    gen = TextGenerator(model, vocab)
    greedy = gen.generate("abc", SampleSettings(length=30, greedy=True)).text
    for settings in (SampleSettings(length=30, temperature=1e-300, top_k=3, seed=1),
                     SampleSettings(length=30, temperature=1e-300, top_p=0.9, seed=1)):
        assert gen.generate("abc", settings).text == greedy


def _raise(*args, **kwargs):
    raise RuntimeError("broken on purpose")


@pytest.mark.parametrize("request_, target, said, answer", [
    (protocol.Prompt(text="the quick", length=30), "charrnn_tui.engine.model.sampling.TextGenerator.stream",
     "continuation failed", "SampleFinished"),
    (protocol.SampleNow(), "charrnn_tui.engine.model.sampling.TextGenerator.stream", "sample failed",
     "SampleFinished"),
    (protocol.AskNextTokens(text="the qu"), "charrnn_tui.engine.model.cowrite.TypingState.expect", "no next tokens",
     "NextTokens"),
    (protocol.EvaluateNow(), "charrnn_tui.engine.run.evaluating.evaluate", "evaluation failed", "Evaluated"),
    (protocol.SaveNow(), "charrnn_tui.engine.run.saving.save_checkpoint", "save failed", "CheckpointSaved"),
])
def test_a_request_that_fails_is_told_to_its_sender_and_the_run_goes_on(top_k_run, monkeypatch, request_, target,
                                                                         said, answer):
    asker, other = Raw(top_k_run), Raw(top_k_run)
    monkeypatch.setattr(target, _raise)
    asker.send(protocol.request_message(request_))
    message = asker.until(notice(said))["event"]["message"]
    assert "RuntimeError: broken on purpose" in message and "training goes on" in message
    wait_steps(top_k_run, 30)
    monkeypatch.undo()
    asker.send(protocol.request_message(request_))  # and the same request is served again
    asker.until(event(answer))
    other.until(event(answer))  # everyone sees the answer; the failure was the asker's alone
    assert not any(notice("broken")(m) for m in other.seen)
    asker.close()
    other.close()


def test_a_live_sample_that_fails_is_a_warning_and_the_run_finishes(repetitive_text, runs_dir, monkeypatch):
    monkeypatch.setattr(TextGenerator, "stream", _raise)
    events: list = []
    trainer = Trainer(tiny_config(repetitive_text, max_steps=30, sample_interval=1e-9), runs_dir=runs_dir,
                      on_event=events.append)
    assert trainer.run() == "finished"
    assert any(isinstance(e, ev.Notice) and "a sample failed: RuntimeError" in e.message for e in events)


def test_an_event_that_cannot_be_encoded_is_not_sent_and_does_not_raise(capsys):
    server = RunServer(trainer=None)
    got: list = []

    class Client:
        viewer = False

        def send(self, data):
            got.append(data)

    server.clients.add(Client())
    server.handle_event(ev.Notice(object()))  # not JSON
    server.handle_event(ev.Notice("fine"))
    assert [json.loads(d)["event"]["message"] for d in got] == ["fine"]
    assert "not sent to clients: Notice" in capsys.readouterr().err


# ---- what a request costs: a window ---------------------------------------------------------------
def _word_model():
    vocab = WordVocab.build(WORDS * 5, min_freq=1)
    torch.manual_seed(3)
    model = CharRNN(ModelConfig(kind="lstm", layers=2, hidden=HIDDEN, embedding=8, vocab_size=len(vocab)))
    assert len(vocab) != HIDDEN  # so that a logits row cannot pass for a state below
    return model, vocab


def _held(typing: TypingState):
    """Every tensor a TypingState holds between keystrokes (its model and vocabulary aside)."""
    def walk(value):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from walk(v)
    return [t for k, v in vars(typing).items() if k not in ("model", "stepper", "vocab") for t in walk(v)]


def _sizes(model: CharRNN):
    """Records the time steps each call of the recurrent layers reads and the positions each call
    of the head maps to the vocabulary."""
    seen = {"rnn": [], "head": []}
    model.rnn.register_forward_hook(lambda m, args, out: seen["rnn"].append(args[0].shape[1]))
    model.head.register_forward_hook(lambda m, args, out: seen["head"].append(args[0].shape[:-1].numel()))
    return seen


@pytest.mark.parametrize("repeats", [40, 160])  # 720 and 2,880 words, against a window of 64
def test_a_long_prompt_is_read_from_its_last_window_and_the_head_sees_one_position(monkeypatch, repeats):
    monkeypatch.setattr(sampling, "PROMPT_WINDOW", 64)
    model, vocab = _word_model()
    seen = _sizes(model)
    gen = TextGenerator(model, vocab)
    text = WORDS * repeats
    ranked, notes = gen.next_tokens(text, 3)
    assert seen == {"rnn": [64], "head": [1]}
    tokens = len(vocab.encode_prompt(text)[0])
    assert notes == [f"the text is {tokens:,} tokens: the model read the last 64 (its state starts there)"]
    # The same answer as a prompt of the window alone: nothing before it was read.
    alone, _ = gen.next_tokens(vocab.decode(vocab.encode_prompt(text)[0][-64:]), 3)
    assert ranked == alone
    seen["rnn"].clear(), seen["head"].clear()
    result = gen.generate(text, SampleSettings(length=5, seed=0))
    assert seen["rnn"] == [64] and seen["head"] == [1] * 5  # the warm-up's last position, then a step each
    assert notes[0] in result.notes


def _full_pass(model: CharRNN, ids: list[int]):
    """Each token's probability given those before, and the top 5 after, from one forward."""
    with torch.no_grad():
        model.eval()
        logits, _ = model(torch.tensor([ids]))
    probs = torch.softmax(logits[0], dim=-1)
    values, order = top_next(logits[0, -1], 5, mask_unk=True)
    return [float(probs[i, ids[i + 1]]) for i in range(len(ids) - 1)], order.tolist(), values.tolist()


@pytest.mark.parametrize("repeats", [40, 160])
def test_a_pasted_text_is_fed_a_window_in_chunks_and_keeps_no_logits(monkeypatch, repeats):
    monkeypatch.setattr(cowrite, "FEED_CHUNK", 16)
    model, vocab = _word_model()
    seen = _sizes(model)
    typing = TypingState(model, vocab, window=64)
    text = (WORDS * repeats + "the cat sat on the mat . " * 2).rstrip()
    got = typing.expect(text)
    every = vocab.encode_prompt(text)[0]
    start = window_start(len(every), 64)
    assert 32 <= len(typing.layers) == typing.fed == len(every) - start <= 64
    assert max(seen["rnn"]) == 16 and max(seen["head"]) == 16  # whatever the text: a chunk at a time
    held = _held(typing)  # states (h and c of 2 layers) at chunk ends, and no logits row
    assert held and all(t.shape[-1] == HIDDEN for t in held) and len(held) <= 4 * 64 // 16
    # What a forward over the window gives; shown whole, the text before the window joining its
    # first token, which is not scored (it has no context).
    probs, order, values = _full_pass(model, every[start:])
    assert got.probs == pytest.approx(probs, abs=1e-5)
    assert [t for t, _ in got.top] == [vocab.tokens[i] for i in order]
    assert [p for _, p in got.top] == pytest.approx(values, abs=1e-5)
    assert sum(got.token_lengths) == len(text) and len(got.probs) == len(got.token_lengths) - 1
    assert f"the model read the last {len(every) - start}" in got.notes[-1]
    fed = typing.fed
    more = text + " the cat"  # typing on feeds what is new, a step each, not the window again
    assert window_start(len(vocab.encode_prompt(more)[0]), 64) == start
    typing.expect(more)
    assert typing.fed == fed + 2 and seen["head"][-2:] == [1, 1]
    edited = text[:-20] + " the dog"  # back into the pasted text: from the last state kept there
    every = vocab.encode_prompt(edited)[0]
    assert window_start(len(every), 64) == start
    got = typing.expect(edited)
    assert typing.fed - fed - 2 <= 16 + 2
    assert got.probs == pytest.approx(_full_pass(model, every[window_start(len(every), 64):])[0], abs=1e-5)


def test_the_window_moves_in_half_windows():
    assert [window_start(n, 8) for n in (1, 8, 9, 11, 12, 13, 16, 17)] == [0, 0, 4, 4, 8, 8, 12, 12]
    assert all(4 <= n - window_start(n, 8) <= 8 for n in range(9, 200))


# ---- what a request costs: a share of the training time -------------------------------------------
class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_defers_work_past_its_share_of_the_training_time():
    clock = Clock()
    budget = RequestBudget(share=0.2, burst=0.1, clock=clock)
    served = trained = 0.0
    for _ in range(1000):  # a step of 10 ms, then whatever requests the budget allows, 7 ms each
        trained += 0.01
        budget.earn(0.01)
        for _ in range(100):  # bounded: a budget that never says no fails here, not hangs
            if not budget.allows():
                break
            with budget.spending():
                clock.now += 0.007
            served += 0.007
    assert served <= 0.2 * trained + 0.1 + 0.007
    assert served >= 0.2 * trained - 0.007  # and what it allows is served: the share is not lost
    assert budget.spent == pytest.approx(served)


def test_time_spent_inside_work_already_charged_is_charged_once():
    clock = Clock()
    budget = RequestBudget(share=0.2, burst=1.0, clock=clock)
    with budget.spending():
        clock.now += 0.1
        with budget.spending():  # a keystroke answered inside an evaluation a client asked for
            clock.now += 0.1
    assert budget.credit == pytest.approx(0.8)


def test_a_run_serves_requests_within_the_budget_and_settings_at_once(repetitive_text, runs_dir):
    """The loop's side, with a fake clock: a typist who never stops gets at most REQUEST_SHARE of
    the training time; a temperature set meanwhile applies at the next boundary regardless."""
    trainer = Trainer(tiny_config(repetitive_text), runs_dir=runs_dir)
    clock = Clock()
    trainer.controls.request_budget = RequestBudget(clock=clock)
    answered: list[str] = []

    class Typist:  # the run's answers, each costing 5 ms of the fake clock
        def expect(self, text, top):
            clock.now += 0.005
            answered.append(text)

    trainer.answers = Typist()
    trainer.trained.train_seconds = 0.0
    trainer.temperature = 0.8
    for k in range(400):  # a boundary every 10 ms of training, a keystroke waiting at each
        trainer.request(AskNextTokens(f"{k}"))
        trainer.trained.train_seconds += 0.01
        if k == 200:
            trainer.request(SetTemperature(1.5))
            assert not trainer.controls.request_budget.allows()  # spent: the keystroke waits, the setting does not
        trainer.serve_requests()
        if k == 200:
            assert trainer.temperature == 1.5
    spent = trainer.controls.request_budget.spent
    assert spent <= REQUEST_SHARE * 4.0 + control.REQUEST_BURST + 0.005
    assert 100 <= len(answered) < 400  # 20% of 4 s at 5 ms each is 160; the rest of the time, training
    numbers = [int(t) for t in answered]
    assert numbers == sorted(numbers) and numbers[-1] >= 395  # the latest text each time, and still answering


def test_a_stop_drops_what_was_set_aside_and_tells_who_asked(repetitive_text, runs_dir):
    trainer = Trainer(tiny_config(repetitive_text), runs_dir=runs_dir)
    trainer.controls.request_budget.credit = -1.0  # spent: everything is set aside
    told: list[ev.Notice] = []
    for _ in range(control.MAX_QUEUED_WORK):
        trainer.request(Prompt("ab"), reply=told.append)
    with pytest.raises(protocol.RequestRefused, match="busy"):
        trainer.request(SampleNow())
    trainer.serve_requests()
    trainer.pull(trainer.controls.drop())
    assert [n.message for n in told] == ["the run stopped before the prompt was served"] * control.MAX_QUEUED_WORK
    trainer.request(SampleNow())  # nothing is counted as waiting any more
    assert trainer.controls._queued_work == 1


def test_a_long_prompt_is_written_a_piece_at_a_time_between_steps(repetitive_text, runs_dir):
    pieces_at: list[int] = []
    trainer: Trainer

    def on_event(e):
        if isinstance(e, ev.SampleText) and e.sample_id == 1:
            pieces_at.append(trainer.trained.step)

    trainer = Trainer(tiny_config(repetitive_text, max_steps=400), runs_dir=runs_dir, on_event=on_event)
    trainer.controls.request_budget = RequestBudget(burst=1e-9)  # no time banked: a piece, then training earns the next
    trainer.request(Prompt("the quick", 160))
    assert trainer.run() == "finished"
    assert len(pieces_at) == 10  # 160 tokens in pieces of 16
    assert len(set(pieces_at)) == len(pieces_at)  # each at a step of its own
