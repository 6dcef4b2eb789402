"""`charrnn-tui doctor`: what this machine is, and how fast the default run trains and samples on it.

One command to run on a new box and paste into a bug report: the versions, the device the default
picks and its memory, the precision of each part of the model, the CPU threads, NVML, and a probe
(15 s by default, `--seconds`) of the default run: the model the app would train on the default
corpus, trained for a fixed time (tokens/s), then sampled from (chars/s). The probe writes nothing:
no run folder, no checkpoint; the random state is restored afterwards.

`--json` prints the same fields as one JSON object (null where a field does not apply here).
No torch at import: the command line builds its parser (and `--version`) from this module.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.printable import printable_line

if TYPE_CHECKING:  # no torch at import (above)
    import argparse

    import torch

    from charrnn_tui.engine.config import TrainConfig
    from charrnn_tui.engine.model.model import CharRNN, State
    from charrnn_tui.engine.model.step import TrainStep
    from charrnn_tui.engine.text.corpus import Corpus
    from charrnn_tui.engine.text.data import Batcher
    from charrnn_tui.engine.text.vocab import CharVocab, WordVocab

PROBE_SECONDS = 15.0
TRAIN_SHARE = 0.7  # of the probe's time left after set-up; the rest samples
WARMUP_STEPS = 2  # untimed: the allocator, the thread pool and (on CUDA) cuDNN's autotuning
LOSS_STEPS = 5  # the first and last steps' mean training loss, to show the model learns here


def package_version(name: str = "charrnn-tui") -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def version_line() -> str:
    return f"charrnn-tui {package_version() or 'unknown (not installed)'}"


# ---- the report ------------------------------------------------------------------------------------
def collect(device_name: str = "auto", seconds: float = PROBE_SECONDS) -> dict[str, Any]:
    """Every field of the report; `seconds` 0 skips the probe (its field is then None)."""
    import torch

    from charrnn_tui.engine.model.device import pick_device

    device = pick_device(device_name)
    report: dict[str, Any] = {
        "versions": versions(),
        "system": {"os": platform.platform(), "machine": platform.machine()},
        "device": device_report(device),
        "precision": precision_report(device),
        "cpu": cpu_report(),
        "nvml": nvml_report(device),
        "probe": None,
    }
    if seconds > 0:
        try:
            report["probe"] = probe(device_name, seconds)
        except Exception as e:  # noqa: BLE001 - a failed probe is part of the report, the rest still tells
            report["probe"] = {"error": f"{type(e).__name__}: {first_line(e)}"}
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return report


def versions() -> dict[str, Any]:
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "charrnn_tui": package_version(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,  # None: a CPU-only build of torch
        "cudnn": str(cudnn) if cudnn else None,
        "textual": package_version("textual"),
        "rich": package_version("rich"),
    }


def device_report(device: torch.device) -> dict[str, Any]:
    import torch

    from charrnn_tui.engine.model.device import cpu_has_native_bf16, describe_device

    report: dict[str, Any] = {"type": device.type, "name": describe_device(device), "count": None,
                              "capability": None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        report.update(count=torch.cuda.device_count(), capability=f"{props.major}.{props.minor}",
                      memory_total_bytes=int(total), memory_free_bytes=int(free), memory_of="GPU (cudaMemGetInfo)",
                      bf16_supported=bool(torch.cuda.is_bf16_supported()))
    else:
        ram, available = system_memory()
        report.update(memory_total_bytes=ram, memory_free_bytes=available,
                      memory_of="system RAM" + (", shared with the GPU" if device.type == "mps" else ""),
                      bf16_supported=device.type == "cpu" and cpu_has_native_bf16())
    return report


def system_memory() -> tuple[int | None, int | None]:
    """Bytes of RAM in all, and available (free plus what the kernel would give back), or None."""
    try:
        fields = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            fields[name] = int(rest.split()[0]) * 1024  # kB
        return fields.get("MemTotal"), fields.get("MemAvailable", fields.get("MemFree"))
    except (OSError, ValueError, IndexError):
        pass
    try:  # not Linux: total from sysconf (macOS has no available-pages name)
        page = os.sysconf("SC_PAGE_SIZE")
        total = page * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None, None
    try:
        available = page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):
        available = None
    return total, available


def precision_report(device: torch.device) -> dict[str, Any]:
    """The default precision (auto) on `device`, and what each part of the default run's model
    trains in then, with the backends set as a run sets them (TF32 on a GPU)."""
    from charrnn_tui.engine import config as cfg
    from charrnn_tui.engine.model.device import configure_backends, precision_by_part, use_bf16

    configure_backends(device, None)
    bf16 = use_bf16(device, "auto")
    kind = cfg.PRESETS[cfg.preset_for_device(device.type)]["model"]["kind"]
    parts = precision_by_part(device, bf16, kind=kind)
    return {"setting": "auto", "bf16": bf16, "parts": {str(k): str(v) for k, v in parts.items()}}


def cpu_report() -> dict[str, Any]:
    import torch

    from charrnn_tui.engine.model.device import cpu_has_native_bf16

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = None
    return {"torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "logical_cpus": os.cpu_count(), "usable_cpus": usable, "native_bf16": cpu_has_native_bf16()}


def nvml_report(device: torch.device) -> dict[str, Any]:
    """Whether NVML (nvidia-ml-py, which the status line's GPU utilisation needs) imports and starts."""
    from charrnn_tui.engine.run.gpu_monitor import GpuMonitor

    if importlib.util.find_spec("pynvml") is None:
        return {"installed": False, "working": False,
                "detail": "nvidia-ml-py is not installed (GPU utilisation in the status needs it: "
                          "pip install 'charrnn-tui[gpu]')"}
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            count = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:  # noqa: BLE001 - no driver library (a CPU box), or one NVML cannot use
        return {"installed": True, "working": False, "detail": f"NVML did not start: {first_line(e)}"}
    driver = driver.decode() if isinstance(driver, bytes) else str(driver)
    detail = f"driver {driver}, {plural(count, 'GPU')}"
    if device.type == "cuda":
        monitor = GpuMonitor(device)
        reading = monitor.read()
        if reading is not None:
            detail += (f"; this one {reading.utilisation}% busy, {reading.memory_used / 2**30:.1f} of "
                       f"{reading.memory_total / 2**30:.1f} GiB in use")
        elif monitor.missing:
            detail += f"; {monitor.missing}"
    return {"installed": True, "working": True, "detail": detail}


# ---- the probe -------------------------------------------------------------------------------------
def default_run(device_name: str) -> tuple[TrainConfig, Corpus]:
    """The config and corpus of `charrnn-tui train` with no arguments (`--device` aside), as the
    command line builds them: the preset for the device, fitted to the default corpus."""
    from charrnn_tui.engine.cli.arguments import Parser, add_train_arguments, configure, load_train_corpus

    parser = Parser(add_help=False)
    add_train_arguments(parser)
    args = parser.parse_args([] if device_name == "auto" else ["--device", device_name])
    corpus = load_train_corpus(args)
    config, _ = configure(args, corpus)
    return config, corpus


def probe(device_name: str = "auto", seconds: float = PROBE_SECONDS) -> dict[str, Any]:
    """Train the default run's model for about TRAIN_SHARE of `seconds`, then sample from it for the
    rest (set-up counts against them); at least one timed step and one timed chunk whatever the time.

    On a CPU a run times its thread counts, from its share of the cores down to one, and keeps the
    fastest (engine/run/threads.py): so does the probe, each count for an equal slice of the time, and
    samples on the count it keeps. torch's thread count is restored afterwards."""
    import torch

    from charrnn_tui.engine.model.device import configure_backends, fork_rng, memory_in_use, pick_device, use_bf16
    from charrnn_tui.engine.model.model import CharRNN
    from charrnn_tui.engine.model.step import TrainStep
    from charrnn_tui.engine.run.run_setup import make_optimizer
    from charrnn_tui.engine.run.threads import available_cores, candidates
    from charrnn_tui.engine.text.data import make_batcher, split_tokens
    from charrnn_tui.engine.text.vocab import build_vocab

    clock = time.perf_counter
    started = clock()
    config, corpus = default_run(device_name)
    vocab = build_vocab(corpus.text, config.tokens, config.min_freq)
    train_ids, _ = split_tokens(vocab.encode(corpus.text), config.val_fraction)
    device = pick_device(config.device)
    threads_before = torch.get_num_threads()
    configure_backends(device, config.threads)
    bf16 = use_bf16(device, config.precision)
    config.model.vocab_size = len(vocab)
    m = config.model
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # From one thread up: the first count timed takes the warm-up, which is quickest there
    counts = candidates(config.threads or available_cores())[::-1] if device.type == "cpu" else [None]
    with fork_rng(device):
        torch.manual_seed(config.seed)
        model = CharRNN(m).to(device)
        parameters = model.num_parameters()
        step = TrainStep(model, make_optimizer(model, config, device), device, bf16=bf16, grad_clip=config.grad_clip)
        batcher = make_batcher(config.sampler, train_ids.to(device), config.batch_size, config.seq_len, config.seed)
        trained = Training(config, step, batcher, device)
        try:
            rates: dict[int | None, float] = {}
            share = TRAIN_SHARE * max(0.0, seconds - (clock() - started)) / len(counts)
            for i, count in enumerate(counts):
                if count is not None:
                    torch.set_num_threads(count)
                rates[count] = trained.timed(share, untimed=WARMUP_STEPS if i == 0 else 0)
            best = max(rates, key=lambda n: (rates[n], n or 0))
            if best is not None:
                torch.set_num_threads(best)
            chars, sample_seconds = sample_speed(model, vocab, config, started + seconds)
        finally:
            torch.set_num_threads(threads_before)
    losses, timed_steps = trained.losses, trained.timed_steps
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else memory_in_use(device)
    del model, step, batcher, trained
    first, last = losses[:LOSS_STEPS], losses[-LOSS_STEPS:]
    return {
        "seconds": seconds,
        "corpus": corpus.name,
        "corpus_chars": len(corpus.text),
        "preset": config.preset,
        "model": f"{m.kind} {m.layers}x{m.hidden}, embedding {m.embedding or 'one-hot'}, dropout {m.dropout:g}",
        "parameters": parameters,
        "batch_size": config.batch_size,
        "seq_len": config.seq_len,
        "auto_batch_size": bool(getattr(config, "auto_batch_size", False)),
        "precision": "bf16" if bf16 else "fp32",
        "threads": best,  # None off a CPU
        "tokens_per_s_by_threads": {str(n): r for n, r in rates.items()} if best is not None else None,
        "train_steps": timed_steps,
        "train_tokens_per_s": rates[best],
        "loss_first": sum(first) / len(first) if first else None,
        "loss_last": sum(last) / len(last) if last else None,
        "sample_chars": chars,
        "sample_chars_per_s": chars / sample_seconds if sample_seconds > 0 else None,
        "peak_memory_bytes": peak,
        "peak_memory_of": "GPU (allocated by torch)" if device.type == "cuda" else "this process (peak RSS)",
        "elapsed_s": clock() - started,
    }


class Training:
    """The probe's training: the run's step on the run's batches, the state carried, the rate timed."""

    def __init__(self, config: TrainConfig, step: TrainStep, batcher: Batcher, device: torch.device):
        self.config, self.step, self.batcher, self.device = config, step, batcher, device
        self.state: State | None = None
        self.steps = self.timed_steps = 0
        self.losses: list[float] = []

    def one(self) -> int:
        batch = self.batcher.next()
        warmup = max(self.config.warmup_steps, 1)
        lr = self.config.lr * min(1.0, (self.steps + 1) / warmup)  # the schedule's linear warm-up, then flat
        self.state = self.step(batch, None if batch.reset else self.state, lr)
        self.steps += 1
        if self.step.log.full:  # it holds 4,096 steps: a fast GPU fills it in seconds
            self.losses += self.step.log.read()[0]
        return batch.predictions

    def timed(self, seconds: float, untimed: int) -> float:
        """Tokens/s over `seconds` (at least one step), after `untimed` steps."""
        from charrnn_tui.engine.model.device import synchronize

        for _ in range(untimed):
            self.one()
        synchronize(self.device)
        started = time.perf_counter()
        tokens = steps = 0
        while steps < 1 or time.perf_counter() - started < seconds:
            tokens += self.one()
            steps += 1
        synchronize(self.device)  # the device's queued steps counted in, not only their launches
        elapsed = time.perf_counter() - started
        self.timed_steps += steps
        self.losses += self.step.log.read()[0]
        return tokens / elapsed


def sample_speed(model: CharRNN, vocab: CharVocab | WordVocab, config: TrainConfig,
                 deadline: float) -> tuple[int, float]:
    """Characters generated at the run's sample settings until `deadline` (at least one chunk after
    the first, which holds the warm-up), and the seconds they took."""
    from charrnn_tui.engine.model.sampling import SampleSettings, TextGenerator

    settings = SampleSettings(length=10**9, temperature=config.temperature, top_k=config.top_k,
                              top_p=config.top_p, seed=config.seed)
    pieces = TextGenerator(model, vocab).stream("", settings)
    next(pieces)
    started = time.perf_counter()
    chars = 0
    for piece in pieces:  # each chunk ends in a copy to the host: the clock sees the device's work
        chars += len(piece)
        if time.perf_counter() >= deadline:
            break
    pieces.close()
    return chars, time.perf_counter() - started


def first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


# ---- output ----------------------------------------------------------------------------------------
def finite(value: Any) -> Any:
    """The report with every non-finite float (a loss gone NaN) as None: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(finite(report), allow_nan=False)


def gib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**30:,.1f} GiB"


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def number(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def or_none(x: Any) -> str:
    return "none" if x is None else str(x)


def by_threads(rates: dict[str, float] | None) -> str:
    return "-" if not rates else ", ".join(f"{n}: {number(r)}" for n, r in rates.items())


# Group -> (key, label, how to show the value); a key missing from the group is skipped, and so is
# one of OFF_HERE where it is None (a GPU's fields on a CPU, the CPU's thread counts on a GPU).
FIELDS: dict[str, list[tuple[str, str, Any]]] = {
    "versions": [("charrnn_tui", "charrnn-tui", or_none), ("python", "python", str), ("torch", "torch", str),
                 ("torch_cuda", "torch CUDA", or_none), ("cudnn", "cuDNN", or_none), ("textual", "textual", or_none),
                 ("rich", "rich", or_none)],
    "system": [("os", "os", str), ("machine", "machine", str)],
    "device": [("type", "device", str), ("name", "name", str), ("count", "GPUs", or_none),
               ("capability", "compute capability", or_none), ("memory_of", "memory of", str),
               ("memory_total_bytes", "memory total", gib), ("memory_free_bytes", "memory available", gib),
               ("bf16_supported", "bf16 supported", yes_no)],
    "precision": [("setting", "precision", str), ("bf16", "bf16 autocast", yes_no)],
    "cpu": [("torch_threads", "torch threads", str), ("interop_threads", "interop threads", str),
            ("logical_cpus", "logical CPUs", or_none), ("usable_cpus", "usable CPUs", or_none),
            ("native_bf16", "native bf16", yes_no)],
    "nvml": [("installed", "nvml installed", yes_no), ("working", "nvml working", yes_no), ("detail", "nvml", str)],
    "probe": [("corpus", "corpus", str), ("corpus_chars", "corpus chars", number), ("preset", "preset", str),
              ("model", "model", str), ("parameters", "parameters", number), ("batch_size", "batch size", str),
              ("seq_len", "seq len", str), ("auto_batch_size", "auto batch size", yes_no),
              ("precision", "precision", str), ("threads", "threads (the fastest)", or_none),
              ("tokens_per_s_by_threads", "tokens/s by threads", by_threads),
              ("train_steps", "train steps", number), ("train_tokens_per_s", "train tokens/s", number),
              ("loss_first", "loss first", lambda x: number(x, 3)), ("loss_last", "loss last", lambda x: number(x, 3)),
              ("sample_chars", "sample chars", number), ("sample_chars_per_s", "sample chars/s", number),
              ("peak_memory_of", "peak memory of", str), ("peak_memory_bytes", "peak memory", gib),
              ("elapsed_s", "probe took", lambda x: f"{x:.1f} s"), ("error", "probe failed", str)],
}


OFF_HERE = {"count", "capability", "threads", "tokens_per_s_by_threads"}


def render(report: dict[str, Any]) -> str:
    """One aligned line per field, under its group's name; every value made printable (a device's
    name comes from its driver, an error from anywhere)."""
    rows: list[tuple[str, str] | str] = []
    for group, fields in FIELDS.items():
        values = report.get(group)
        if group == "probe":
            seconds = values.get("seconds") if values else None
            rows.append(f"probe (the default run, {seconds:g} s)" if seconds is not None
                        else "probe (skipped: --seconds 0)")
        else:
            rows.append(group)
        if not values:
            continue
        for key, label, show in fields:
            if key in values and not (key in OFF_HERE and values[key] is None):
                rows.append((label, show(values[key])))
        if group == "precision":
            rows += [(f"  {part}", str(value)) for part, value in values.get("parts", {}).items()]
    width = max(len(r[0]) for r in rows if isinstance(r, tuple))
    lines = [printable_line(r) if isinstance(r, str) else f"  {printable_line(r[0]):<{width}}  {printable_line(r[1])}"
             for r in rows]
    return "\n".join(lines) + "\n"


def run_doctor(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`charrnn-tui doctor [--json] [--seconds N] [--device D]`: 0, or 1 where the probe failed."""
    out = out or sys.stdout
    if not args.json and args.seconds > 0:
        sys.stderr.write(f"doctor: probing the default run for {args.seconds:g} s...\n")
    report = collect(args.device, args.seconds)
    out.write(to_json(report) + "\n" if args.json else render(report))
    return 1 if report["probe"] is not None and "error" in report["probe"] else 0
