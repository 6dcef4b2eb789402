from helpers import tiny_config

from charrnn_tui.engine.checkpoint import load_checkpoint
from charrnn_tui.engine.events import Evaluated, StateChanged
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import LATEST


def _run(config, runs_dir, name):
    events = []
    trainer = Trainer(config, runs_dir=runs_dir, run_name=name, on_event=events.append)
    return trainer, trainer.run(), events


def test_max_steps_finishes_saves_and_evaluates(repetitive_text, runs_dir):
    trainer, state, events = _run(tiny_config(repetitive_text, max_steps=30, eval_interval=1000), runs_dir, "s")
    assert state == "finished" and trainer.trained.step == 30
    assert events[-1] == StateChanged("finished", "reached max-steps 30")
    assert [e.step for e in events if isinstance(e, Evaluated)] == [30]  # a final evaluation
    assert load_checkpoint(runs_dir / "s" / LATEST)["step"] == 30


def test_max_epochs_stops_after_that_many_passes(repetitive_text, runs_dir):
    trainer, state, events = _run(tiny_config(repetitive_text, max_epochs=2), runs_dir, "e")
    assert state == "finished" and 2.0 <= trainer.built.batcher.epoch_float < 2.1
    assert "reached max-epochs 2" in events[-1].reason


def test_max_time_counts_training_time(repetitive_text, runs_dir):
    trainer, state, events = _run(tiny_config(repetitive_text, max_time=0.5), runs_dir, "t")
    assert state == "finished" and trainer.trained.train_seconds >= 0.5
    assert "reached max-time 0.5s" in events[-1].reason


def test_learning_rate_warms_up_then_decays_to_the_floor(repetitive_text, runs_dir):
    lrs = []
    config = tiny_config(repetitive_text, max_steps=100, warmup_steps=10, lr=0.01, report_interval=1e-9)
    trainer = Trainer(config, runs_dir=runs_dir, on_event=lambda e: lrs.append(getattr(e, "lr", None)))
    trainer.run()
    lrs = [x for x in lrs if x is not None]
    assert lrs[0] < 0.01 * 0.25 and max(lrs) <= 0.01 + 1e-12
    assert abs(lrs[-1] - 0.001) < 1e-6  # cosine to min_lr_ratio * lr at the end
