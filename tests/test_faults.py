import torch
from helpers import tiny_config

from charrnn_tui.engine.checkpoint import load_checkpoint
from charrnn_tui.engine.events import Notice, StateChanged
from charrnn_tui.engine.runs import LATEST
from charrnn_tui.engine.trainer import Trainer


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(repetitive_text, runs_dir,
                                                                                monkeypatch):
    events = []
    config = tiny_config(repetitive_text, max_steps=200, checkpoint_interval=20, report_interval=1e-9)
    trainer = Trainer(config, runs_dir=runs_dir, run_name="nan", on_event=events.append)
    real_step = trainer._train_step

    def poisoned_step():
        real_step()
        if trainer.step >= 45:  # from step 45 on the loss is NaN, as after a blow-up
            trainer.loss_buffer[trainer.pending - 1] = float("nan")

    monkeypatch.setattr(trainer, "_train_step", poisoned_step)
    try:
        trainer.run()
    except Exception as e:  # the TUI worker sees this; the state and message come as events first
        raise AssertionError(f"NaN must not raise: {e!r}") from e
    assert trainer.state == "error"
    error = [e for e in events if isinstance(e, StateChanged)][-1]
    assert "loss became nan at step 45" in error.reason and "last checkpoint (step 40)" in error.reason
    assert any(isinstance(e, Notice) and e.level == "error" for e in events)
    checkpoint = load_checkpoint(runs_dir / "nan" / LATEST)
    assert checkpoint["step"] == 40
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())
