"""Resuming a run: what a checkpoint restores, including checkpoints written by earlier versions,
on another device, or with another batch shape, and what a run says when its last save fails."""

from __future__ import annotations

import pytest
import torch
from helpers import step_losses, tiny_config

from charrnn_tui.engine.checkpoint import load_checkpoint, save_checkpoint
from charrnn_tui.engine.config import ModelConfig
from charrnn_tui.engine.errors import CharRNNError, CheckpointError, ConfigError
from charrnn_tui.engine.events import Notice
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.model.step import TrainStep
from charrnn_tui.engine.run import checkpoints, saving
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import LATEST


def restored(path, **kwargs) -> tuple[Trainer, list]:
    """A Trainer set up from a checkpoint, as `run` does before its first step (its lock released)."""
    events: list = []
    trainer = Trainer(resume=path, on_event=events.append, **kwargs)
    trainer.setup()
    trainer.built.lock.release()
    return trainer, events


@pytest.fixture
def stopped_run(repetitive_text, runs_dir):
    """A run stopped (and saved) at step 30 with two evaluations and two samples in its history."""
    def make(name: str = "r", **overrides):
        config = tiny_config(repetitive_text, max_steps=200, eval_interval=10, sample_interval=1e-9,
                             report_interval=1e-9, **overrides)
        step_losses(stop_at=30, config=config, runs_dir=runs_dir, run_name=name)
        return runs_dir / name / LATEST
    return make


def test_resume_restores_the_history_the_samples_and_the_evaluations(stopped_run):
    path = stopped_run()
    ck = load_checkpoint(path)
    trainer, _ = restored(path)
    history = ck["history"]
    assert trainer.trained.step == 30 and trainer.trained.losses.to_dict() == history["losses"]
    assert trainer.trained.val_history == [tuple(v) for v in history["val"]] and len(trainer.trained.val_history) == 3
    trained = trainer.trained
    assert trained.train_at_eval == [tuple(v) for v in history["train_at_eval"]] and trained.train_at_eval
    assert trainer.trained.samples == [tuple(s) for s in history["samples"]]
    assert trainer.trained.samples and all(isinstance(t, str) and t for _, t in trainer.trained.samples)
    assert trainer.trained.best_val == ck["best_val"] == min(v for _, v in trainer.trained.val_history)


def test_resume_keeps_the_count_of_evaluations_since_the_best_and_reads_it_off_older_checkpoints(stopped_run):
    """The count outlives thinning, so it is saved; a checkpoint from before it was has every point."""
    path = stopped_run()
    ck = load_checkpoint(path)
    ck["history"]["since_best"], ck["history"]["first_after_best"] = 700, 12_340
    save_checkpoint(ck, path)
    trainer = restored(path)[0]
    assert (trainer.trained.evals_since_best, trainer.trained.first_after_best) == (700, 12_340)
    del ck["history"]["since_best"], ck["history"]["first_after_best"]
    ck["history"]["val"] = [[10, 2.0], [20, 1.5], [30, 1.6], [40, 1.7]]
    save_checkpoint(ck, path)
    trainer = restored(path)[0]
    assert (trainer.trained.evals_since_best, trainer.trained.first_after_best) == (2, 30)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_a_carried_state_saved_in_half_precision_resumes_in_float32(kind, stopped_run):
    """bf16 autocast may leave the carried state in bf16; the checkpoint holds float32, but a file
    written otherwise must resume too, as float32, and a GRU's single tensor stays a tensor."""
    path = stopped_run(kind=kind)
    ck = load_checkpoint(path)
    ck["train_state"] = [t.to(torch.bfloat16) for t in ck["train_state"]]
    save_checkpoint(ck, path)
    trainer, _ = restored(path)
    state = trainer.trained.train_state
    tensors = state if isinstance(state, tuple) else (state,)
    assert isinstance(state, tuple) == (kind == "lstm")
    assert all(t.dtype == torch.float32 for t in tensors)
    assert [t.shape for t in tensors] == [t.shape for t in ck["train_state"]]
    assert all(torch.equal(t, s.float()) for t, s in zip(tensors, ck["train_state"], strict=True))
    trainer.step()  # and the model takes it
    trainer.step()
    assert trainer.trained.step == 32


def test_a_checkpoint_from_a_gpu_resumes_on_a_cpu(stopped_run):
    """A checkpoint written on CUDA carries the CUDA generator's state; on a CPU it is not needed."""
    path = stopped_run()
    ck = load_checkpoint(path)
    ck["rng"]["cuda"] = torch.zeros(16, dtype=torch.uint8)
    save_checkpoint(ck, path)
    trainer, _ = restored(path)
    assert trainer.device.type == "cpu" and trainer.trained.step == 30
    assert torch.equal(torch.get_rng_state(), ck["rng"]["torch"])


