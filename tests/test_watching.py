"""metrics.jsonl, the overfitting rule and --early-stop."""

import json

import pytest
from helpers import run_cli, tiny_config

from charrnn_tui.engine.events import Evaluated
from charrnn_tui.engine.overfitting import read_history
from charrnn_tui.engine.protocol import SetEarlyStop
from charrnn_tui.engine.run.metrics import METRICS, read_metrics
from charrnn_tui.engine.run.trainer import Trainer


def test_every_run_writes_metrics_for_its_reports_and_evaluations(repetitive_text, runs_dir):
    trainer = Trainer(tiny_config(repetitive_text, max_steps=60, eval_interval=20, report_interval=1e-9),
                      runs_dir=runs_dir, run_name="m")
    events = []
    trainer.on_event = events.append
    trainer.run()
    records = read_metrics(runs_dir / "m")
    train = [r for r in records if "train_loss" in r]
    val = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in train] == list(range(1, 61))  # a report per step here
    assert [r["step"] for r in val] == [20, 40, 60]
    evaluated = [e for e in events if isinstance(e, Evaluated)]
    assert [r["val_loss"] for r in val] == [e.nats for e in evaluated]
    assert all({"elapsed_s", "tokens", "lr"} <= set(r) for r in records)
    assert train[-1]["tokens"] == trainer.trained.tokens_seen and train[0]["train_loss"] > train[-1]["train_loss"]


def test_a_resumed_run_drops_the_metrics_its_checkpoint_does_not_have(repetitive_text, runs_dir):
    config = tiny_config(repetitive_text, max_steps=40, eval_interval=20, report_interval=1e-9,
                         checkpoint_interval=20)
    Trainer(config, runs_dir=runs_dir, run_name="r").run()
    path = runs_dir / "r" / METRICS
    lines = path.read_text().splitlines()
    latest = runs_dir / "r" / "latest.pt"
    (runs_dir / "r" / "step-0000020.pt").replace(latest)  # as if killed after the step-20 save
    Trainer(resume=latest, runs_dir=runs_dir, overrides={"max_steps": 10}).run()  # ten more
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(21) == 1 and max(steps) == 30
    assert len(lines) > len([s for s in steps if s <= 20])


@pytest.mark.parametrize("val, train, expected", [
    ([], {}, (0, 0, None)),
    ([(10, 2.0), (20, 1.5), (30, 1.6), (40, 1.7), (50, 1.8)], {20: 1.4, 50: 1.0}, (20, 3, 30)),
    ([(10, 2.0), (20, 1.5), (30, 1.6), (40, 1.7)], {20: 1.4, 40: 1.0}, (20, 2, None)),  # not patient enough yet
    ([(10, 2.0), (20, 1.5), (30, 1.6), (40, 1.7), (50, 1.8)], {20: 1.4, 50: 1.5}, (20, 3, None)),  # train rose too
    ([(10, 2.0), (20, 1.5), (30, 1.5), (40, 1.6), (50, 1.7)], {20: 1.4, 50: 1.0}, (20, 3, 30)),  # the first best
    ([(10, 2.0), (20, 1.5), (30, 1.6), (40, 1.7), (50, 1.8)], {50: 1.0}, (20, 3, None)),  # no train figure at best
    # validation that stays put (to 16 digits: the weights did not change) is a plateau, not overfitting
    ([(10, 2.0), (20, 1.5), (30, 1.5), (40, 1.5), (50, 1.5)], {20: 1.4, 50: 1.0}, (20, 3, None)),
    ([(10, 2.0), (20, 1.5), (30, 1.5), (40, 1.5), (50, 1.5001)], {20: 1.4, 50: 1.0}, (20, 3, None)),  # within RISE
    ([(10, 2.0), (20, 1.5), (30, 1.7), (40, 1.6), (50, 1.51)], {20: 1.4, 50: 1.0}, (20, 3, 30)),  # still above
])
def test_overfitting_is_validation_risen_above_its_best_while_training_loss_falls(val, train, expected):
    verdict = read_history(val, train)
    assert (verdict.best_step, verdict.since_best, verdict.overfitting_since) == expected


def test_overfitting_is_never_said_while_the_rate_is_0_nor_just_after_a_cut():
    from charrnn_tui.engine.overfitting import WAIT_AFTER_CHANGE

    val, train = [(10, 2.0), (20, 1.5), (30, 1.6), (40, 1.7), (50, 1.8)], {20: 1.4, 50: 1.0}
    assert read_history(val, train, learning=False).overfitting_since is None
    assert read_history(val, train, since_change=WAIT_AFTER_CHANGE - 1).overfitting_since is None
    assert read_history(val, train, since_change=WAIT_AFTER_CHANGE).overfitting_since == 30


