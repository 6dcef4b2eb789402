"""CUDA-only paths. They run when torch sees a GPU and skip, saying why, everywhere else."""

import gc
import io
import math
import re

import pytest
import torch
from helpers import step_losses, tiny_config
from test_precision import DtypeLog, one_step, state_dtypes

from charrnn_tui.corpora import bundled_path
from charrnn_tui.engine.checkpoint import load_checkpoint
from charrnn_tui.engine.config import TrainConfig, apply_preset
from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.events import Notice
from charrnn_tui.engine.model.cowrite import TypingState
from charrnn_tui.engine.model.device import configure_backends, precision_by_part, set_tf32, tf32_allowed
from charrnn_tui.engine.model.evaluate import evaluate
from charrnn_tui.engine.model.inference import load_model
from charrnn_tui.engine.model.sampling import SampleSettings, TextGenerator
from charrnn_tui.engine.run.batch_size import AUTO_BATCH_LIMIT
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import LATEST

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
    assert trainer.state == "finished" and trainer.built.bf16 == (precision == "bf16")
    assert trainer.built.optimizer.defaults["fused"] is True
    losses = list(trainer.trained.losses.recent)
    assert sum(losses[-10:]) / 10 < losses[0] - 1.0
    saved = load_checkpoint(runs_dir / precision / LATEST)
    assert all(torch.isfinite(t).all() for t in saved["model"].values())


def test_the_large_preset_trains_a_few_steps(runs_dir):
    config = apply_preset(TrainConfig(corpus="shakespeare", device="cuda", max_steps=5, eval_interval=5,
                                      sample_interval=0), "large")
    trainer = Trainer(config, runs_dir=runs_dir, run_name="large")
    trainer.run()
    assert trainer.state == "finished" and trainer.trained.step == 5 and trainer.built.info.layers == 2
    assert all(math.isfinite(v) for v in trainer.trained.losses.recent)


def test_the_default_gpu_run_is_fitted_to_tiny_shakespeare(runs_dir):
    """The app's default on a GPU (issue 26 item 4): `large` narrowed to 2x544 with dropout 0.25 for a
    1.1M-character text, and --batch-size auto capped at the 15 streams that keep 256 steps an epoch."""
    from charrnn_tui.engine.cli.arguments import configure
    from charrnn_tui.engine.cli.main import parse

    args = parse(["train", "shakespeare", "--device", "cuda", "--batch-size", "auto", "--max-steps", "2",
                  "--sample-interval", "0", "--headless"])
    config, note = configure(args)
    assert (config.preset, config.model.layers, config.model.hidden, config.model.dropout) == ("large", 2, 544, 0.25)
    events: list = []
    trainer = Trainer(config, runs_dir=runs_dir, run_name="fitted", on_event=events.append,
                      notes=(note,) if note else ())
    trainer.run()
    assert trainer.state == "finished" and trainer.config.batch_size == 15
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert any("the largest that keeps 256 steps an epoch" in m for m in notices), notices


def test_auto_batch_size_probes_real_gpu_memory(runs_dir, big_text):
    events = []
    config = tiny_config(big_text, device="cuda", hidden=1024, seq_len=256, batch_size=64, auto_batch_size=True,
                         max_steps=3)
    trainer = Trainer(config, runs_dir=runs_dir, run_name="auto", on_event=events.append)
    trainer.run()
    notice = next(e.message for e in events if isinstance(e, Notice) and "batch-size auto" in e.message)
    assert "fit in cuda memory" in notice and trainer.state == "finished"
    assert 1 <= trainer.config.batch_size <= AUTO_BATCH_LIMIT


OOM_CAP = 2 << 30  # bytes the caching allocator may hold while the out-of-memory test runs


