"""What each part of a run computes in, checked against what engine/model/device.py says it does
(precision_by_part, shown by `charrnn-tui doctor`), and recovery from running out of memory.

The CUDA branch is simulated on the CPU: the recurrent layers leave the step's autocast on every
device type but those in RECURRENT_UNDER_AUTOCAST, so emptying that set runs the CPU as CUDA does,
under the same TrainStep, with the dtypes of every op logged below autocast (a TorchDispatchMode
sees the ops after autocast's casts). tests/test_cuda.py checks the same on a GPU.
"""

from __future__ import annotations

import io
import re
import sys
import weakref
from collections import defaultdict

import pytest
import torch
from helpers import tiny_config
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from charrnn_tui.engine.checkpoint import load_checkpoint
from charrnn_tui.engine.config import ModelConfig
from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.model import device as device_module
from charrnn_tui.engine.model.device import (
    RECURRENT_UNDER_AUTOCAST,
    cpu_has_native_bf16,
    precision_by_part,
    set_tf32,
    tf32_allowed,
)
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.model.step import TrainStep
from charrnn_tui.engine.run import run_setup, saving
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import LATEST

CPU = torch.device("cpu")
PARTS = {"embedding", "recurrent layers", "head", "loss", "carried state", "weights, gradients and optimizer",
         "evaluation"}


class DtypeLog(TorchDispatchMode):
    """Each part of the model (embedding, rnn, head; "outside" for the rest, the loss among it): whether
    autocast was on for its device when it ran, and the floating dtypes of every op it ran, as
    computed (below autocast)."""

    def __init__(self, model: CharRNN):
        super().__init__()
        self.where = "outside"
        self.ops: dict[str, set[tuple[str, tuple[torch.dtype, ...]]]] = defaultdict(set)
        self.autocast: dict[str, bool] = {}
        self.tf32: dict[str, tuple[bool, bool]] = {}  # (cuBLAS matmuls, cuDNN RNNs)
        self.outputs: dict[str, tuple[torch.dtype, ...]] = {}
        self.hooks = []
        for name in ("embedding", "rnn", "head"):
            module = getattr(model, name)
            if module is not None:
                self.hooks.append(module.register_forward_pre_hook(self._enter(name)))
                self.hooks.append(module.register_forward_hook(self._leave(name)))

    def _enter(self, name):
        def hook(module, args):
            self.where = name
            self.autocast[name] = torch.is_autocast_enabled(args[0].device.type)
            self.tf32[name] = device_module._tf32_now()
        return hook

    def _leave(self, name):
        def hook(module, args, output):
            self.outputs[name] = tuple(t.dtype for t in tree_leaves(output) if isinstance(t, torch.Tensor))
            self.where = "outside"
        return hook

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        dtypes = tuple(t.dtype for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
                       and t.is_floating_point())
        self.ops[self.where].add((func.overloadpacket.__name__, dtypes))
        return result

    def dtypes(self, part: str) -> set[torch.dtype]:
        return {d for _, dtypes in self.ops[part] for d in dtypes}

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()


def one_step(kind: str, bf16: bool, state_steps: int = 2, device: torch.device = CPU):
    """A model and TrainStep, `state_steps` steps from a carried state, logged."""
    model = CharRNN(ModelConfig(kind=kind, layers=2, hidden=16, embedding=8, vocab_size=11)).to(device)
    step = TrainStep(model, torch.optim.AdamW(model.parameters(), lr=1e-3), device, bf16=bf16, grad_clip=1.0)
    batch = type("Batch", (), {"x": torch.randint(0, 11, (3, 5), device=device),
                               "y": torch.randint(0, 11, (3, 5), device=device), "predictions": 15})()
    state = None
    log = DtypeLog(model)
    try:
        with log:
            for _ in range(state_steps):
                state = step(batch, state, 1e-3)
    finally:
        log.close()
    return model, step, log, state


def state_dtypes(state) -> set[torch.dtype]:
    return {t.dtype for t in (state if isinstance(state, tuple) else (state,))}


