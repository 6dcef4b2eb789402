"""CUDA-only paths. They run when torch sees a GPU and skip, saying why, everywhere else."""

import pytest
import torch
from helpers import step_losses, tiny_config

from charrnn_tui.engine.checkpoint import load_checkpoint
from charrnn_tui.engine.inference import load_model
from charrnn_tui.engine.runs import LATEST
from charrnn_tui.engine.sampling import SampleSettings, TextGenerator
from charrnn_tui.engine.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_resumed_run_draws_the_same_cudnn_dropout_masks_as_the_run_that_saved(precision, repetitive_text, runs_dir):
    # cuDNN keeps the dropout state between layers to itself: each save re-seeds it from the
    # saved generator, so continuing after a save and resuming from it must agree.
    config = tiny_config(repetitive_text, max_steps=60, dropout=0.3, layers=2, device="cuda", precision=precision,
                         report_interval=1e-9, eval_interval=1000)
    full = step_losses(save_at=25, config=config, runs_dir=runs_dir, run_name="full")
    step_losses(stop_at=25, config=config, runs_dir=runs_dir, run_name="part")
    resumed = step_losses(resume=runs_dir / "part" / LATEST, runs_dir=runs_dir)
    assert sorted(resumed) == list(range(26, 61))
    torch.testing.assert_close([resumed[s] for s in range(26, 61)], [full[s] for s in range(26, 61)],
                               rtol=1e-5, atol=1e-6)


def test_a_gpu_checkpoint_samples_on_the_cpu(repetitive_text, runs_dir):
    Trainer(tiny_config(repetitive_text, max_steps=30, device="cuda"), runs_dir=runs_dir, run_name="gpu").run()
    assert load_checkpoint(runs_dir / "gpu" / LATEST)["model"]["head.weight"].device.type == "cpu"
    loaded = load_model(runs_dir / "gpu" / LATEST, "cpu")
    text = TextGenerator(loaded.model, loaded.vocab).generate("the", SampleSettings(length=20, seed=1)).text
    assert len(text) == 20


def test_fused_adamw_and_bf16_autocast_train_on_the_gpu(repetitive_text, runs_dir):
    losses = step_losses(config=tiny_config(repetitive_text, max_steps=200, device="cuda", precision="bf16"),
                     runs_dir=runs_dir, run_name="bf16")
    assert sum(losses[s] for s in range(191, 201)) / 10 < losses[1] - 1.0