@pytest.mark.parametrize("sampler", ["sequential", "random"])
def test_a_checkpoint_of_the_earlier_batch_layout_resumes_at_the_same_point_of_the_epoch(sampler, stopped_run):
    """Before LAYOUT 2 a batcher saved (epoch, index) of another cut, or a step count, and the
    history kept every training loss as one tensor, with no training loss at evaluations."""
    path = stopped_run(sampler=sampler)
    ck = load_checkpoint(path)
    losses = step_losses_of(ck)
    train_tokens = restored(path)[0].built.train_ids.numel()
    if sampler == "sequential":
        ck["batcher"] = {"epoch": 1, "index": 5}  # old cut: (train_tokens // 4 - 1) // 16 batches an epoch
        epoch = 1 + 5 / ((train_tokens // 4 - 1) // 16)
    else:
        ck["batcher"] = {"steps": 90, "generator": None}
        epoch = 90 * 4 * 16 / train_tokens
    ck["history"] = {"train": torch.tensor(losses), "val": ck["history"]["val"],
                     "samples": ck["history"]["samples"]}
    save_checkpoint(ck, path)

    trainer, events = restored(path)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert (f"resumed from a checkpoint of an earlier version, whose batches were cut differently, at epoch "
            f"{epoch:.2f}; the hidden state starts afresh") in notices
    assert trainer.built.batcher.epoch == int(epoch)
    per_batch = 1 / trainer.built.batcher.batches_in_epoch()
    assert trainer.built.batcher.epoch_float == pytest.approx(epoch, abs=per_batch)
    assert trainer.trained.train_state is None
    assert trainer.trained.losses.steps == 30 and trainer.trained.losses.to_dict()["steps"] == 30
    assert trainer.trained.train_at_eval == [] and len(trainer.trained.val_history) == 3
    trained = trainer.trained
    assert trained.losses.to_dict() == type(trained.losses).from_losses(torch.tensor(losses).tolist()).to_dict()


def step_losses_of(ck: dict) -> list[float]:
    """Per-step losses to stand for an old checkpoint's full training history (their mean per
    evaluation interval is what the bounded history keeps anyway)."""
    return [2.0 + 0.01 * i for i in range(ck["step"])]


@pytest.mark.parametrize("sampler", ["sequential", "random"])
def test_a_new_batch_shape_resumes_at_the_point_the_old_one_reached(sampler, stopped_run, repetitive_text):
    from charrnn_tui.engine.text.data import make_batcher

    path = stopped_run(sampler=sampler)
    ck = load_checkpoint(path)
    trainer, events = restored(path, overrides={"batch_size": 2})
    before = make_batcher(sampler, trainer.built.train_ids, 4, 16, trainer.config.seed)
    before.load_state_dict(ck["batcher"])
    expected = make_batcher(sampler, trainer.built.train_ids, 2, 16, trainer.config.seed)
    expected.seek(before.epoch_float)
    assert trainer.built.batcher.state_dict() == expected.state_dict()
    assert any(isinstance(e, Notice) and e.message == "resumed with batch-size 2 x seq-len 16 (the run had 4 x 16) "
               f"at epoch {before.epoch_float:.2f}; the hidden state starts afresh" for e in events)
    assert trainer.trained.train_state is None


def test_the_same_batch_shape_resumes_the_batcher_and_the_state_exactly(stopped_run):
    path = stopped_run()
    ck = load_checkpoint(path)
    trainer, events = restored(path)
    assert trainer.built.batcher.state_dict() == ck["batcher"]
    assert not any(isinstance(e, Notice) for e in events)
    assert all(torch.equal(a, b) for a, b in zip(trainer.trained.train_state, ck["train_state"], strict=True))


def test_a_checkpoint_whose_history_is_broken_is_refused_in_one_line(stopped_run):
    path = stopped_run()
    ck = load_checkpoint(path)
    del ck["history"]["samples"]
    save_checkpoint(ck, path)
    with pytest.raises(CheckpointError) as raised:
        restored(path)
    assert str(raised.value) == f"{path}: checkpoint contents do not match its config ('samples')"


def test_a_failed_final_save_names_the_lost_steps_and_the_last_checkpoint(stopped_run, monkeypatch):
    path = stopped_run()

    def no_space(payload, where):
        raise CheckpointError(f"cannot write checkpoint {where}: no space left on device; the previous one is intact")

    monkeypatch.setattr(saving, "save_checkpoint", no_space)
    trainer = Trainer(resume=path, overrides={"max_steps": 6})  # six more
    assert trainer.run() == "error"
    assert trainer.error == ("the final checkpoint could not be written, so steps 31-36 are lost; "
                             "the last checkpoint is step 30")


def test_a_failed_run_keeps_its_first_error_when_the_final_save_also_fails(stopped_run, monkeypatch):
    """Weights that turn non-finite in the last step fail the final save: that is the error, not
    the steps the failed save lost."""
    trainer = Trainer(resume=stopped_run(), overrides={"max_steps": 6})  # six more
    real_step = TrainStep.__call__

    def corrupting_step(step, *args, **kwargs):
        state = real_step(step, *args, **kwargs)
        if trainer.trained.step == 35:  # the last one: its loss was finite, its weights are not
            with torch.no_grad():
                trainer.built.model.head.bias[0] = float("nan")
        return state

    monkeypatch.setattr(TrainStep, "__call__", corrupting_step)
    assert trainer.run() == "error"
    assert trainer.error == ("model.head.bias is not finite at step 36; not saved. "
                             "Resume from the last checkpoint (step 30) with a lower --lr")


def test_the_advice_after_a_non_finite_update_depends_on_what_was_saved():
    assert saving.last_good_checkpoint(30) == "Resume from the last checkpoint (step 30) with a lower --lr"
    assert saving.last_good_checkpoint(0) == "Nothing was saved; start again with a lower --lr"


UNPATCHED_FORWARD = CharRNN.forward


def out_of_memory_at(trainer: Trainer, step: int):
    """A model's forward pass that runs out of memory in training step `step` (outside the update)."""
    real_forward = UNPATCHED_FORWARD

    def forward(self, x, state=None, last_only=False):
        if self.training and trainer.trained.step + 1 == step:
            raise torch.OutOfMemoryError("CPU out of memory")
        return real_forward(self, x, state, last_only)
    return forward


@pytest.mark.parametrize(("failing_step", "written"), [(31, []), (32, [31])])
def test_out_of_memory_right_after_a_save_writes_nothing_more(stopped_run, monkeypatch, failing_step, written):
    """Resumed at step 30: running out of memory in step 31 has nothing new to save; in step 32, step 31."""
    trainer = Trainer(resume=stopped_run(), overrides={"max_steps": 6})
    saved = []
    monkeypatch.setattr(saving, "save_checkpoint", lambda payload, where: saved.append(payload["step"]))
    monkeypatch.setattr(CharRNN, "forward", out_of_memory_at(trainer, failing_step))
    with pytest.raises(CharRNNError, match="out of memory"):
        trainer.run()
    assert saved == written


def test_out_of_memory_again_while_saving_after_one_is_not_raised_but_other_errors_are(stopped_run, monkeypatch):
    def fails_with(error):
        def save(payload, where):
            raise error
        return save

    path = stopped_run()
    for error, raised in [(torch.OutOfMemoryError("CPU out of memory"), CharRNNError),
                          (ValueError("something else"), ValueError)]:
        trainer = Trainer(resume=path, overrides={"max_steps": 6})
        monkeypatch.setattr(saving, "save_checkpoint", fails_with(error))
        monkeypatch.setattr(CharRNN, "forward", out_of_memory_at(trainer, 32))  # step 31 is worth saving
        with pytest.raises(raised, match="out of memory with batch-size" if raised is CharRNNError else "something"):
            trainer.run()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"model.hidden": 64}, "--hidden cannot change when resuming (the run has 32, not 64)"),
    ({"model.kind": "gru"}, "--model cannot change when resuming (the run has 'lstm', not 'gru')"),
    ({"lr": 0.5, "model.layers": 2}, "--layers cannot change when resuming (the run has 1, not 2)"),
    ({"max_steps": 9, "seed": 7}, "--seed cannot change when resuming (the run has 1337, not 7)"),
])
def test_resuming_refuses_a_change_the_run_cannot_take(overrides, message, repetitive_text):
    ck = {"config": checkpoints.cfg.to_dict(tiny_config(repetitive_text))}
    with pytest.raises(ConfigError) as raised:
        checkpoints.resumed_config(ck, overrides)
    assert str(raised.value) == message + "; start a new run to change it"