# ---- what each part runs in -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_under_the_cuda_branch_the_recurrent_layers_run_in_fp32_outside_autocast(kind, monkeypatch):
    # CUDA's autocast would cast a cuDNN RNN's input, weights and state to fp16 (AutocastRNN.cpp):
    # the recurrent layers must see autocast off, and fp32 in every op, with the head still in bf16.
    monkeypatch.setattr(device_module, "RECURRENT_UNDER_AUTOCAST", frozenset())
    model, step, log, state = one_step(kind, bf16=True)
    assert log.autocast == {"embedding": True, "rnn": False, "head": True}
    assert log.dtypes("rnn") == {torch.float32} and set(log.outputs["rnn"]) == {torch.float32}
    assert log.dtypes("embedding") <= {torch.float32} and log.outputs["embedding"] == (torch.float32,)
    assert torch.bfloat16 in log.dtypes("head") and log.outputs["head"] == (torch.bfloat16,)
    losses = {dtypes for op, dtypes in log.ops["outside"] if op in ("_log_softmax", "nll_loss_forward")}
    assert losses and all(set(dtypes) == {torch.float32} for dtypes in losses)  # the loss
    assert state_dtypes(state) == {torch.float32}  # carried from step to step in fp32
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    assert step.log.values.dtype == torch.float32
    # and that is what the run says it does
    parts = precision_by_part(CPU, True, kind)
    assert parts["recurrent layers"].startswith("fp32") and "outside autocast" in parts["recurrent layers"]
    assert parts["head"] == "bf16 autocast" and parts["carried state"] == parts["loss"] == "fp32"


@pytest.mark.parametrize("kind", [
    pytest.param("lstm", marks=pytest.mark.skipif(not cpu_has_native_bf16(), reason="oneDNN's bf16 LSTM needs a CPU "
                                                  "with native bf16 (AVX512-BF16 or AMX)")),
    "gru", "rnn"])
def test_on_a_cpu_bf16_autocast_reaches_the_recurrent_layers_and_the_state_is_carried_in_fp32(kind):
    assert "cpu" in RECURRENT_UNDER_AUTOCAST
    model, _, log, state = one_step(kind, bf16=True)
    assert log.autocast == {"embedding": True, "rnn": True, "head": True}
    parts = precision_by_part(CPU, True, kind)
    assert torch.bfloat16 in log.dtypes("rnn") and "bf16" in parts["recurrent layers"]
    matmuls = {dtypes for op, dtypes in log.ops["rnn"] if op in ("mm", "addmm", "mkldnn_rnn_layer")}
    assert matmuls and all(set(dtypes) == {torch.bfloat16} for dtypes in matmuls)
    if kind == "gru":  # its state update mixes in the fp32 state (precision_by_part says so)
        assert log.outputs["rnn"] == (torch.float32, torch.float32) and "fp32 state update" in parts["recurrent layers"]
    else:
        assert set(log.outputs["rnn"]) == {torch.bfloat16}
    assert state_dtypes(state) == {torch.float32} and parts["carried state"] == "fp32"
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_in_fp32_every_part_runs_in_fp32_on_a_cpu(kind):
    model, _, log, state = one_step(kind, bf16=False)
    assert set(log.autocast.values()) == {False}
    assert {d for part in log.ops for d in log.dtypes(part)} == {torch.float32}
    assert state_dtypes(state) == {torch.float32}
    assert set(precision_by_part(CPU, False, kind).values()) == {"fp32"}


def test_precision_by_part_per_device_and_precision(monkeypatch):
    cuda, mps = torch.device("cuda"), torch.device("mps")
    monkeypatch.setattr(device_module, "tf32_matmuls", lambda device: device.type == "cuda")  # an Ampere or later
    assert precision_by_part(cuda, True) == {
        "embedding": "fp32", "recurrent layers": "fp32 (TF32 matmuls), outside autocast", "head": "bf16 autocast",
        "loss": "fp32", "carried state": "fp32", "weights, gradients and optimizer": "fp32",
        "evaluation": "fp32, TF32 off"}
    fp32 = precision_by_part(cuda, False)
    assert fp32["recurrent layers"] == fp32["head"] == "fp32 (TF32 matmuls)" and fp32["evaluation"] == "fp32, TF32 off"
    monkeypatch.setattr(device_module, "tf32_matmuls", lambda device: False)  # a Volta or Turing: no TF32
    assert precision_by_part(cuda, False)["recurrent layers"] == "fp32"
    assert set(precision_by_part(mps, False).values()) == {"fp32"}
    assert precision_by_part(CPU, True)["recurrent layers"].startswith("bf16 autocast: LSTM and RNN layers in bf16")
    assert precision_by_part(CPU, True, "lstm")["recurrent layers"].startswith("bf16 (autocast: oneDNN LSTM")
    for device in (cuda, mps, CPU):
        for bf16 in (False, True):
            assert set(precision_by_part(device, bf16)) == PARTS


