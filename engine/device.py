"""Choosing and describing the compute device, and the precision to train in."""

from __future__ import annotations

import contextlib
import sys

import torch

from .errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU; an explicit name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available (torch sees none)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: Apple MPS is not available")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    threads = torch.get_num_threads()
    return f"CPU, {threads} thread{'' if threads == 1 else 's'}"


def use_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast where the hardware does bf16 natively: CUDA GPUs that support it, and CPUs with
    AVX512-BF16 or AMX (1.3-1.6x the fp32 chars/s of the CPU preset on 2 Zen 4 cores)."""
    if precision == "bf16" and device.type == "mps":
        raise ConfigError("--precision bf16 is supported on CUDA and CPU only")
    if precision == "auto":
        if device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        return device.type == "cpu" and cpu_has_native_bf16()
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        # oneDNN then either emulates it, slower than fp32, or has no bf16 LSTM at all (an AVX2 CPU:
        # "could not create a primitive descriptor" at the first step)
        raise ConfigError("--precision bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX), and this one has "
                          "neither: use --precision fp32 (what auto picks here)")
    return precision == "bf16"


def cpu_has_native_bf16() -> bool:
    # Without these instructions oneDNN emulates bf16, which is slower than fp32.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def fork_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """Random state restored on exit: the CPU's, and the accelerator's if there is one."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    index = device.index if device.index is not None else 0
    return torch.random.fork_rng(devices=[index], device_type=device.type)


def reseed_cudnn_dropout(device: torch.device) -> None:
    """Have cuDNN draw its dropout state afresh from the run's CUDA generator at the next step.

    cuDNN keeps the random state of dropout between RNN layers to itself, where no checkpoint can
    reach it; torch re-seeds it from the CUDA generator whenever that generator's state is set.
    Setting it to itself after each save does that without changing it, so a run resumed from the
    checkpoint (which sets the saved state) draws the same masks as the run that saved it.
    """
    if device.type == "cuda":
        torch.cuda.set_rng_state(torch.cuda.get_rng_state(device), device)


def memory_in_use(device: torch.device) -> int | None:
    """Bytes the caching allocator holds on a GPU; elsewhere this process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.memory_reserved(device)
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # KiB on Linux, bytes on macOS


def configure_backends(device: torch.device, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.enabled = True
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
