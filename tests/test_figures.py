"""Every figure is what it says: validation within its budget and showing itself, the size of a large
checkpoint, the progress line's loss, the defaults --help gives, the corpus measured in characters."""

from __future__ import annotations

import io

import pytest
from helpers import run_cli, tiny_config

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.cli.arguments import config_from_args
from charrnn_tui.engine.cli.main import build_parser
from charrnn_tui.engine.cli.model_commands import EvalProgress
from charrnn_tui.engine.events import Evaluated, Notice, Progress, Validating
from charrnn_tui.engine.run import run_setup
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.serve.printer import ProgressPrinter


@pytest.fixture
def long_text(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 2000)  # 90,000 chars: 9,000 to validate
    return path


def test_a_large_validation_split_is_read_within_the_budget_and_shows_its_progress(long_text, runs_dir, monkeypatch):
    monkeypatch.setattr(cfg, "EVAL_BUDGET", 3000)
    monkeypatch.setattr("charrnn_tui.engine.text.data.EVAL_BUDGET", 3000)
    monkeypatch.setattr("charrnn_tui.engine.model.evaluate.PROGRESS_CHUNK", 4)  # several chunks for a short text
    monkeypatch.setattr("charrnn_tui.engine.run.evaluating.VALIDATING_INTERVAL", 0.0)
    events: list = []
    Trainer(tiny_config(long_text, max_steps=20, eval_interval=10), runs_dir=runs_dir, on_event=events.append).run()
    evaluations = [e for e in events if isinstance(e, Evaluated)]
    assert [e.tokens for e in evaluations] == [2999, 2999]  # the same 3,000 tokens every time
    notes = [e.message for e in events if isinstance(e, Notice)]
    assert any("validation reads the first 3,000 of the split's 9,000 tokens" in m for m in notes)
    progress = [e for e in events if isinstance(e, Validating)]
    first = [e.done for e in progress if e.step == 10]
    assert first[0] == 0.0 and first[-1] == 1.0 and len(first) > 3 and first == sorted(first)
    assert {e.tokens for e in progress} == {3000}
    # every evaluation announced itself before its result
    assert all(events.index(p) < events.index(e) for e in evaluations for p in progress if p.step == e.step)


def test_eval_tokens_all_reads_the_whole_split(long_text, runs_dir, monkeypatch):
    monkeypatch.setattr("charrnn_tui.engine.text.data.EVAL_BUDGET", 3000)
    events: list = []
    Trainer(tiny_config(long_text, max_steps=10, eval_tokens=0), runs_dir=runs_dir, on_event=events.append).run()
    assert [e.tokens for e in events if isinstance(e, Evaluated)] == [8999]


def test_a_validation_under_way_shows_on_the_status_and_the_progress_line():
    from charrnn_tui.tui.run_view import RunView
    from charrnn_tui.tui.widgets.status_panel import render_status

    view = RunView(state="training")
    view.apply(Validating(step=500, done=0.45, tokens=262_144))
    assert "validating 45% of 262.1k chars" in render_status(view, now=0.0).plain
    view.apply(Evaluated(500, 1.5, 2.1, 4.5, 1.5, True, 262_143, 9.0))
    assert "validating" not in render_status(view, now=0.0).plain
    out = io.StringIO()
    printer = ProgressPrinter(out=out, interval=0)
    printer(Validating(step=500, done=0.0, tokens=262_144))
    printer(Validating(step=500, done=0.5, tokens=262_144))
    assert "step 500 | validating 50% of 262,144 tokens" in out.getvalue()


def test_the_progress_line_and_the_status_say_a_time_the_same_way():
    from charrnn_tui.tui.run_view import RunView
    from charrnn_tui.tui.widgets.status_panel import render_status

    event = Progress(step=9, first_step=9, losses=(2.0,), epoch=0.5, tokens_per_s=1000.0, lr=1e-3,
                     train_seconds=3_725.9, eta_seconds=90_061.0, epoch_eta_seconds=None, memory_bytes=None)
    out = io.StringIO()
    ProgressPrinter(out=out, interval=0)(event)
    assert "| 1:02:05 | ETA 1d01h" in out.getvalue()  # hours and minutes and seconds; from a day on, days and hours
    view = RunView(state="training")
    view.apply(event)
    assert "1:02:05 · ETA 1d01h" in render_status(view, now=0.0).plain


def _progress(step: int, losses: tuple[float, ...], lr: float) -> Progress:
    return Progress(step=step, first_step=step - len(losses) + 1, losses=losses, epoch=0.5, tokens_per_s=1000.0,
                    lr=lr, train_seconds=1.0, eta_seconds=None, epoch_eta_seconds=None, memory_bytes=None)