def test_the_status_line_names_the_precision_that_runs(monkeypatch):
    from charrnn_tui.engine.events import RunInfo
    from charrnn_tui.engine.model.device import precision_label
    from charrnn_tui.tui.run_view import RunView
    from charrnn_tui.tui.widgets.status_panel import render_status

    cuda = torch.device("cuda")
    monkeypatch.setattr(device_module, "tf32_matmuls", lambda device: device.type == "cuda")
    assert precision_label(cuda, True) == "bf16 (RNN fp32)" and precision_label(cuda, False) == "fp32 (TF32)"
    assert precision_label(CPU, True) == "bf16" and precision_label(CPU, False) == "fp32"
    view = RunView()
    info = dict(run_name="r", run_dir="/r", corpus_name="c", corpus_source="c", corpus_chars=1, train_tokens=1,
                val_tokens=1, token_kind="char", vocab_size=2, model_kind="lstm", layers=1, hidden=8, embedding=4,
                parameters=10, device="cuda", device_name="GPU X", precision="bf16 (RNN fp32)", preset="large",
                batch_size=1, seq_len=1, max_steps=None, max_epochs=None, max_time=None, resumed_step=0)
    view.info = RunInfo(**info)
    assert "GPU X bf16 (RNN fp32)" in render_status(view, now=0.0).plain
    view.info = RunInfo(**{**info, "device_name": "CPU, 2 threads", "precision": "fp32"})
    assert "CPU, 2 threads" in render_status(view, now=0.0).plain and "fp32" not in render_status(view, now=0.0).plain


def test_tf32_is_set_through_switches_that_keep_torchs_old_and_new_flags_in_step():
    # torch raises at an fp32 matmul (and at the legacy getters) once the two disagree.
    with tf32_allowed(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.fp32_precision == torch.backends.cudnn.rnn.fp32_precision == "tf32"
        with tf32_allowed(False):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.rnn.fp32_precision == "tf32"
    set_tf32(True)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    set_tf32(False, True)
    assert not torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


# ---- one precision for every evaluation -------------------------------------------------------


def test_training_evaluations_and_the_eval_command_run_in_the_same_precision(repetitive_text, runs_dir, monkeypatch):
    # Training's settings differ from a fresh process's (TF32 on, as configure_backends sets it on
    # CUDA; bf16 autocast for the steps): evaluate() sets its own, so both paths run in the same.
    from charrnn_tui.engine.cli.main import build_parser, run_eval

    seen: list[tuple[str, bool, tuple[bool, bool]]] = []
    real_forward = CharRNN.forward

    def forward(self, x, state=None, last_only=False):
        if not self.training:
            seen.append((path[0], torch.is_autocast_enabled("cpu"), device_module._tf32_now()))
        return real_forward(self, x, state, last_only)

    monkeypatch.setattr(CharRNN, "forward", forward)
    monkeypatch.setattr(run_setup, "use_bf16", lambda device, precision: True)  # emulated bf16 (GRU runs anywhere)
    path = ["train"]
    with tf32_allowed(True):
        trainer = Trainer(tiny_config(repetitive_text, kind="gru", max_steps=40, eval_interval=20),
                          runs_dir=runs_dir, run_name="p")
        trainer.run()
        assert trainer.built.bf16 and trainer.state == "finished"
        path[0] = "eval"
        out = io.StringIO()
        assert run_eval(build_parser().parse_args(["eval", str(runs_dir / "p" / LATEST), "--device", "cpu"]), out) == 0
        assert torch.backends.cuda.matmul.allow_tf32  # as it was: the evaluation's settings are its own
    by_path = {p: {(autocast, tf32) for q, autocast, tf32 in seen if q == p} for p in ("train", "eval")}
    assert by_path["train"] == by_path["eval"] == {(False, (False, False))}
    printed = float(re.search(r"\(([\d.]+) nats/char", out.getvalue())[1])
    assert printed == pytest.approx(trainer.trained.val_history[-1][1], abs=1e-4)


# ---- running out of memory --------------------------------------------------------------------


def test_out_of_memory_is_recovered_from_after_the_failed_step_is_gone(repetitive_text, runs_dir, monkeypatch):
    config = tiny_config(repetitive_text, max_steps=100, checkpoint_interval=10)
    trainer = Trainer(config, runs_dir=runs_dir, run_name="oom")
    real_forward = CharRNN.forward
    failed_step: list[weakref.ref] = []

    def forward(self, x, state=None, last_only=False):
        logits, state = real_forward(self, x, state, last_only)
        if self.training and trainer.trained.step == 13:
            failed_step.append(weakref.ref(logits))  # held by the failed step's frame and graph
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return logits, state

    at_save = []
    real_save = saving.save

    def save(*args):
        at_save.append((sys.exc_info()[1], [ref() for ref in failed_step]))
        return real_save(*args)

    monkeypatch.setattr(CharRNN, "forward", forward)
    monkeypatch.setattr(saving, "save", save)
    with pytest.raises(CharRNNError, match="out of memory with batch-size 4 and seq-len 16") as raised:
        trainer.run()
    assert failed_step and at_save[-1] == (None, [None])  # outside any except block; the step's tensors freed
    assert raised.value.__context__ is None
    assert load_checkpoint(runs_dir / "oom" / LATEST)["step"] == 13
