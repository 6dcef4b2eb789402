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


@pytest.fixture(autouse=True)
def _no_engine_outlives_its_test(tmp_path: Path):
    """A test that starts a detached engine and then fails must not leave it training for ever."""
    yield
    import os
    import signal

    from charrnn_tui.engine.runs import read_status

    for status in tmp_path.rglob("status.json"):
        pid = read_status(status.parent).get("pid")  # never blocks on a planted FIFO, never reads /dev/zero
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if isinstance(pid, int) else b""
        except OSError:
            continue
        if pid != os.getpid() and b"charrnn" in cmdline:
            os.kill(pid, signal.SIGKILL)
