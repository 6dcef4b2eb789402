"""Choosing and describing the compute device, and the precision to train in."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import torch

from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.errors import ConfigError


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
    return f"CPU, {plural(threads, 'thread')}"


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
    """The training step's autocast: bf16 for what autocast casts (the head's matmul), except the
    recurrent layers where `recurrent_precision` turns it off again."""
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Device types whose recurrent layers run under the step's bf16 autocast; elsewhere they run outside it,
# in fp32. On CUDA, autocast's wrapper for cuDNN RNNs (_cudnn_rnn_cast_reflatten in
# aten/src/ATen/cudnn/AutocastRNN.cpp) casts input, weights and hidden state to fp16 (at::kHalf,
# hard-coded) whatever dtype autocast was given: "bf16" would train an fp16 LSTM with no loss scaling
# and carry an fp16 state. On a CPU, autocast puts LSTM's oneDNN layer (mkldnn_rnn_layer) on its
# lower-precision list (aten/src/ATen/autocast_mode.cpp), so in bf16, which has fp32's range: the
# point of bf16 on a CPU with native bf16 (1.3-1.6x the chars/s of fp32).
RECURRENT_UNDER_AUTOCAST = frozenset({"cpu"})


def recurrent_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Around the recurrent layers: the step's autocast turned off where they run in fp32 (CUDA)."""
    if device.type in RECURRENT_UNDER_AUTOCAST or not torch.is_autocast_enabled(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


# What the recurrent layers compute in under a CPU's bf16 autocast, by kind (seen with a dispatch log
# of each op's dtypes on torch 2.13): LSTM goes to oneDNN (mkldnn_rnn_layer, autocast to bf16
# whole: input, weights and state); GRU and RNN run torch's own cells, whose matmuls autocast casts
# to bf16, and GRU's state update then mixes in the fp32 state and comes out fp32.
_CPU_BF16_RECURRENT = {
    "lstm": "bf16 (autocast: oneDNN LSTM, input, weights and state in bf16)",
    "gru": "bf16 matmuls, fp32 state update (autocast)",
    "rnn": "bf16 (autocast: matmuls and tanh)",
}


def tf32_matmuls(device: torch.device) -> bool:
    """Whether fp32 matmuls on this device run in TF32 when a run allows it: CUDA GPUs from Ampere on."""
    return (device.type == "cuda" and torch.cuda.is_available()
            and torch.cuda.get_device_capability(device)[0] >= 8)


def precision_by_part(device: torch.device, bf16: bool, kind: str | None = None) -> dict[str, str]:
    """Part of a run -> the precision it runs in on `device`, with bf16 autocast on or off (what
    TrainStep, CharRNN.forward, configure_backends and evaluate do). `kind` (lstm, gru, rnn) makes
    the recurrent layers' entry exact where it depends on it (bf16 on a CPU)."""
    fp32 = "fp32 (TF32 matmuls)" if tf32_matmuls(device) else "fp32"
    if not bf16:
        recurrent = head = fp32
    elif device.type in RECURRENT_UNDER_AUTOCAST:
        recurrent = _CPU_BF16_RECURRENT.get(kind or "", "bf16 autocast: LSTM and RNN layers in bf16 (oneDNN "
                                                       "LSTM), GRU's matmuls in bf16 and its state update in fp32")
        head = "bf16 autocast"
    else:
        recurrent = f"{fp32}, outside autocast"
        head = "bf16 autocast"
    return {
        "embedding": "fp32",
        "recurrent layers": recurrent,
        "head": head,
        "loss": "fp32",
        "carried state": "fp32",
        "weights, gradients and optimizer": "fp32",
        "evaluation": "fp32, TF32 off" if device.type == "cuda" else "fp32",
    }


def precision_label(device: torch.device, bf16: bool) -> str:
    """The run's precision in a few words, for the status line and the progress line (doctor and
    precision_by_part give each part): on CUDA "bf16" would hide that the recurrent layers are fp32."""
    fp32 = "fp32 (TF32)" if tf32_matmuls(device) else "fp32"
    if not bf16:
        return fp32
    return "bf16" if device.type in RECURRENT_UNDER_AUTOCAST else "bf16 (RNN fp32)"


def _tf32_now() -> tuple[bool, bool]:
    """Whether TF32 is on for (cuBLAS matmuls, cuDNN RNNs), resolved as torch does: an op's own
    setting, else the backend's, else the generic one. Read through the new flags, whose getters
    never raise (the legacy ones do once both kinds of setting were used)."""
    backends = torch.backends

    def resolved(precision: str) -> bool:
        # torch declares the generic flag nowhere a type checker sees (torch/backends/__init__.py swaps the
        # module for a GenericModule), nor cudnn.rnn's below
        for p in (precision, backends.cudnn.fp32_precision, backends.fp32_precision):  # type: ignore[attr-defined]
            if p != "none":
                return p == "tf32"
        return False

    return (resolved(backends.cuda.matmul.fp32_precision),
            resolved(backends.cudnn.rnn.fp32_precision))  # type: ignore[attr-defined]


def set_tf32(matmuls: bool, cudnn: bool | None = None) -> None:
    """TF32 on or off for fp32 matmuls (cuBLAS) and cuDNN (RNNs, convolutions; `cudnn` defaults to
    `matmuls`). Through torch's legacy switches, which set its legacy and new flags alike
    (Context::setAllowTF32CuBLAS and setAllowTF32CuDNN in aten/src/ATen/Context.cpp): a flag set
    through the new API alone leaves the two disagreeing, and torch then raises at every fp32 matmul."""
    torch.backends.cuda.matmul.allow_tf32 = matmuls
    torch.backends.cudnn.allow_tf32 = matmuls if cudnn is None else cudnn


@contextlib.contextmanager
def tf32_allowed(allowed: bool) -> Iterator[None]:
    """TF32 on or off for the duration, then as it was."""
    before = _tf32_now()
    set_tf32(allowed)
    try:
        yield
    finally:
        set_tf32(*before)


@contextlib.contextmanager
def evaluation_precision(device: torch.device) -> Iterator[None]:
    """The one precision of every evaluation, in training and in `charrnn-tui eval` alike: fp32,
    no autocast and TF32 off, whatever the run trains in and whatever was set before."""
    with torch.autocast(device_type=device.type, enabled=False), tf32_allowed(False):
        yield


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
        # Training: TF32 for the fp32 matmuls of the recurrent layers (cuDNN) and an fp32 head
        # (cuBLAS); evaluation turns it off (evaluation_precision).
        set_tf32(True)
