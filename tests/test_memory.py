"""Out of memory: `--batch-size auto`, and a clear stop that keeps the weights (simulated on CPU)."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config

from charrnn_tui.engine.checkpoint import load_checkpoint
from charrnn_tui.engine.errors import CharRNNError, ConfigError
from charrnn_tui.engine.events import Notice, Progress
from charrnn_tui.engine.model.device import cpu_has_native_bf16
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.run import run_setup
from charrnn_tui.engine.run.batch_size import largest_fitting, with_headroom
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import LATEST
from charrnn_tui.engine.text.data import make_batcher


@pytest.mark.parametrize("limit", [1, 7, 64, 100, 1024])
@pytest.mark.parametrize("start", [1, 16, 128])
def test_largest_fitting_finds_the_edge_within_a_sixteenth(start, limit):
    for capacity in [0, 1, 2, 5, 15, 16, 17, 33, 100, 127, 300, 1023, 5000]:
        tried = []

        def fits(b, capacity=capacity, tried=tried):
            tried.append(b)
            return b <= capacity

        found = largest_fitting(fits, start, limit)
        best = min(capacity, limit)
        assert found <= best and (found == 0) == (best == 0)
        assert best - found <= max(1, found // 16), (capacity, found)
        assert len(tried) <= 16  # a start-up cost of a few trial steps, not a scan


def test_headroom_leaves_a_tenth_in_multiples_of_eight():
    assert with_headroom(296) == 264
    assert with_headroom(10) == 9
    assert with_headroom(1) == 1


def _oom_above(monkeypatch, capacity: int) -> list[int]:
    """Make the model raise CUDA's out-of-memory error for batches larger than `capacity`."""
    seen: list[int] = []
    real_forward = CharRNN.forward

    def forward(self, x, state=None):
        seen.append(x.size(0))
        if x.size(0) > capacity:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, x, state)

    monkeypatch.setattr(CharRNN, "forward", forward)
    return seen


def test_auto_batch_size_takes_the_largest_that_fits_and_leaves_training_unchanged(repetitive_text, runs_dir,
                                                                                   monkeypatch):
    monkeypatch.setattr(run_setup, "memory_limited", lambda device: True)  # as on a GPU
    seen = _oom_above(monkeypatch, capacity=40)
    events = []
    config = tiny_config(repetitive_text, batch_size=4, auto_batch_size=True, max_steps=5, report_interval=1e-9,
                         layers=2, dropout=0.2)
    auto = Trainer(config, runs_dir=runs_dir, run_name="auto", on_event=events.append)
    auto.run()
    assert auto.state == "finished"
    assert 38 <= max(b for b in seen if b <= 40) <= 40 and any(b > 40 for b in seen)
    chosen = auto.config.batch_size
    assert chosen == with_headroom(max(b for b in seen if b <= 40)) == 32
    notice = next(e.message for e in events if isinstance(e, Notice) and "batch-size auto" in e.message)
    assert f"training with batch-size {chosen}" in notice
    assert load_checkpoint(runs_dir / "auto" / LATEST)["config"]["batch_size"] == chosen

    # The trial steps must not shift the run's random stream: same losses as a fixed batch of 32.
    monkeypatch.undo()
    fixed = Trainer(tiny_config(repetitive_text, batch_size=32, max_steps=5, report_interval=1e-9, layers=2,
                                dropout=0.2), runs_dir=runs_dir, run_name="fixed")
    fixed.run()
    assert list(fixed.trained.losses.recent) == list(auto.trained.losses.recent)


def test_auto_batch_size_on_a_cpu_keeps_the_preset_batch(repetitive_text, runs_dir):
    events = []
    config = tiny_config(repetitive_text, batch_size=4, auto_batch_size=True, max_steps=2)
    trainer = Trainer(config, runs_dir=runs_dir, on_event=events.append)
    trainer.run()
    assert trainer.config.batch_size == 4
    assert any(isinstance(e, Notice) and "memory is not the limit on a cpu" in e.message for e in events)


