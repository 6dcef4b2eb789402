"""CUDA-only paths. They run when torch sees a GPU and skip, saying why, everywhere else."""

import math

import pytest
import torch
from helpers import step_losses, tiny_config

from charrnn_tui.corpora import bundled_path
from charrnn_tui.engine.batch_size import AUTO_BATCH_LIMIT
from charrnn_tui.engine.checkpoint import load_checkpoint
from charrnn_tui.engine.config import TrainConfig, apply_preset
from charrnn_tui.engine.cowrite import TypingState
from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.events import Notice
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


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_steps_learn_with_fused_adamw_in_either_precision(precision, repetitive_text, runs_dir):
    trainer = Trainer(tiny_config(repetitive_text, max_steps=200, device="cuda", precision=precision,
                                  report_interval=1e-9), runs_dir=runs_dir, run_name=precision)
    trainer.run()
    assert trainer.state == "finished" and trainer.bf16 == (precision == "bf16")
    assert trainer.optimizer.defaults["fused"] is True
    losses = list(trainer.losses.recent)
    assert sum(losses[-10:]) / 10 < losses[0] - 1.0
    saved = load_checkpoint(runs_dir / precision / LATEST)
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_the_large_preset_trains_a_few_steps(runs_dir):
    config = apply_preset(TrainConfig(corpus="shakespeare", device="cuda", max_steps=5, eval_interval=5,
                                      sample_interval=0), "large")
    trainer = Trainer(config, runs_dir=runs_dir, run_name="large")
    trainer.run()
    assert trainer.state == "finished" and trainer.step == 5 and trainer.info.layers == 2
    assert all(math.isfinite(v) for v in trainer.losses.recent)


def test_auto_batch_size_probes_real_gpu_memory(runs_dir, big_text):
    events = []
    config = tiny_config(big_text, device="cuda", hidden=1024, seq_len=256, batch_size=64, auto_batch_size=True,
                         max_steps=3)
    trainer = Trainer(config, runs_dir=runs_dir, run_name="auto", on_event=events.append)
    trainer.run()
    notice = next(e.message for e in events if isinstance(e, Notice) and "batch-size auto" in e.message)
    assert "fit in cuda memory" in notice and trainer.state == "finished"
    assert 1 <= trainer.config.batch_size <= AUTO_BATCH_LIMIT


def test_a_real_out_of_memory_error_stops_cleanly_and_the_gpu_is_usable_after(runs_dir, big_text, repetitive_text):
    # ~140 GB of LSTM activations: more than any single GPU has.
    config = tiny_config(big_text, device="cuda", hidden=4096, embedding=64, seq_len=256, batch_size=8192,
                         max_steps=3)
    trainer = Trainer(config, runs_dir=runs_dir, run_name="oom")
    with pytest.raises(CharRNNError) as raised:
        trainer.run()
    message = str(raised.value)
    assert message.startswith("CUDA out of memory with batch-size 8192 and seq-len 256: try --batch-size 4096")
    assert "\n" not in message and trainer.state == "error"
    assert not (runs_dir / "oom").exists()  # nothing was saved, so nothing is left behind
    after = Trainer(tiny_config(repetitive_text, device="cuda", max_steps=20), runs_dir=runs_dir, run_name="after")
    after.run()
    assert after.state == "finished"


def test_sampling_and_next_tokens_carry_their_state_on_the_gpu(repetitive_text, runs_dir):
    Trainer(tiny_config(repetitive_text, max_steps=150, device="cuda"), runs_dir=runs_dir, run_name="s").run()
    on_gpu, on_cpu = load_model(runs_dir / "s" / LATEST, "cuda"), load_model(runs_dir / "s" / LATEST, "cpu")
    assert next(on_gpu.model.parameters()).device.type == "cuda"
    greedy = SampleSettings(length=60, greedy=True)
    gpu_text = TextGenerator(on_gpu.model, on_gpu.vocab).generate("the quick", greedy).text
    assert gpu_text == TextGenerator(on_cpu.model, on_cpu.vocab).generate("the quick", greedy).text
    gpu_typing, cpu_typing = TypingState(on_gpu.model, on_gpu.vocab), TypingState(on_cpu.model, on_cpu.vocab)
    for text in ("t", "th", "the", "the q", "the"):  # typing and a backspace, from carried states
        gpu, cpu = gpu_typing.expect(text, 3), cpu_typing.expect(text, 3)
        assert [t for t, _ in gpu.top] == [t for t, _ in cpu.top]
        torch.testing.assert_close([p for _, p in gpu.top], [p for _, p in cpu.top], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("first", "then"), [("cpu", "cuda"), ("cuda", "cpu")])
def test_a_checkpoint_resumes_on_the_other_device(first, then, repetitive_text, runs_dir):
    Trainer(tiny_config(repetitive_text, max_steps=30, device=first), runs_dir=runs_dir, run_name="moved").run()
    resumed = Trainer(resume=runs_dir / "moved" / LATEST, overrides={"device": then, "max_steps": 30},
                      runs_dir=runs_dir)
    resumed.run()
    assert resumed.state == "finished" and resumed.step == 60 and resumed.device.type == then
    assert load_checkpoint(runs_dir / "moved" / LATEST)["step"] == 60


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs for a 2-process NCCL run")
def test_two_gpus_follow_the_loss_curve_of_one(tmp_path):
    from test_distributed import FLAGS, assert_same_curve, engine, run, step_losses, torchrun

    corpus = tmp_path / "plays.txt"
    corpus.write_text(bundled_path("shakespeare").read_text()[:200_000])
    flags = [*FLAGS, "--device", "cuda", "--max-steps", "40"]
    runs = tmp_path / "runs"
    run(engine("train", str(corpus), *flags, "--runs-dir", str(runs), "--name", "one", "--headless",
               "--jsonl", str(tmp_path / "one.jsonl")))
    done = run(torchrun(2, "train", str(corpus), *flags, "--runs-dir", str(runs), "--name", "two", "--headless",
                        "--jsonl", str(tmp_path / "two.jsonl")))
    assert "× 2 processes (nccl)" in done.stdout
    # TF32 matmuls and cuDNN's kernels round differently at another batch per GPU: close, not equal.
    assert_same_curve(step_losses(tmp_path / "one.jsonl"), step_losses(tmp_path / "two.jsonl"), range(1, 41),
                      tolerance=5e-3)
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"]


@pytest.fixture
def big_text(tmp_path):
    """2.1 million characters of seeded noise: room for batches of thousands of 256-long streams."""
    import random

    path = tmp_path / "big.txt"
    rng = random.Random(0)
    path.write_text("".join(rng.choice("abcdefghij klmnop\n") for _ in range(2_100_000)))
    return path


def test_nvml_reads_the_real_gpu():
    import importlib.util

    from charrnn_tui.engine.gpu_monitor import GpuMonitor

    if importlib.util.find_spec("pynvml") is None:
        pytest.skip("nvidia-ml-py is not installed (pip install 'charrnn-tui[gpu]')")
    reading = GpuMonitor(torch.device("cuda", 0)).read()
    assert reading is not None and 0 <= reading.utilisation <= 100
    assert 0 < reading.memory_used <= reading.memory_total
