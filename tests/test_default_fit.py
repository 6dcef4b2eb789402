"""A default run fitted to its text and device: model size and dropout from the corpus, a batch that
keeps an epoch of a few hundred steps (a preset's and --batch-size auto's), the first cosine of an
open-ended run bounded in training time, all said in one line at start-up."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import examples, run_cli, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.events import Notice, Progress
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.protocol import Stop
from charrnn_tui.engine.run import run_setup
from charrnn_tui.engine.run.trainer import Trainer


@settings(max_examples=examples(300), deadline=None)
@given(batch=st.integers(1, 4096), seq_len=st.integers(1, 512), train_tokens=st.integers(2, 10**9))
def test_a_fitted_batch_keeps_an_epoch_of_a_few_hundred_steps_or_stays_at_its_floor(batch, seq_len, train_tokens):
    fitted = cfg.fitted_batch_size(batch, seq_len, train_tokens)
    floor = min(batch, max(1, -(-cfg.MIN_STEP_TOKENS // seq_len)))  # 1,024 tokens a step, or the batch given
    assert floor * seq_len >= min(batch * seq_len, cfg.MIN_STEP_TOKENS)
    assert floor <= fitted <= batch
    # lowered only as far as an epoch needs: EPOCH_STEPS steps at least, or the floor
    assert fitted == floor or train_tokens // (fitted * seq_len) >= cfg.EPOCH_STEPS
    # and no further: one more stream would make the epoch too short (or the batch is the one given)
    assert fitted in (batch, floor) or train_tokens // ((fitted + 1) * seq_len) < cfg.EPOCH_STEPS


def test_the_gpu_preset_on_tiny_shakespeare_and_smaller_texts():
    large = cfg.apply_preset(cfg.TrainConfig(), "large")
    assert large.fit_batch_size and all(p["fit_batch_size"] for p in cfg.PRESETS.values())
    # 2x1024 (13.2M weights) suits about 13.2M characters; tiny-shakespeare gets 2x544 with dropout
    assert cfg.recurrent_parameters(large.model, 1024) == pytest.approx(cfg.FITTED_ON["large"], rel=0.01)
    shakespeare = cfg.fit_to_corpus(large, 1_115_394)
    assert (shakespeare.model.layers, shakespeare.model.hidden, shakespeare.model.dropout) == (2, 544, 0.25)
    assert cfg.fit_to_corpus(large, 178_887).model.hidden == 352
    assert cfg.fit_to_corpus(large, cfg.FITTED_ON["large"] // 2) == large  # a text that size: as it is
    # its batch: 128 x 256 would read tiny-shakespeare (90% of it) in 30 steps an epoch; 15 streams, 261
    assert cfg.fitted_batch_size(128, 256, 1_003_854) == 15
    assert cfg.fitted_batch_size(128, 256, 160_998) == 4  # The Time Machine: 1,024 tokens a step, 157 steps
    assert cfg.fitted_batch_size(128, 256, 50_000_000) == 128  # a long text keeps the preset's
    assert cfg.fitted_batch_size(1024, 256, 30_000_000) == 457  # --batch-size auto on a 33 MB text
    # the CPU presets' batch is their floor: they are as they were
    small = cfg.apply_preset(cfg.TrainConfig(), "small")
    assert cfg.fitted_batch_size(small.batch_size, small.seq_len, 100) == small.batch_size
    assert cfg.describe_fit(large.model, shakespeare.model, 1_115_394, "large") == (
        "a small corpus (1,115,394 characters; preset large suits 13,200,000): lstm 2x1024 narrowed to 2x544 and "
        "dropout 0.2 raised to 0.25 (--hidden and --dropout set them yourself)")


@pytest.fixture
def longer_text(tmp_path):
    path = tmp_path / "longer.txt"  # 450,000 training characters: 109 streams of 16 keep 256 steps an epoch
    path.write_text("the quick brown fox jumps over the lazy dog, " * 11_112)
    return path


def _first_run(config, runs_dir, notes=()):
    events: list = []
    trainer: Trainer

    def on_event(e):
        events.append(e)
        if isinstance(e, Progress):
            trainer.request(Stop(save=False))

    trainer = Trainer(config, runs_dir=runs_dir, on_event=on_event, notes=notes)
    trainer.run()
    return trainer, [e.message for e in events if isinstance(e, Notice)]


def test_a_presets_batch_is_lowered_on_a_short_text_and_said_in_the_start_up_line(longer_text, runs_dir):
    config = tiny_config(longer_text, batch_size=128, fit_batch_size=True)
    trainer, notes = _first_run(config, runs_dir, notes=("how the model was fitted",))
    assert trainer.config.batch_size == 109
    plan = [m for m in notes if "lowered to" in m]
    assert plan == ["how the model was fitted; batch-size 128 lowered to 109 for 259 steps an epoch, not 219 "
                    "(--batch-size sets it); no stop condition, so the learning rate follows a cosine over the first "
                    "10 epochs (2,590 steps) or 15 minutes of training, whichever ends first, then is divided by 4 "
                    "at each evaluation without a new best"]
    given, _ = _first_run(tiny_config(longer_text, batch_size=128), runs_dir)  # a batch given: kept
    assert given.config.batch_size == 128


def test_a_run_with_a_stop_condition_says_only_its_batch(longer_text, runs_dir):
    _, notes = _first_run(tiny_config(longer_text, batch_size=128, fit_batch_size=True, max_steps=5), runs_dir)
    assert [m for m in notes if "lowered to" in m or "cosine" in m] == [
        "batch-size 128 lowered to 109 for 259 steps an epoch, not 219 (--batch-size sets it)"]


def test_batch_size_auto_on_a_gpu_keeps_an_epoch_of_a_few_hundred_steps(longer_text, runs_dir, monkeypatch):
    monkeypatch.setattr(run_setup, "memory_limited", lambda device: True)  # as on a GPU with room for 1,000
    seen: list[int] = []
    real_forward = CharRNN.forward

    def forward(self, x, state=None):
        seen.append(x.size(0))
        return real_forward(self, x, state)

    monkeypatch.setattr(CharRNN, "forward", forward)
    config = tiny_config(longer_text, batch_size=4, auto_batch_size=True, fit_batch_size=True, max_steps=1)
    trainer, notes = _first_run(config, runs_dir)
    assert trainer.config.batch_size == 109 and max(seen) == 109  # never probed past it
    assert ("--batch-size auto: batch-size 109, the largest that keeps 256 steps an epoch on this text (450,036 "
            "tokens at seq-len 16); cpu memory holds it") in notes
    # without the fit (a config built in Python, or --batch-size given): the largest that fits
    seen.clear()
    uncapped, _ = _first_run(dataclasses.replace(config, fit_batch_size=False), runs_dir)
    assert max(seen) > 109 and uncapped.config.batch_size > 109


def test_headless_start_up_explains_the_default_run_in_one_line(tmp_path):
    result = run_cli("train", "timemachine", "--max-steps", "1", "--headless", "--device", "cpu", "--threads", "1",
                     "--sample-interval", "0", "--runs-dir", str(tmp_path / "runs"), "--preset", "large", "--layers",
                     "1", "--hidden", "32", "--val-fraction", "0.001")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "lowered to" in line]
    # --preset large, named: its model as given, its batch fitted (a 179 kB text: 4 streams of 256, 1,024 tokens)
    assert lines == ["information: batch-size 128 lowered to 4 for 175 steps an epoch, not 5 (--batch-size sets it)"]
    assert "; batch 4 x seq 256;" in result.stdout


def test_train_help_shows_the_batch_that_will_run_for_the_corpus():
    from charrnn_tui.engine.cli.arguments import defaults_here

    _, large = defaults_here(["timemachine", "--preset", "large", "--device", "cpu"])
    assert large["batch_size"] == "4: the preset's 128 would make an epoch under 256 steps"
    assert large["eval_interval"] == "157: one epoch, shorter than the preset's 250"
    _, small = defaults_here(["timemachine", "--device", "cpu"])
    assert small["batch_size"] == "16, or less on a text too short for 256 steps an epoch (to no fewer than 1,024 " \
                                  "tokens a step)"
