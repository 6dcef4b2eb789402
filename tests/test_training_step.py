"""The training step itself: the hidden state carried (and reset) as truncated BPTT needs, and
gradients clipped. Each test fails when that part of the step is removed."""

import pytest
import torch
from helpers import tiny_config

from charrnn_tui.engine.model.step import TrainStep
from charrnn_tui.engine.run.trainer import Trainer


def _spied_run(config, runs_dir, monkeypatch):
    """Per step: whether the batch started an epoch, the state the step started from and the
    state it ended with; and per step the gradient norm the optimizer saw."""
    trainer = Trainer(config, runs_dir=runs_dir, run_name="spy")
    steps, norms = [], []
    real_loss = TrainStep.loss

    def loss_spy(step, x, y, state, predictions=None):
        loss, new_state = real_loss(step, x, y, state, predictions)
        steps.append({"reset": trainer.built.batcher.index == 1, "state_in": state, "state_out": new_state})
        return loss, new_state

    monkeypatch.setattr(TrainStep, "loss", loss_spy)
    original_setup = trainer.setup

    def setup_then_spy_on_the_optimizer():
        original_setup()
        real_step = trainer.built.optimizer.step

        def step_spy(*args, **kwargs):
            grads = [p.grad for p in trainer.built.model.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
            return real_step(*args, **kwargs)

        trainer.built.optimizer.step = step_spy

    monkeypatch.setattr(trainer, "setup", setup_then_spy_on_the_optimizer)
    assert trainer.run() == "finished"
    return trainer, steps, norms


def test_the_hidden_state_is_carried_between_batches_and_reset_at_each_epoch(repetitive_text, runs_dir,
                                                                             monkeypatch):
    config = tiny_config(repetitive_text, max_steps=110, eval_interval=1000)
    trainer, steps, _ = _spied_run(config, runs_dir, monkeypatch)
    resets = [i for i, s in enumerate(steps) if s["reset"]]
    assert len(resets) >= 3 and resets[0] == 0  # three epochs or more, so two boundaries crossed
    for i, step in enumerate(steps):
        if step["reset"]:
            assert step["state_in"] is None, f"step {i + 1} starts an epoch but carried the old state"
            continue
        assert step["state_in"] is not None, f"step {i + 1} dropped the carried state"
        for carried, previous in zip(step["state_in"], steps[i - 1]["state_out"], strict=True):
            assert torch.equal(carried, previous.detach())  # the same values...
            assert not carried.requires_grad  # ...cut from the previous batch's graph


def test_random_windows_start_every_batch_from_a_zero_state(repetitive_text, runs_dir, monkeypatch):
    config = tiny_config(repetitive_text, max_steps=30, sampler="random", eval_interval=1000)
    _, steps, _ = _spied_run(config, runs_dir, monkeypatch)
    assert all(s["state_in"] is None for s in steps)


def test_gradients_are_clipped_to_the_global_norm(repetitive_text, runs_dir, monkeypatch):
    config = tiny_config(repetitive_text, max_steps=20, grad_clip=0.05, eval_interval=1000, report_interval=1e-9)
    _, _, norms = _spied_run(config, runs_dir, monkeypatch)
    assert len(norms) == 20 and max(norms) <= 0.05 * (1 + 1e-4)
    # ...where without clipping the same steps see norms far above the limit
    unclipped_config = tiny_config(repetitive_text, max_steps=20, grad_clip=0.0, eval_interval=1000)
    _, _, unclipped = _spied_run(unclipped_config, runs_dir / "unclipped", monkeypatch)
    assert min(unclipped) > 0.05 * 4


def test_the_step_reports_the_gradient_norm_before_clipping(repetitive_text, runs_dir, monkeypatch):
    from charrnn_tui.engine.model.step import clip_gradients

    trainer = Trainer(tiny_config(repetitive_text, max_steps=1), runs_dir=runs_dir, run_name="norm")
    trainer.run()
    model = trainer.built.model
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    expected = 0.5 * sum(p.numel() for p in model.parameters()) ** 0.5
    assert float(clip_gradients(model, 1.0)) == pytest.approx(expected, rel=1e-5)
    assert float(clip_gradients(model, 0.0)) == pytest.approx(1.0, rel=1e-5)  # clipped to 1 above; now left
    assert float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))) == \
        pytest.approx(1.0, rel=1e-5)


def test_progress_reports_speed_time_and_eta_that_add_up(repetitive_text, runs_dir):
    from charrnn_tui.engine.events import Progress

    events = []
    Trainer(tiny_config(repetitive_text, max_steps=40, report_interval=0.05), runs_dir=runs_dir,
            on_event=events.append).run()
    reports = [e for e in events if isinstance(e, Progress) and e.losses]
    assert reports
    for e in reports:
        assert e.tokens_per_s > 100  # 64 tokens a step on a tiny model: thousands a second
        assert e.train_seconds > 0 and e.eta_seconds is not None and e.eta_seconds >= 0
    times = [e.train_seconds for e in reports]
    assert times == sorted(times)