def test_resuming_takes_the_same_model_settings_and_the_resumable_ones(repetitive_text):
    config = tiny_config(repetitive_text)
    ck = {"config": checkpoints.cfg.to_dict(config)}
    resumed = checkpoints.resumed_config(ck, {"model.hidden": 32, "model.kind": "lstm", "lr": 0.5, "max_steps": 9,
                                            "seed": None, "corpus": str(repetitive_text)})
    assert resumed.model == ModelConfig(**{**checkpoints.cfg.to_dict(config)["model"]})
    # Stop conditions are amounts of training more, applied once the checkpoint's position is known.
    assert (resumed.lr, resumed.max_steps, resumed.seed) == (0.5, config.max_steps, config.seed)


def test_what_a_resume_may_change_is_marked_on_the_config_fields():
    """The settings of how a run trains on, reports and samples may change on a resume; what makes
    the run (its text, tokens, model, optimizer, seed) may not. Read off TrainConfig's field marks."""
    may_change = {
        "max_steps", "max_epochs", "max_time", "early_stop", "eval_interval", "eval_tokens", "checkpoint_interval",
        "keep_checkpoints", "report_interval", "sample_interval", "sample_length", "temperature", "top_k", "top_p",
        "device", "precision", "threads", "lr", "grad_clip", "warmup_steps", "batch_size", "auto_batch_size",
        "seq_len", "lr_decay", "tensorboard", "fit_eval_interval", "fit_batch_size"}
    assert may_change == checkpoints.RESUMABLE_OVERRIDES
    ck = {"config": checkpoints.cfg.to_dict(checkpoints.cfg.TrainConfig(corpus="tiny-shakespeare"))}
    assert checkpoints.resumed_config(ck, {"grad_clip": 0.5}).grad_clip == 0.5  # marked: taken
    with pytest.raises(ConfigError, match="--weight-decay cannot change"):  # not marked: refused
        checkpoints.resumed_config(ck, {"weight_decay": 0.5})
