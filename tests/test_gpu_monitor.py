"""GPU utilisation and memory from NVML: read at most once a second, said once when nvidia-ml-py is
missing, and shown in the status and the progress line only where there is a reading. NVML is
faked here (no GPU needed); tests/test_cuda.py reads a real one."""

from __future__ import annotations

import importlib.util
import io

import pytest
import torch
from helpers import tiny_config

from charrnn_tui.engine.events import Notice, Progress
from charrnn_tui.engine.run import gpu_monitor, run_setup
from charrnn_tui.engine.run.gpu_monitor import MISSING_NVML, GpuMonitor, GpuReading
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.serve.printer import ProgressPrinter
from charrnn_tui.tui.run_view import RunView
from charrnn_tui.tui.widgets.status_panel import render_status

GIB = 1 << 30


@pytest.fixture
def fake_nvml(monkeypatch):
    calls = {"utilisation": 0}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(gpu_monitor.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "pynvml" else real_find_spec(name, *a))

    def utilisation(device):
        calls["utilisation"] += 1
        return 87

    monkeypatch.setattr(torch.cuda, "utilization", utilisation)
    monkeypatch.setattr(torch.cuda, "device_memory_used", lambda device: 12 * GIB)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: type("P", (), {"total_memory": 80 * GIB}))
    return calls


def test_off_a_gpu_there_is_nothing_to_read_or_say():
    monitor = GpuMonitor(torch.device("cpu"))
    assert monitor.read() is None and monitor.missing is None


def test_a_gpu_without_nvidia_ml_py_says_so(monkeypatch):
    monkeypatch.setattr(gpu_monitor.importlib.util, "find_spec", lambda name, *a: None)
    monitor = GpuMonitor(torch.device("cuda", 0))
    assert monitor.read() is None and monitor.missing == MISSING_NVML
    assert "nvidia-ml-py" in MISSING_NVML and "\n" not in MISSING_NVML


def test_readings_come_at_most_once_a_second(fake_nvml, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(gpu_monitor.time, "monotonic", lambda: clock[0])
    monitor = GpuMonitor(torch.device("cuda", 0))
    assert monitor.read() == GpuReading(87, 12 * GIB, 80 * GIB)
    clock[0] += 0.5
    monitor.read()
    assert fake_nvml["utilisation"] == 1
    clock[0] += 0.6
    monitor.read()
    assert fake_nvml["utilisation"] == 2


def test_an_nvml_failure_stops_the_readings_with_one_line(fake_nvml, monkeypatch):
    def broken(device):
        raise RuntimeError("NVML Shared Library Not Found\nmore")

    monkeypatch.setattr(torch.cuda, "utilization", broken)
    monitor = GpuMonitor(torch.device("cuda", 0))
    assert monitor.read() is None and not monitor.available
    assert monitor.missing == "GPU utilisation is not shown: NVML failed (NVML Shared Library Not Found)"


class _FakeMonitor:
    def __init__(self, reading, missing=None):
        self.reading, self.missing = reading, missing

    def read(self):
        return self.reading


def _run_with_monitor(monkeypatch, monitor, repetitive_text, runs_dir) -> list:
    monkeypatch.setattr(run_setup, "GpuMonitor", lambda device: monitor)
    events = []
    Trainer(tiny_config(repetitive_text, max_steps=6, report_interval=1e-9), runs_dir=runs_dir,
            on_event=events.append).run()
    return events


def test_progress_carries_the_gpu_reading_to_the_status_and_the_progress_line(monkeypatch, repetitive_text,
                                                                              runs_dir):
    events = _run_with_monitor(monkeypatch, _FakeMonitor(GpuReading(87, 12 * GIB, 80 * GIB)), repetitive_text,
                               runs_dir)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and all((e.gpu_utilisation, e.gpu_memory_used, e.gpu_memory_total) == (87, 12 * GIB, 80 * GIB)
                            for e in progress)
    view = RunView()
    for e in events:
        view.apply(e)
    assert "gpu    87% busy · 12.0 GiB of 80.0 GiB in use" in render_status(view).plain
    out = io.StringIO()
    printer = ProgressPrinter(out=out, interval=0)
    for e in events:
        printer(e)
    assert "| GPU 87%, 12.0 GiB" in out.getvalue()


def test_without_a_reading_the_gpu_line_is_hidden_and_a_missing_library_is_said_once(monkeypatch,
                                                                                   repetitive_text, runs_dir):
    events = _run_with_monitor(monkeypatch, _FakeMonitor(None, MISSING_NVML), repetitive_text, runs_dir)
    assert [e.message for e in events if isinstance(e, Notice) and "nvidia-ml-py" in e.message] == [MISSING_NVML]
    assert all(e.gpu_utilisation is None for e in events if isinstance(e, Progress))
    view = RunView()
    for e in events:
        view.apply(e)
    assert "gpu " not in render_status(view).plain