def test_a_run_whose_rate_reached_0_is_never_said_to_overfit(repetitive_text, runs_dir):
    """The issue's jokes run: a rate of 0 from early on, validation identical to 16 digits at every
    evaluation, and "overfitting since step N" on the screen. Now the line says it is not learning."""
    import io

    from charrnn_tui.engine.events import Progress
    from charrnn_tui.engine.serve.printer import NOT_LEARNING, ProgressPrinter

    out = io.StringIO()
    printer = ProgressPrinter(out=out, interval=0)
    events: list = []

    def on_event(e):
        events.append(e)
        printer(e)

    config = tiny_config(repetitive_text, max_steps=40, min_lr_ratio=0.0, eval_interval=10, report_interval=1e-9)
    Trainer(config, runs_dir=runs_dir, run_name="zero").run()  # its cosine ends at 0
    # held there, as the old open-ended schedule held 0 after ten epochs
    Trainer(resume=runs_dir / "zero" / "latest.pt", overrides={"max_steps": 300, "keep_schedule": True},
            on_event=on_event).run()
    evaluations = [e for e in events if isinstance(e, Evaluated)]
    assert len(evaluations) == 30 and len({e.nats for e in evaluations}) == 1  # nothing changes...
    assert all(e.overfitting_since is None for e in evaluations)  # ...so nothing overfits
    assert NOT_LEARNING in out.getvalue() and all(e.lr == 0 for e in events if isinstance(e, Progress))


def test_early_stop_ends_an_overfitting_run_and_names_best_pt(tmp_path):
    # A small text and a big model: it learns the training part by heart and validation rises.
    corpus = tmp_path / "small.txt"
    corpus.write_text("".join(f"{i} {i * i % 97} {'abcdefghij'[i % 10] * (i % 7)}\n" for i in range(400)))
    runs = tmp_path / "runs"
    result = run_cli("train", str(corpus), "--preset", "tiny", "--hidden", "128", "--embedding", "32",
                     "--seq-len", "32", "--batch-size", "8", "--lr", "0.01", "--eval-interval", "25",
                     "--early-stop", "3", "--max-steps", "3000", "--sample-interval", "0", "--threads", "1",
                     "--device", "cpu", "--headless", "--runs-dir", str(runs), "--name", "overfit", timeout=300)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("finished: early stop: no new best in 3 evaluations; best.pt is step ")
    assert "overfitting since step" in result.stdout
    best_step = int(last.split("best.pt is step ")[1].split(",")[0])
    from charrnn_tui.engine.checkpoint import load_checkpoint

    assert load_checkpoint(runs / "overfit" / "best.pt")["step"] == best_step
    assert load_checkpoint(runs / "overfit" / "latest.pt")["step"] < 3000


def test_the_status_panel_says_plainly_when_the_run_overfits():
    from charrnn_tui.tui.run_view import RunView
    from charrnn_tui.tui.widgets.status_panel import render_status

    view = RunView()
    view.apply(Evaluated(500, 1.6, 2.3, 5.0, 1.4, False, 100, 0.1, best_step=200, overfitting_since=250))
    text = render_status(view, now=0.0).plain
    assert "overfitting since step 250" in text and "best.pt is step 200, val 1.4000" in text
    view.apply(Evaluated(600, 1.3, 1.9, 3.7, 1.3, True, 100, 0.1, best_step=600, overfitting_since=None))
    assert "overfitting" not in render_status(view, now=0.0).plain


def test_tensorboard_without_the_extra_is_a_one_line_error_before_anything_is_made(repetitive_text, runs_dir):
    from charrnn_tui.engine.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        Trainer(tiny_config(repetitive_text, max_steps=5, tensorboard=True), runs_dir=runs_dir, run_name="tb").run()
    assert str(raised.value) == ("--tensorboard needs TensorBoard, which is not installed: "
                                 "pip install 'charrnn-tui[tensorboard]'")
    assert not (runs_dir / "tb").exists()


