"""GPU utilisation and memory for the status line, from NVML (the optional nvidia-ml-py package).

torch's own wrappers (`torch.cuda.utilization`, `torch.cuda.device_memory_used`) do the NVML calls,
mapping the CUDA device index through CUDA_VISIBLE_DEVICES. Read at progress reports, at most once a
second: an NVML query takes about a millisecond and never touches the training stream."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass

import torch

MISSING_NVML = "GPU utilisation is not shown: it needs nvidia-ml-py (pip install 'charrnn-tui[gpu]')"
READ_INTERVAL = 1.0  # seconds


@dataclass(frozen=True)
class GpuReading:
    utilisation: int  # percent of the last sample period with a kernel running
    memory_used: int  # bytes in use on the device, by every process (as nvidia-smi says)
    memory_total: int


class GpuMonitor:
    def __init__(self, device: torch.device):
        self.device = device
        self.missing: str | None = None  # why there are no readings on a GPU, said once
        self.available = device.type == "cuda"
        if self.available and importlib.util.find_spec("pynvml") is None:
            self.available, self.missing = False, MISSING_NVML
        self._last: GpuReading | None = None
        self._read_at = -float("inf")

    def read(self) -> GpuReading | None:
        """The latest reading (None off a GPU or without NVML); a fresh one at most once a second."""
        if not self.available:
            return None
        now = time.monotonic()
        if now - self._read_at < READ_INTERVAL:
            return self._last
        self._read_at = now
        try:
            total = torch.cuda.get_device_properties(self.device).total_memory
            self._last = GpuReading(int(torch.cuda.utilization(self.device)),
                                    int(torch.cuda.device_memory_used(self.device)), int(total))
        except Exception as e:  # NVML missing its driver library, or a GPU it cannot see: stop asking
            self.available = False
            self.missing = f"GPU utilisation is not shown: NVML failed ({str(e).strip().splitlines()[0]})"
            self._last = None
        return self._last
