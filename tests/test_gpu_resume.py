"""A checkpoint resumed on another device gets that device's optimizer implementation (fused AdamW
on CUDA), not the one saved in its param groups, which load_state_dict would otherwise keep."""

from __future__ import annotations

import pytest
import torch
from helpers import step_losses, tiny_config

from charrnn_tui.engine.checkpoint import load_checkpoint, save_checkpoint
from charrnn_tui.engine.run.checkpoints import DEVICE_OPTIONS, load_optimizer_state
from charrnn_tui.engine.run.run_setup import make_optimizer
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import LATEST

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")


def _restored(path, **kwargs) -> Trainer:
    trainer = Trainer(resume=path, **kwargs)
    trainer.setup()
    trainer.built.lock.release()
    return trainer


def _fresh_options(trainer: Trainer) -> list[dict]:
    """The device options a new optimizer for this run's model and device has."""
    fresh = make_optimizer(trainer.built.model, trainer.config, trainer.device)
    return [{k: g.get(k) for k in DEVICE_OPTIONS} for g in fresh.param_groups]


def _options(optimizer: torch.optim.Optimizer) -> list[dict]:
    return [{k: g.get(k) for k in DEVICE_OPTIONS} for g in optimizer.param_groups]


@pytest.fixture
def cpu_checkpoint(repetitive_text, runs_dir):
    config = tiny_config(repetitive_text, max_steps=100, report_interval=1e-9, eval_interval=1000)
    step_losses(stop_at=10, config=config, runs_dir=runs_dir, run_name="r")
    return runs_dir / "r" / LATEST


@pytest.mark.parametrize("saved", [{"fused": True}, {"foreach": True}, {"fused": True, "capturable": True}])
def test_a_resumed_optimizer_takes_this_devices_implementation_not_the_saved_one(saved, cpu_checkpoint, runs_dir):
    ck = load_checkpoint(cpu_checkpoint)
    for group in ck["optimizer"]["param_groups"]:
        group.update(saved)  # as a checkpoint written on a GPU (or another torch) says
    lr = ck["optimizer"]["param_groups"][0]["lr"]
    save_checkpoint(ck, cpu_checkpoint)
    trainer = _restored(cpu_checkpoint, runs_dir=runs_dir)
    assert trainer.device.type == "cpu"
    assert _options(trainer.built.optimizer) == _fresh_options(trainer)
    assert trainer.built.optimizer.param_groups[0]["fused"] is None  # what make_optimizer gives a CPU
    assert trainer.built.optimizer.param_groups[0]["lr"] == lr  # the rest of the group is the saved one
    for state in trainer.built.optimizer.state.values():  # moments and steps restored, where a CPU keeps them
        assert state["step"].device.type == "cpu" and float(state["step"]) == 10
        assert state["exp_avg"].abs().sum() > 0
    # And it trains on from there.
    resumed = step_losses(resume=cpu_checkpoint, runs_dir=runs_dir, overrides={"max_steps": 5})
    assert sorted(resumed) == list(range(11, 16))


def test_the_step_count_goes_where_the_implementation_keeps_it():
    """Loading into a fused (or capturable) optimizer puts each step count on the parameter's
    device as float32, as load_state_dict does when the saved groups say fused."""
    model = torch.nn.Linear(3, 2)
    saved = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    saved.step()
    here = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)  # fused on a CPU: torch has a kernel
    load_optimizer_state(here, saved.state_dict())
    assert here.param_groups[0]["fused"] is True
    assert all(s["step"].dtype == torch.float32 and float(s["step"]) == 1 for s in here.state.values())


@needs_cuda
def test_a_cpu_checkpoint_resumed_on_cuda_trains_with_fused_adamw(cpu_checkpoint, runs_dir):
    trainer = _restored(cpu_checkpoint, runs_dir=runs_dir, overrides={"device": "cuda"})
    assert trainer.device.type == "cuda"
    assert trainer.built.optimizer.param_groups[0]["fused"] is True
    for param, state in trainer.built.optimizer.state.items():  # where the fused kernel wants them
        assert state["step"].device == param.device and state["step"].dtype == torch.float32
    resumed = step_losses(resume=cpu_checkpoint, runs_dir=runs_dir, overrides={"device": "cuda", "max_steps": 5})
    assert sorted(resumed) == list(range(11, 16))


@needs_cuda
def test_a_cuda_checkpoint_resumed_on_the_cpu_leaves_fused_adamw_behind(repetitive_text, runs_dir):
    config = tiny_config(repetitive_text, max_steps=100, device="cuda", report_interval=1e-9, eval_interval=1000)
    step_losses(stop_at=10, config=config, runs_dir=runs_dir, run_name="g")
    path = runs_dir / "g" / LATEST
    assert load_checkpoint(path)["optimizer"]["param_groups"][0]["fused"] is True
    trainer = _restored(path, runs_dir=runs_dir, overrides={"device": "cpu"})
    assert trainer.built.optimizer.param_groups[0]["fused"] is None
    assert all(s["step"].device.type == "cpu" for s in trainer.built.optimizer.state.values())