def test_tensorboard_gets_the_numbers_of_metrics_jsonl(repetitive_text, runs_dir, monkeypatch):
    """With a stand-in for torch's SummaryWriter (tensorboard itself is an optional extra)."""
    import importlib.machinery
    import sys
    import types

    written: list[tuple] = []

    class SummaryWriter:
        def __init__(self, log_dir, flush_secs, purge_step):
            written.append(("open", log_dir, purge_step))

        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def close(self):
            written.append(("close",))

    tensorboard = types.ModuleType("tensorboard")
    tensorboard.__spec__ = importlib.machinery.ModuleSpec("tensorboard", None)
    writer_module = types.ModuleType("torch.utils.tensorboard")
    writer_module.SummaryWriter = SummaryWriter
    monkeypatch.setitem(sys.modules, "tensorboard", tensorboard)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", writer_module)
    config = tiny_config(repetitive_text, max_steps=40, eval_interval=20, report_interval=1e-9, tensorboard=True)
    Trainer(config, runs_dir=runs_dir, run_name="tb").run()
    records = read_metrics(runs_dir / "tb")
    assert written[0] == ("open", str(runs_dir / "tb" / "tensorboard"), None) and written[-1] == ("close",)
    expected = []
    for r in records:
        if "train_loss" in r:
            expected += [("loss/train", r["train_loss"], r["step"]), ("lr", r["lr"], r["step"]),
                         ("grad_norm", r["grad_norm"], r["step"])]
        else:
            expected.append(("loss/val", r["val_loss"], r["step"]))
    assert written[1:-1] == expected and len(expected) == 40 * 3 + 2
    written.clear()
    Trainer(resume=runs_dir / "tb" / "latest.pt", overrides={"max_steps": 45}).run()
    assert written[0] == ("open", str(runs_dir / "tb" / "tensorboard"), 41)  # what came after the checkpoint goes


def test_early_stop_can_be_set_while_the_run_trains_and_a_resume_keeps_it(tmp_path):
    """The app's `e`: a request at a step boundary, announced to every viewer, saved with the run."""
    from charrnn_tui.engine.checkpoint import load_checkpoint
    from charrnn_tui.engine.events import Notice, Progress, SettingsChanged
    from charrnn_tui.engine.protocol import RequestRefused

    corpus = tmp_path / "small.txt"
    corpus.write_text("".join(f"{i} {i * i % 97} {'abcdefghij'[i % 10] * (i % 7)}\n" for i in range(400)))
    events: list = []
    trainer: Trainer

    def on_event(event):
        events.append(event)
        if isinstance(event, Progress) and event.step >= 10 and trainer.config.early_stop is None:
            trainer.request(SetEarlyStop(2))

    trainer = Trainer(tiny_config(corpus, hidden=128, seq_len=32, batch_size=8, lr=0.01, eval_interval=25,
                                  max_steps=3000, sample_interval=0), runs_dir=tmp_path / "runs", run_name="e",
                      on_event=on_event)
    for bad in (0, -3, 10_001):
        with pytest.raises(RequestRefused, match="early stop takes 1 to 10,000 evaluations, or none"):
            trainer.request(SetEarlyStop(bad))
    assert trainer.run() == "finished"
    assert trainer.early_stopped.startswith("early stop: no new best in 2 evaluations; best.pt is step ")
    assert SettingsChanged(0.8, 2) in events
    assert any(isinstance(e, Notice) and e.message == "early stop after 2 evaluations without a new best"
               for e in events)
    latest = tmp_path / "runs" / "e" / "latest.pt"
    assert load_checkpoint(latest)["config"]["early_stop"] == 2 and trainer.trained.step < 3000
    resumed = Trainer(resume=latest)
    resumed.setup()
    resumed.built.lock.release()
    assert resumed.config.early_stop == 2


def test_early_stop_counts_evaluations_not_the_points_kept_after_thinning(tmp_path, monkeypatch):
    """A run longer than the validation cap: its history is thinned to 8 points, and early stop
    after 9 evaluations without a new best still comes (counting kept points, it never would)."""
    from functools import partial

    from charrnn_tui.engine.checkpoint import load_checkpoint
    from charrnn_tui.engine.history import thin_evaluations
    from charrnn_tui.engine.run import evaluating

    monkeypatch.setattr(evaluating, "thin_evaluations", partial(thin_evaluations, limit=8))
    corpus = tmp_path / "small.txt"
    corpus.write_text("".join(f"{i} {i * i % 97} {'abcdefghij'[i % 10] * (i % 7)}\n" for i in range(400)))
    trainer = Trainer(tiny_config(corpus, hidden=128, seq_len=32, batch_size=8, lr=0.01, eval_interval=25,
                                  max_steps=3000, sample_interval=0, early_stop=9), runs_dir=tmp_path / "runs",
                      run_name="thin")
    assert trainer.run() == "finished" and trainer.trained.step < 3000
    assert trainer.early_stopped.startswith("early stop: no new best in 9 evaluations; best.pt is step ")
    assert len(trainer.trained.val_history) <= 8 and trainer.trained.evals_since_best == 9
    best_step = int(trainer.early_stopped.split("best.pt is step ")[1].split(",")[0])
    assert best_step in dict(trainer.trained.val_history) and best_step in dict(trainer.trained.train_at_eval)
    assert trainer.trained.first_after_best == best_step + 25  # the next evaluation, which thinning may drop
    assert load_checkpoint(tmp_path / "runs" / "thin" / "latest.pt")["history"]["since_best"] == 9
