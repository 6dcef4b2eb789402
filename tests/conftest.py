from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # deterministic and fast for the tiny models of the tests
    yield


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def repetitive_text(tmp_path: Path) -> Path:
    path = tmp_path / "abc.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    return path
