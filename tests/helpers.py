"""Shared test helpers (conftest.py holds the fixtures)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from charrnn_tui.engine import config as cfg


def tiny_config(corpus: str | Path, **overrides) -> cfg.TrainConfig:
    """A model small enough that a few hundred steps take a second or two on one CPU core."""
    model = {k: overrides.pop(k) for k in ("kind", "layers", "hidden", "embedding", "dropout") if k in overrides}
    base = cfg.TrainConfig(
        corpus=str(corpus), seq_len=16, batch_size=4, lr=1e-2, warmup_steps=0, eval_interval=50,
        checkpoint_interval=0, sample_interval=0, sample_length=20, device="cpu",
        model=cfg.ModelConfig(kind="lstm", layers=1, hidden=32, embedding=16),
    )
    base = dataclasses.replace(base, model=dataclasses.replace(base.model, **model))
    return dataclasses.replace(base, **overrides)


def cli_command() -> list[str]:
    """The installed `charrnn-tui` console script (or its module, where it is not installed)."""
    exe = Path(sys.executable).with_name("charrnn-tui")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "charrnn_tui.tui.cli"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The console script, as a user runs it."""
    cmd = cli_command()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env)