def test_a_real_out_of_memory_error_stops_cleanly_and_the_gpu_is_usable_after(runs_dir, big_text, repetitive_text):
    # The allocator capped at 2 GiB, on an 80 GB card as on a 141 GB one, and a first step that needs
    # several times that: a 1024-wide LSTM over 1024 streams of 256 steps keeps about 7 GB for its
    # backward pass. The batch (262,144 tokens) fits in the corpus (1.89M training tokens), so
    # set-up lets it through to the step.
    config = tiny_config(big_text, device="cuda", hidden=1024, embedding=64, seq_len=256, batch_size=1024,
                         max_steps=3)
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(OOM_CAP / torch.cuda.get_device_properties(0).total_memory)
    try:
        trainer = Trainer(config, runs_dir=runs_dir, run_name="oom")
        with pytest.raises(CharRNNError) as raised:
            trainer.run()
        # What the failed step allocated is gone while the error is still held: it was raised
        # after the except block that caught the out-of-memory error had let go of its frames.
        held = torch.cuda.memory_allocated()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    message = str(raised.value)
    assert message.startswith("CUDA out of memory with batch-size 1024 and seq-len 256: try --batch-size 512")
    assert "\n" not in message and trainer.state == "error" and raised.value.__context__ is None
    assert held < 256 << 20, f"{held / 2**20:.0f} MiB still allocated after the failed step"
    assert not (runs_dir / "oom").exists()  # nothing was saved, so nothing is left behind
    del trainer, raised
    gc.collect()
    after = Trainer(tiny_config(repetitive_text, device="cuda", max_steps=20), runs_dir=runs_dir, run_name="after")
    after.run()
    assert after.state == "finished"


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_bf16_on_the_gpu_runs_the_recurrent_layers_in_fp32_with_tf32_and_the_head_in_bf16(kind):
    device = torch.device("cuda")
    configure_backends(device, None)  # as a run sets it up: TF32 on
    model, step, log, state = one_step(kind, bf16=True, device=device)
    assert log.autocast == {"embedding": True, "rnn": False, "head": True}
    assert log.dtypes("rnn") == {torch.float32} and set(log.outputs["rnn"]) == {torch.float32}
    assert any(op == "_cudnn_rnn" for op, _ in log.ops["rnn"])  # cuDNN's kernels, fed fp32 (not fp16)
    assert log.tf32["rnn"] == (True, True)
    assert torch.bfloat16 in log.dtypes("head") and log.outputs["head"] == (torch.bfloat16,)
    assert state_dtypes(state) == {torch.float32}
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    parts = precision_by_part(device, True, kind)
    assert parts["recurrent layers"] == "fp32 (TF32 matmuls), outside autocast" and parts["head"] == "bf16 autocast"
    # and evaluation, in fp32 with TF32 off
    evaluation = DtypeLog(model)
    try:
        with evaluation:
            evaluate(model, torch.randint(0, 11, (300,)))
    finally:
        evaluation.close()
    assert set(evaluation.autocast.values()) == {False} and evaluation.tf32["rnn"] == (False, False)
    assert evaluation.dtypes("rnn") == evaluation.dtypes("head") == {torch.float32}
    assert torch.backends.cuda.matmul.allow_tf32  # training's settings are back


def test_training_evaluation_and_the_eval_command_agree_on_the_gpu(repetitive_text, runs_dir):
    from charrnn_tui.engine.cli.main import build_parser, run_eval

    trainer = Trainer(tiny_config(repetitive_text, max_steps=60, eval_interval=30, device="cuda", precision="bf16"),
                      runs_dir=runs_dir, run_name="e")
    trainer.run()
    out = io.StringIO()
    set_tf32(False, True)  # torch's defaults, as `charrnn-tui eval` starts in a fresh process
    try:
        assert run_eval(build_parser().parse_args(["eval", str(runs_dir / "e" / LATEST), "--device", "cuda"]),
                        out) == 0
    finally:
        set_tf32(True)
    printed = float(re.search(r"\(([\d.]+) nats/char", out.getvalue())[1])
    assert printed == pytest.approx(trainer.trained.val_history[-1][1], abs=1e-4)


def test_sampling_and_next_tokens_carry_their_state_on_the_gpu(repetitive_text, runs_dir):
    Trainer(tiny_config(repetitive_text, max_steps=150, device="cuda"), runs_dir=runs_dir, run_name="s").run()
    on_gpu, on_cpu = load_model(runs_dir / "s" / LATEST, "cuda"), load_model(runs_dir / "s" / LATEST, "cpu")
    assert next(on_gpu.model.parameters()).device.type == "cuda"
    # Both sides in fp32 with TF32 off. The training run above turned TF32 on, which would round the
    # GPU's matmuls to a 10-bit mantissa (about 1e-3 relative) and could flip a greedy near-tie; in
    # fp32 the two differ only in the order of their sums (about 1e-6 relative), far inside the
    # tolerance below and the margins of a greedy choice on this text.
    with tf32_allowed(False):
        greedy = SampleSettings(length=60, greedy=True)
        gpu_text = TextGenerator(on_gpu.model, on_gpu.vocab).generate("the quick", greedy).text
        assert gpu_text == TextGenerator(on_cpu.model, on_cpu.vocab).generate("the quick", greedy).text
        gpu_typing, cpu_typing = TypingState(on_gpu.model, on_gpu.vocab), TypingState(on_cpu.model, on_cpu.vocab)
        for text in ("t", "th", "the", "the q", "the"):  # typing and a backspace, from carried states
            gpu, cpu = gpu_typing.expect(text, 3), cpu_typing.expect(text, 3)
            assert [t for t, _ in gpu.top] == [t for t, _ in cpu.top]
            torch.testing.assert_close([p for _, p in gpu.top], [p for _, p in cpu.top], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("first", "then"), [("cpu", "cuda"), ("cuda", "cpu")])
def test_a_checkpoint_resumes_on_the_other_device(first, then, repetitive_text, runs_dir):
    Trainer(tiny_config(repetitive_text, max_steps=30, device=first), runs_dir=runs_dir, run_name="moved").run()
    resumed = Trainer(resume=runs_dir / "moved" / LATEST, overrides={"device": then, "max_steps": 30},
                      runs_dir=runs_dir)
    resumed.run()
    assert resumed.state == "finished" and resumed.trained.step == 60 and resumed.device.type == then
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

    from charrnn_tui.engine.run.gpu_monitor import GpuMonitor

    if importlib.util.find_spec("pynvml") is None:
        pytest.skip("nvidia-ml-py is not installed (pip install 'charrnn-tui[gpu]')")
    reading = GpuMonitor(torch.device("cuda", 0)).read()
    assert reading is not None and 0 <= reading.utilisation <= 100
    assert 0 < reading.memory_used <= reading.memory_total