def test_a_rate_of_0_is_shown_as_not_learning_and_the_line_says_what_its_loss_averages():
    from charrnn_tui.tui.run_view import RunView
    from charrnn_tui.tui.widgets.status_panel import render_status

    view = RunView(state="training")
    assert "not learning" not in render_status(view, now=0.0).plain  # no rate known yet
    view.apply(_progress(10, (2.0,), 3e-3))
    assert "lr 3.0e-3" in render_status(view, now=0.0).plain
    view.apply(_progress(11, (2.0,), 0.0))
    assert "not learning: lr 0" in render_status(view, now=0.0).plain
    out = io.StringIO()
    printer = ProgressPrinter(out=out, interval=0)
    printer(_progress(150, tuple([3.0] * 150), 1e-3))
    printer(_progress(201, tuple([1.0] * 51), 0.0))
    last = out.getvalue().splitlines()[-1]
    # the mean of the last 100 steps (49 at 3.0, 51 at 1.0), and which steps those are
    assert "loss 1.9800 (mean of steps 102-201)" in last and last.endswith("not learning: learning rate 0")


def test_a_large_checkpoint_is_announced_with_its_size(repetitive_text, runs_dir, monkeypatch):
    monkeypatch.setattr(run_setup, "LARGE_CHECKPOINT", 1)
    events: list = []
    trainer = Trainer(tiny_config(repetitive_text, max_steps=2), runs_dir=runs_dir, on_event=events.append)
    trainer.run()
    weights = sum(p.numel() for p in trainer.built.model.parameters())
    size = run_setup.checkpoint_bytes(trainer.built.model, trainer.built.optimizer)
    assert size == 12 * weights  # float32 weights and AdamW's two moments
    notes = [e.message for e in events if isinstance(e, Notice) and e.level == "warning"]
    assert any(f"each checkpoint is about {size / 2**20:,.0f} MB" in m and "up to 5 of them" in m for m in notes)
    latest = (trainer.built.run_dir / "latest.pt").stat().st_size
    assert size <= latest < size * 1.5  # the estimate is what the file weighs, give or take the rest


def test_eval_shows_its_progress_only_when_it_takes_a_while():
    err = io.StringIO()
    clock = iter([0.5, 1.5, 3.0, 9.0])
    progress = EvalProgress(1000, err)
    progress.clock = lambda: next(clock)
    progress.started = progress.last = 0.0
    progress(0.1)  # at 0.5 s: nothing yet
    progress(0.3)  # at 1.5 s: but a line only every 5 s when not on a terminal
    progress(0.5)  # 3.0 s
    progress(0.9)  # 9.0 s
    assert err.getvalue().splitlines() == ["eval: 90% of 1,000 tokens, 9s"]


@pytest.mark.parametrize("corpus, weight_decay, hidden", [("timemachine", "0.1", "256"), ("shakespeare", "0.1", "384")])
def test_train_help_gives_the_defaults_that_will_run_for_the_corpus(corpus, weight_decay, hidden):
    result = run_cli("train", corpus, "--help", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert f"--weight-decay W (default: {weight_decay})" in text
    assert f"--hidden N hidden units per layer (default: {hidden})" in text
    assert f"preset small on this CPU, fitted to {corpus}" in text


def test_the_fit_to_a_small_corpus_counts_characters_not_bytes(tmp_path):
    from charrnn_tui.engine.text.corpus import load_corpus

    text = load_corpus("timemachine").text
    utf16 = tmp_path / "tm16.txt"
    utf16.write_text(text, encoding="utf-16")  # twice the bytes, the same characters
    sizes = []
    for spec in ("timemachine", str(utf16)):
        config = config_from_args(build_parser().parse_args(["train", spec, "--device", "cpu"]))
        sizes.append((config.model.hidden, config.model.dropout))
    assert sizes == [(256, 0.25), (256, 0.25)]


def test_the_epoch_eta_counts_down_what_is_left_of_the_epoch(long_text, runs_dir):
    """"epoch ends" in the status: the tokens left of this epoch at the pace reported with it."""
    events: list = []
    config = tiny_config(long_text, max_steps=60, eval_interval=1000, report_interval=0.001)
    trainer = Trainer(config, runs_dir=runs_dir, on_event=events.append)
    trainer.run()
    train_tokens = len(trainer.built.train_ids)
    reports = [e for e in events if isinstance(e, Progress) and e.losses and e.tokens_per_s > 0]
    assert len(reports) >= 3
    for e in reports:
        left = 1.0 - e.epoch % 1.0
        assert 0 < left <= 1 and e.epoch_eta_seconds == pytest.approx(left * train_tokens / e.tokens_per_s)