def test_out_of_memory_in_training_stops_with_the_batch_shape_and_saves_the_last_whole_step(
        repetitive_text, runs_dir, monkeypatch):
    events = []
    config = tiny_config(repetitive_text, batch_size=8, max_steps=100, checkpoint_interval=10)
    trainer = Trainer(config, runs_dir=runs_dir, run_name="oom", on_event=events.append)
    real_forward = CharRNN.forward

    weights_at_23 = {}

    def forward(self, x, state=None):
        if self.training and trainer.trained.step == 23:
            weights_at_23.update({k: v.clone() for k, v in self.state_dict().items()})
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, x, state)

    monkeypatch.setattr(CharRNN, "forward", forward)
    with pytest.raises(CharRNNError) as raised:
        trainer.run()
    message = str(raised.value)
    assert "out of memory with batch-size 8 and seq-len 16: try --batch-size 4" in message
    assert "--batch-size auto" in message and "saved at step 23" in message
    assert trainer.state == "error" and "\n" not in message
    saved = load_checkpoint(runs_dir / "oom" / LATEST)
    assert saved["step"] == 23
    assert all(torch.equal(saved["model"][k], v) for k, v in weights_at_23.items())
    batcher = make_batcher("sequential", trainer.built.train_ids, 8, 16, config.seed)
    for _ in range(23):
        batcher.next()
    assert saved["batcher"] == batcher.state_dict()  # the failed batch was not consumed
    assert not any(isinstance(e, Progress) and e.step > 23 for e in events)

    # And the run goes on with a smaller batch, from the same point of the epoch.
    monkeypatch.undo()
    events.clear()
    epoch_at_save = trainer.built.batcher.epoch_float
    resumed = Trainer(resume=runs_dir / "oom" / LATEST, overrides={"batch_size": 4, "max_steps": 7},
                      runs_dir=runs_dir, on_event=events.append)
    resumed.run()
    assert resumed.state == "finished" and resumed.config.batch_size == 4 and resumed.trained.step == 30
    assert any(isinstance(e, Notice) and "resumed with batch-size 4 x seq-len 16 (the run had 8 x 16)" in e.message
               for e in events)
    per_batch = 1 / resumed.built.batcher.batches_in_epoch()
    assert resumed.built.batcher.epoch_float == pytest.approx(epoch_at_save + 7 * per_batch, abs=1.5 * per_batch)


def test_out_of_memory_inside_the_update_saves_nothing(repetitive_text, runs_dir, monkeypatch):
    config = tiny_config(repetitive_text, max_steps=100, checkpoint_interval=10)
    trainer = Trainer(config, runs_dir=runs_dir, run_name="oom-step")
    real_setup = trainer.setup

    def setup():
        real_setup()
        real_step = trainer.built.optimizer.step

        def step(*a, **k):
            if trainer.trained.step == 15:  # weights may be half-updated: they must not be saved
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return real_step(*a, **k)

        trainer.built.optimizer.step = step

    monkeypatch.setattr(trainer, "setup", setup)
    with pytest.raises(CharRNNError, match="out of memory with batch-size 4 and seq-len 16"):
        trainer.run()
    assert load_checkpoint(runs_dir / "oom-step" / LATEST)["step"] == 10


def test_a_run_resumed_after_running_out_of_memory_matches_one_that_never_did(repetitive_text, runs_dir,
                                                                             monkeypatch):
    config = tiny_config(repetitive_text, batch_size=8, max_steps=30, report_interval=1e-9)
    clean = Trainer(config, runs_dir=runs_dir, run_name="clean")
    clean.run()

    failing = Trainer(config, runs_dir=runs_dir, run_name="oom")
    real_forward = CharRNN.forward

    def forward(self, x, state=None):
        if self.training and failing.trained.step == 17:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real_forward(self, x, state)

    monkeypatch.setattr(CharRNN, "forward", forward)
    with pytest.raises(CharRNNError):
        failing.run()
    monkeypatch.undo()
    resumed = Trainer(resume=runs_dir / "oom" / LATEST, runs_dir=runs_dir)
    resumed.run()
    assert resumed.trained.step == 30
    assert list(resumed.trained.losses.recent) == pytest.approx(list(clean.trained.losses.recent), abs=1e-6)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")
def test_a_run_trained_in_bf16_resumes_in_fp32(repetitive_text, runs_dir):
    first = Trainer(tiny_config(repetitive_text, precision="bf16", max_steps=3), runs_dir=runs_dir, run_name="b")
    first.run()
    assert load_checkpoint(runs_dir / "b" / LATEST)["train_state"][0].dtype == torch.float32
    resumed = Trainer(resume=runs_dir / "b" / LATEST, overrides={"precision": "fp32", "max_steps": 3},
                      runs_dir=runs_dir)
    assert resumed.run() == "finished" and resumed.trained.step == 6


@pytest.mark.skipif(cpu_has_native_bf16(), reason="this CPU has native bf16: --precision bf16 runs on it")
def test_bf16_on_a_cpu_without_it_is_refused_in_one_line(repetitive_text, runs_dir):
    with pytest.raises(ConfigError, match="--precision bf16 needs a CPU with native bf16"):
        Trainer(tiny_config(repetitive_text, precision="bf16", max_steps=3), runs_dir=runs_dir).run()
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
