"""The checks of bench/gpu_acceptance.sh, one per process: `python bench/gpu_checks.py CHECK --tmp DIR
--result FILE [--quick] [--limit SECONDS]` writes one line, `PASS|FAIL|SKIP CHECK: detail`, to FILE
(its other output is the check's log). Run the shell script, not this: it sets up the imports, the
temporary folder, the time limits and the clean-up.

On CUDA each check runs the default GPU run (the preset `charrnn-tui train` picks there, fitted to
the default corpus: engine/cli/doctor.py's default_run). Without CUDA the checks that need it say SKIP
with the reason, after a dry run of their code on the CPU where one makes sense (tiny preset, a few
seconds; --quick: about a second), and the checks that hold on a CPU too (--batch-size auto, resume
equality) PASS or FAIL there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH, TESTS = ROOT / "bench", ROOT / "tests"

# In run order, with each one's time limit in seconds on a GPU (the shell script caps it by what is
# left of its budget). Expected times on one H100 are in docs/PERFORMANCE.md, "GPU acceptance".
CHECKS = {
    "cuda_tests": 200,
    "step_dtypes_syncs": 60,
    "step_speed": 60,
    "time_to_loss": 150,
    "sample_speed": 60,
    "batch_size_auto": 90,
    "resume_equality": 90,
    "oom_recovery": 60,
    "torchrun_ddp": 90,
}
CUDA_TEST_FILES = ("tests/test_cuda.py", "tests/test_precision.py", "tests/test_gpu_sampling.py",
                   "tests/test_gpu_resume.py")
QUICK_TEST_FILES = ("tests/test_cuda.py", "tests/test_gpu_sampling.py")  # all skip on a CPU: collection only
EVAL_TOKENS = 8192  # validation tokens of the short runs (their final evaluation is not what they check)
NO_CUDA = "no CUDA GPU (torch sees none)"


@dataclasses.dataclass(frozen=True)
class Plan:
    """How long each part runs: on a GPU, on a CPU (a dry run of a few seconds), or --quick."""

    cuda: bool
    quick: bool
    limit: float  # this check's time limit, seconds

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"

    @property
    def ttl_seconds(self) -> tuple[float, float]:  # time-to-loss budget, reference-loop time
        if self.cuda:
            return (10.0, 4.0) if self.quick else (60.0, 20.0)
        return (1.0, 0.5) if self.quick else (4.0, 1.0)

    @property
    def sync_steps(self) -> int:
        return 20 if self.cuda else 3

    @property
    def speed_seconds(self) -> float:
        return (1.0 if self.quick else 3.0) if self.cuda else (0.3 if self.quick else 2.0)

    @property
    def resume_steps(self) -> tuple[int, int]:  # the whole run, where the stopped one stops
        if self.cuda:
            return (16, 8) if self.quick else (40, 20)
        return (8, 4) if self.quick else (20, 10)


# ---- helpers --------------------------------------------------------------------------------------
def say(*parts) -> None:
    print(*parts, flush=True)


def default_config(plan: Plan):
    """The default GPU run's config (as `charrnn-tui train` builds it on CUDA), or on a CPU the tiny
    preset on the same corpus, one thread: no samples, no periodic checkpoints."""
    from charrnn_tui.engine import config as cfg

    if plan.cuda:
        from charrnn_tui.engine.cli.doctor import default_run

        config, _ = default_run("cuda")
    else:
        config = cfg.apply_preset(cfg.TrainConfig(corpus="shakespeare", device="cpu", threads=1), "tiny")
    return dataclasses.replace(config, sample_interval=0, checkpoint_interval=0)


def describe(config, bf16: bool | None = None) -> str:
    m = config.model
    precision = "" if bf16 is None else f", {'bf16' if bf16 else 'fp32'}"
    return (f"{config.preset} {m.kind} {m.layers}x{m.hidden} emb {m.embedding}, batch {config.batch_size} x seq "
            f"{config.seq_len}{precision}")


def set_up(config, runs_dir: Path, name: str):
    """A Trainer set up as a run starts (model, optimizer, batches on the device), ready for
    `step`; `close` it after."""
    from charrnn_tui.engine.run.trainer import Trainer

    trainer = Trainer(config, runs_dir=runs_dir, run_name=name)
    trainer.setup()
    trainer.built.copy_index.close()  # the corpus index's build thread would compete with the timed steps
    return trainer


def close(trainer) -> None:
    with contextlib.suppress(Exception):
        trainer.close()


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (children first), read from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_tree(process: subprocess.Popen) -> None:
    """End a process started by `run_process` and everything below it, by pid: SIGTERM first (torchrun
    passes it on to its workers), SIGKILL for what is left after 5 s."""
    below = descendants(process.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in [process.pid, *below] if sig == signal.SIGKILL else [process.pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            below = [p for p in below if Path(f"/proc/{p}").exists()]
            if not below:
                return


def run_process(command: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Run a command in a session of its own, its output to this check's log as well; (exit status, or
    None when it ran out of time, and its output). Stopped by pid, with what it started, whatever
    happens."""
    say("$", " ".join(command))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=max(1.0, timeout))
        status: int | None = process.returncode
    except subprocess.TimeoutExpired:
        stop_tree(process)
        output, _ = process.communicate()
        status = None
    finally:
        if process.poll() is None or descendants(process.pid):
            stop_tree(process)
    say(output)
    return status, output


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            events.append(json.loads(line))
    return events


def final_state(events: list[dict]) -> tuple[str | None, str]:
    changes = [e for e in events if e.get("event") == "StateChanged"]
    return (changes[-1]["state"], changes[-1].get("reason", "")) if changes else (None, "")


def bench_main(module: str, argv: list[str]) -> str:
    """A bench script's main() in this process (no second torch import), its stdout returned."""
    import importlib

    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    main = importlib.import_module(module).main
    out = io.StringIO()
    saved = sys.argv
    sys.argv = [f"bench/{module}.py", *argv]
    try:
        with contextlib.redirect_stdout(out):
            status = main()
    finally:
        sys.argv = saved
    say(out.getvalue())
    if status:
        raise RuntimeError(f"bench/{module}.py exited with status {status}")
    return out.getvalue()


# ---- 1. the CUDA tests ----------------------------------------------------------------------------
class Outcomes:
    """A pytest plugin counting outcomes, and why tests skipped."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self.skips: Counter[str] = Counter()
        self.failed: list[str] = []

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or report.outcome != "passed":
            if report.skipped:
                self.counts["skipped"] += 1
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                self.skips[reason.removeprefix("Skipped: ")] += 1
            elif report.failed:
                self.counts["failed" if report.when == "call" else "errors"] += 1
                self.failed.append(report.nodeid.split("::", 1)[-1])
            else:
                self.counts["passed"] += 1


def check_cuda_tests(plan: Plan, tmp: Path) -> tuple[str, str]:
    import pytest

    files = [f for f in (QUICK_TEST_FILES if plan.quick else CUDA_TEST_FILES) if (ROOT / f).exists()]
    missing = [Path(f).name for f in CUDA_TEST_FILES if not (ROOT / f).exists()]
    outcomes = Outcomes()
    os.chdir(ROOT)
    status = pytest.main(["-rs", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp / "pytest"), *files],
                         plugins=[outcomes])
    c = outcomes.counts
    counts = ", ".join(f"{c[k]} {k}" for k in ("passed", "failed", "errors", "skipped") if c[k])
    why = "; ".join(f"{n} {reason}" for reason, n in outcomes.skips.most_common(3))
    detail = f"{counts or 'nothing ran'} in {', '.join(Path(f).name for f in files)}"
    if missing:
        detail += f" ({', '.join(missing)} not there)"
    if why:
        detail += f"; skipped: {why}"
    if status not in (0, 5) or outcomes.failed:
        return "FAIL", f"{detail}; failed: {', '.join(outcomes.failed[:6])}"
    if not plan.cuda:
        return "SKIP", f"{NO_CUDA}: the CUDA tests skip here; {detail}"
    return "PASS", detail


# ---- 2. dtypes and hidden syncs in a training step ------------------------------------------------
class PartLog:
    """What each part of the model saw when it ran: autocast on or off, TF32 (cuBLAS, cuDNN), and
    the floating dtypes in and out."""

    def __init__(self, model):
        import torch

        from charrnn_tui.engine.model import device as device_module

        self.seen: dict[str, dict] = {}
        self.hooks = []
        for name in ("embedding", "rnn", "head"):
            module = getattr(model, name, None)
            if module is None:
                continue

            def before(module, args, name=name):
                tensors = [a for a in args if hasattr(a, "dtype")]
                entry = self.seen.setdefault(name, {"autocast": set(), "tf32": set(), "in": set(), "out": set()})
                entry["autocast"].add(bool(torch.is_autocast_enabled(tensors[0].device.type)))
                entry["tf32"].add(device_module._tf32_now())
                entry["in"].update(str(t.dtype) for t in tensors if t.is_floating_point())

            def after(module, args, output, name=name):
                from torch.utils._pytree import tree_leaves

                self.seen[name]["out"].update(str(t.dtype) for t in tree_leaves(output)
                                              if hasattr(t, "dtype") and t.is_floating_point())

            self.hooks += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()


def dtype_of(text: str) -> str:
    return "torch.bfloat16" if text.startswith("bf16") else "torch.float32"


# What else a step holds (`extra` below) -> the part of precision_by_part that names its precision.
EXTRA_PARTS = {"carried state": "carried state", "loss": "loss", "weights": "weights, gradients and optimizer",
               "gradients": "weights, gradients and optimizer", "optimizer state": "weights, gradients and optimizer"}


def compare_parts(train: PartLog, evaluation: PartLog, parts: dict[str, str], cuda: bool, extra: dict) -> list[str]:
    """Where what ran differs from what precision_by_part says."""
    problems = []

    def expect(what: str, seen, wanted) -> None:
        if seen != wanted:
            problems.append(f"{what}: saw {sorted(seen) if isinstance(seen, set) else seen}, expected {wanted}")

    rnn_text, head_text = parts["recurrent layers"], parts["head"]
    s = train.seen
    expect("embedding out", s["embedding"]["out"], {dtype_of(parts["embedding"])})
    expect("recurrent layers in", s["rnn"]["in"], {dtype_of(rnn_text)})
    expect("recurrent layers out", s["rnn"]["out"], {dtype_of(rnn_text)})
    rnn_autocast = rnn_text.startswith("bf16") and "outside autocast" not in rnn_text
    expect("recurrent layers under autocast", s["rnn"]["autocast"], {rnn_autocast})
    if cuda:
        expect("recurrent layers' cuDNN TF32", {t[1] for t in s["rnn"]["tf32"]}, {"TF32" in rnn_text})
    expect("head out", s["head"]["out"], {dtype_of(head_text)})
    expect("head under autocast", s["head"]["autocast"], {"autocast" in head_text})
    for name, seen in extra.items():
        expect(name, seen, {dtype_of(parts[EXTRA_PARTS[name]])})
    e = evaluation.seen
    for name in ("embedding", "rnn", "head"):
        expect(f"evaluation: {name} out", e[name]["out"], {dtype_of(parts["evaluation"])})
        expect(f"evaluation: {name} under autocast", e[name]["autocast"], {False})
    if cuda and "TF32" in parts["evaluation"]:
        expect("evaluation: TF32 (cuBLAS, cuDNN)", e["rnn"]["tf32"], {("TF32 off" not in parts["evaluation"],) * 2})
    return problems


class SyncLog:
    """The synchronizing calls torch.cuda.set_sync_debug_mode("warn") reports, with where in Python
    each came from (the innermost frame of this repository, and torch's frame below it)."""

    match = "synchroniz"  # in torch's warning: "called a synchronizing CUDA operation"

    def __init__(self):
        self.places: Counter[str] = Counter()

    def __enter__(self):
        import torch

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("always")
        warnings.showwarning = self._show
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        import torch

        torch.cuda.set_sync_debug_mode("default")
        self._catch.__exit__(*exc)

    def _show(self, message, category, filename, lineno, file=None, line=None) -> None:
        if self.match not in str(message):
            return
        stack = [f for f in traceback.extract_stack()[:-1] if Path(f.filename).name != "warnings.py"]
        ours = [f for f in stack if str(ROOT) in f.filename and "gpu_checks.py" not in f.filename]
        place = ours[-1] if ours else stack[-1]
        where = f"{Path(place.filename).name}:{place.lineno} {place.name}"
        if ours and stack[-1] is not place:
            where += f" <- {Path(stack[-1].filename).name}:{stack[-1].lineno}"
        self.places[where] += 1


def check_step_dtypes_syncs(plan: Plan, tmp: Path) -> tuple[str, str]:
    import torch

    from charrnn_tui.engine.model.device import precision_by_part
    from charrnn_tui.engine.model.evaluate import evaluate

    config = default_config(plan)
    trainer = set_up(config, tmp / "runs", "syncs")
    try:
        device, model = trainer.device, trainer.built.model
        parts = precision_by_part(device, trainer.built.bf16, config.model.kind)
        train_log = PartLog(model)
        try:
            for _ in range(3):  # cuDNN's autotuning, the allocator and the optimizer's state at the first steps
                trainer.step()
        finally:
            train_log.close()
        state = trainer.trained.train_state
        x = trainer.built.batcher.next().x
        loss, _ = trainer.built.train_step.loss(x, x, None)
        extra = {
            "carried state": {str(t.dtype) for t in (state if isinstance(state, tuple) else (state,))},
            "loss": {str(loss.dtype)},
            "weights": {str(p.dtype) for p in model.parameters()},
            "gradients": {str(p.grad.dtype) for p in model.parameters() if p.grad is not None},
            "optimizer state": {str(v.dtype) for s in trainer.built.optimizer.state.values() for k, v in s.items()
                                if torch.is_tensor(v) and v.is_floating_point() and k != "step"},
        }
        del loss
        eval_log = PartLog(model)
        try:
            evaluate(model, trainer.built.val_ids[:4096])
        finally:
            eval_log.close()
        problems = compare_parts(train_log, eval_log, parts, plan.cuda, extra)
        seen = (f"embedding {short(train_log.seen['embedding']['out'])}, recurrent layers "
                f"{short(train_log.seen['rnn']['out'])} (autocast {onoff(train_log.seen['rnn']['autocast'])}"
                + (f", TF32 {onoff({t[1] for t in train_log.seen['rnn']['tf32']})}" if plan.cuda else "")
                + f"), head {short(train_log.seen['head']['out'])}, state/loss/weights/grads/AdamW "
                  f"{short(set().union(*extra.values()))}, evaluation {short(eval_log.seen['rnn']['out'])}"
                + (f" (TF32 {onoff({t[1] for t in eval_log.seen['rnn']['tf32']})})" if plan.cuda else ""))
        say("precision_by_part:", json.dumps(parts, indent=1))
        say("seen in training:", train_log.seen, extra)
        say("seen in evaluation:", eval_log.seen)
        dtypes = f"{seen}: " + ("as precision_by_part says" if not problems else "NOT as precision_by_part says: "
                                + "; ".join(problems))
        if not plan.cuda:
            status = "FAIL" if problems else "SKIP"
            dry = f"CPU dry run ({describe(config, trainer.built.bf16)})"
            return status, f"{NO_CUDA}: sync debug mode needs one; {dry}: {dtypes}"

        torch.cuda.synchronize()
        with SyncLog() as syncs:
            for _ in range(plan.sync_steps):
                trainer.step()
        torch.cuda.synchronize()
        with SyncLog() as planted:  # the detector itself: a planted .item() must show
            trainer.built.train_step.log.values[0, 0].item()
        first_error = ""
        torch.cuda.set_sync_debug_mode("error")
        try:
            trainer.step()
        except RuntimeError as e:
            first_error = str(e).splitlines()[0]
            traceback.print_exc()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        trainer.built.train_step.log.read()
        say("syncs:", dict(syncs.places), "planted:", dict(planted.places), "error mode:", first_error or "none")
        if not planted.places:
            return "FAIL", f"{dtypes}; the sync detector missed a planted .item(): its figures mean nothing"
        total = sum(syncs.places.values())
        sync_text = (f"no sync in {plan.sync_steps} steps under sync debug mode warn, none in 1 under error "
                     f"(a planted .item() was caught)" if not total and not first_error else
                     f"{total} syncs in {plan.sync_steps} steps: "
                     + ", ".join(f"{n}x {where}" for where, n in syncs.places.most_common(5))
                     + (f"; error mode: {first_error}" if first_error else ""))
        ok = not problems and not total and not first_error
        return ("PASS" if ok else "FAIL"), f"{describe(config, trainer.built.bf16)}: {dtypes}; {sync_text}"
    finally:
        close(trainer)


def short(dtypes: set[str]) -> str:
    names = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}
    return "+".join(sorted(names.get(d, d) for d in dtypes)) or "none"


def onoff(values: set[bool]) -> str:
    return "+".join(sorted({"on" if v else "off" for v in values})) or "?"


# ---- 3. ms/step and peak memory ---------------------------------------------------------------------
def check_step_speed(plan: Plan, tmp: Path) -> tuple[str, str]:
    import torch

    from charrnn_tui.engine.model.device import memory_in_use, synchronize

    config = default_config(plan)
    cuda = plan.cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = set_up(config, tmp / "runs", "speed")
    try:
        device = trainer.device
        clock = time.perf_counter
        t0 = clock()
        warm = 5 if cuda else 2
        for _ in range(warm):
            trainer.step()
        synchronize(device)
        first_steps = (clock() - t0) / warm
        t0 = clock()
        for _ in range(3):
            trainer.step()
        synchronize(device)
        estimate = (clock() - t0) / 3
        steps = int(min(1000, max(10 if cuda else 3, plan.speed_seconds / max(estimate, 1e-6))))
        if cuda:
            warm_peak = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        trainer.built.train_step.log.read()
        t0 = clock()
        for _ in range(steps):
            trainer.step()
            if trainer.built.train_step.log.full:
                trainer.built.train_step.log.read()
        synchronize(device)
        seconds = clock() - t0
        losses, _ = trainer.built.train_step.log.read()
        tokens = config.batch_size * config.seq_len
        ms = 1000 * seconds / steps
        rate = f"{ms:.1f} ms/step ({tokens * steps / seconds:,.0f} tokens/s) over {steps} steps"
        if cuda:
            memory = (f"peak {mib(torch.cuda.max_memory_allocated())} allocated in a step "
                      f"({mib(warm_peak)} with set-up and cuDNN's autotuning), {mib(torch.cuda.memory_reserved())} "
                      f"reserved, of {mib(torch.cuda.get_device_properties(device).total_memory)}")
        else:
            memory = f"peak RSS {mib(memory_in_use(device) or 0)}"
        detail = (f"{describe(config, trainer.built.bf16)}: {rate}; first {warm} steps {1000 * first_steps:.0f} ms "
                  f"each; {memory}")
        if not losses or not all(math.isfinite(v) for v in losses):
            return "FAIL", f"{detail}; losses not finite"
        if not cuda:
            return "SKIP", f"{NO_CUDA}: CPU dry run: {detail}"
        return "PASS", detail
    finally:
        close(trainer)


# ---- 4. time to loss, beside the plain nn.LSTM loop ---------------------------------------------------
def check_time_to_loss(plan: Plan, tmp: Path) -> tuple[str, str]:
    seconds, reference = plan.ttl_seconds
    argv = ["--json", "--seconds", f"{seconds:g}", "--reference-seconds", f"{reference:g}", "--device", plan.device]
    if not plan.cuda:
        argv += ["--preset", "tiny", "--set", "threads=1"]
    result = json.loads(bench_main("time_to_loss", argv).strip().splitlines()[-1])
    curve = result["curve"]
    points = ", ".join(f"{p['val_nats']:.4f} at {p['seconds']:g} s (step {p['step']})" for p in curve)
    ratio = result["ratio_to_reference"]
    detail = (f"{result['preset']} {result['model']}, batch {result['batch']} x seq {result['seq_len']}, "
              f"{result['precision']}: validation {points}; engine {result['engine_chars_per_s']:,.0f} chars/s, "
              f"plain nn.{result['model'].split()[0].upper()} loop {result['reference_chars_per_s']:,.0f} "
              f"(ratio {ratio:.2f})")
    values = [p["val_nats"] for p in curve]
    if not values or not all(math.isfinite(v) for v in values):
        return "FAIL", f"{detail}; a validation loss is missing or not finite"
    if not plan.cuda:
        return "SKIP", f"{NO_CUDA}: CPU dry run ({seconds:g} s): {detail}"
    wanted = [p for p in (15, 30, 60) if p <= seconds]
    got = [p["seconds"] for p in curve]
    if not plan.quick and len(got) < len(wanted):
        return "FAIL", f"{detail}; expected validations at {wanted} s"
    notes = []
    best = min(values)
    if values[-1] > best + 0.01:
        notes.append(f"overfitting: the last validation is {values[-1] - best:.3f} above the best")
    if ratio < 0.8:
        return "FAIL", f"{detail}; the engine trains at under 0.8x the plain loop's speed"
    return "PASS", detail + (f"; {'; '.join(notes)}" if notes else "")


# ---- 5. sampling chars/s --------------------------------------------------------------------------
def check_sample_speed(plan: Plan, tmp: Path) -> tuple[str, str]:
    import re

    if plan.cuda:
        m = default_config(plan).model
        argv = ["--kind", m.kind, "--layers", str(m.layers), "--hidden", str(m.hidden), "--device", plan.device]
        if plan.quick:
            argv += ["--chars", "1000", "--repeats", "1"]
    else:
        argv = ["--layers", "1", "--hidden", "64" if plan.quick else "128", "--chars", "200" if plan.quick else "1000",
                "--repeats", "1", "--device", "cpu"]
    out = bench_main("sample_speed", argv)
    rates = [float(r.replace(",", "")) for r in re.findall(r"([\d,]+) chars/s", out)]
    if len(rates) < 2:
        return "FAIL", f"could not read chars/s from bench/sample_speed.py: {out.strip()[-200:]}"
    engine, baseline = rates[0], rates[1]
    header = out.strip().splitlines()[0]
    detail = (f"{header}: engine generator {engine:,.0f} chars/s, nn.LSTM call per character + .item() "
              f"{baseline:,.0f} ({engine / baseline:.1f}x)")
    if not plan.cuda:
        return "SKIP", f"{NO_CUDA}: CPU dry run: {detail}"
    if engine < baseline:
        return "FAIL", f"{detail}; the engine's generator is slower than the per-call loop"
    return "PASS", detail


# ---- 6. --batch-size auto -------------------------------------------------------------------------
def check_batch_size_auto(plan: Plan, tmp: Path) -> tuple[str, str]:
    from charrnn_tui.engine.cli.main import main as engine_main

    runs, jsonl = tmp / "runs", tmp / "auto.jsonl"
    steps = 5 if plan.cuda else 3
    argv = ["train", "shakespeare", "--batch-size", "auto", "--device", plan.device, "--max-steps", str(steps),
            "--headless", "--runs-dir", str(runs), "--name", "auto", "--sample-interval", "0",
            "--checkpoint-interval", "0", "--eval-tokens", str(EVAL_TOKENS), "--jsonl", str(jsonl)]
    if not plan.cuda:
        argv += ["--preset", "tiny", "--threads", "1"]
    say("$ python -m charrnn_tui.engine", " ".join(argv))
    t0 = time.perf_counter()
    status = engine_main(argv)
    seconds = time.perf_counter() - t0
    events = read_jsonl(jsonl)
    notices = [e["message"] for e in events if e.get("event") == "Notice" and "batch-size auto" in e["message"]]
    started = next((e["info"] for e in events if e.get("event") == "Started"), None)
    state, reason = final_state(events)
    trained = max((e["step"] for e in events if e.get("event") == "Progress"), default=0)
    if status != 0 or started is None or state != "finished":
        return "FAIL", f"exit status {status}, state {state} {reason}; {notices[0] if notices else 'no notice'}"
    batch, seq = started["batch_size"], started["seq_len"]
    per_epoch = started["train_tokens"] / (batch * seq)
    detail = (f"picked batch-size {batch} (x seq {seq}: {per_epoch:,.1f} steps an epoch of {started['train_tokens']:,} "
              f"tokens) for {started['model_kind']} {started['layers']}x{started['hidden']} on "
              f"{started['device_name']}; trained {trained} steps and finished, {seconds:.1f} s with set-up and "
              f"probe; notice: {notices[0] if notices else 'none'}")
    if not notices or trained != steps:
        return "FAIL", detail
    from charrnn_tui.engine import config as cfg

    if per_epoch < cfg.EPOCH_STEPS - 1 and batch * seq > cfg.MIN_STEP_TOKENS:  # the cap of an epoch's steps
        return "FAIL", f"{detail}; an epoch has under {cfg.EPOCH_STEPS} steps"
    return "PASS", detail + ("" if plan.cuda else " (a CPU keeps the preset's batch)")


# ---- 7. resume equality ---------------------------------------------------------------------------
def check_resume_equality(plan: Plan, tmp: Path) -> tuple[str, str]:
    import torch

    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from helpers import step_losses

    from charrnn_tui.engine.runs import LATEST

    total, stop = plan.resume_steps
    config = dataclasses.replace(default_config(plan), max_steps=total, report_interval=1e-9, eval_interval=10**6,
                                 fit_eval_interval=False, eval_tokens=EVAL_TOKENS)
    runs = tmp / "runs"
    # The whole run saves where the other stops: a save re-seeds cuDNN's dropout state (engine/model/device.py
    # reseed_cudnn_dropout), so both draw the same masks after it.
    whole = step_losses(save_at=stop, config=config, runs_dir=runs, run_name="whole")
    step_losses(stop_at=stop, config=config, runs_dir=runs, run_name="part")
    resumed = step_losses(resume=runs / "part" / LATEST, runs_dir=runs)
    wanted = list(range(stop + 1, total + 1))
    if sorted(resumed) != wanted or any(s not in whole for s in wanted):
        return "FAIL", f"resumed steps {min(resumed, default=None)}-{max(resumed, default=None)}, expected " \
                       f"{stop + 1}-{total}; the whole run has {len(whole)} steps"
    a = torch.tensor([resumed[s] for s in wanted], dtype=torch.float64)
    b = torch.tensor([whole[s] for s in wanted], dtype=torch.float64)
    diff = (a - b).abs().max().item()
    same = "bitwise equal" if diff == 0 else f"max |difference| {diff:.2e}"
    detail = (f"{describe(config)} (dropout {config.model.dropout:g}): steps {stop + 1}-{total} after a stop at "
              f"{stop} and a resume: {same} to the uninterrupted run's (loss {b[0]:.4f} -> {b[-1]:.4f})")
    try:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    except AssertionError:
        return "FAIL", detail + " (tolerance rtol 1e-5, atol 1e-6)"
    return "PASS", detail


# ---- 8. out of memory, and the same process trains on ------------------------------------------------
def check_oom_recovery(plan: Plan, tmp: Path) -> tuple[str, str]:
    if not plan.cuda:
        return "SKIP", f"{NO_CUDA}: the cap is torch.cuda.set_per_process_memory_fraction"
    import gc

    import torch

    from charrnn_tui.engine.checkpoint import load_checkpoint
    from charrnn_tui.engine.errors import CharRNNError
    from charrnn_tui.engine.events import Progress
    from charrnn_tui.engine.run.trainer import Trainer
    from charrnn_tui.engine.runs import LATEST

    cap_after = 3  # steps trained before the cap: the run has a whole step to save
    config = dataclasses.replace(default_config(plan), max_steps=20, report_interval=1e-9, eval_interval=10**6,
                                 fit_eval_interval=False, eval_tokens=EVAL_TOKENS)
    total = torch.cuda.get_device_properties(0).total_memory
    capped: dict[str, int] = {}

    def on_event(event) -> None:
        if isinstance(event, Progress) and event.step >= cap_after and not capped:
            # Between steps: give back the cache, then allow only what is held plus 64 MiB, far less
            # than the next step's activations.
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            capped["reserved"] = torch.cuda.memory_reserved()
            torch.cuda.set_per_process_memory_fraction(min(1.0, (capped["reserved"] + (64 << 20)) / total))

    runs = tmp / "runs"
    trainer = Trainer(config, on_event=on_event, runs_dir=runs, run_name="oom")
    error = None
    try:
        trainer.run()
    except CharRNNError as e:
        error = str(e)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    failed_at, state = trainer.trained.step, trainer.state
    del trainer
    gc.collect()
    torch.cuda.empty_cache()
    held = torch.cuda.memory_allocated()
    if error is None:
        return "FAIL", f"no out-of-memory error under a cap of {mib(capped.get('reserved', 0))} + 64 MiB " \
                       f"(state {state})"
    path = runs / "oom" / LATEST
    saved = load_checkpoint(path)["step"] if path.exists() else None
    detail = (f"{describe(config)}: capped after step {cap_after} at {mib(capped['reserved'])} + 64 MiB; error: "
              f"{error!r}; checkpoint at step {saved}; {mib(held)} still allocated after")
    if state != "error" or saved != failed_at or "out of memory" not in error or f"saved at step {saved}" not in error:
        return "FAIL", detail
    smaller = max(1, config.batch_size // 2)
    after = Trainer(resume=path, overrides={"batch_size": smaller, "max_steps": 5}, runs_dir=runs)
    after.run()
    detail += f"; resumed in the same process at batch-size {smaller}: {after.state} at step {after.trained.step}"
    if after.state != "finished" or after.trained.step != saved + 5:
        return "FAIL", detail
    return "PASS", detail


# ---- 9. torchrun, one process, NCCL, DDP forced ------------------------------------------------------
FORCE_DDP = "CHARRNN_FORCE_DDP"


def check_torchrun_ddp(plan: Plan, tmp: Path) -> tuple[str, str]:
    runs, jsonl = tmp / "runs", tmp / "ddp.jsonl"
    steps = 20 if plan.cuda else 3
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               "-m", "charrnn_tui.engine", "train", "shakespeare", "--device", plan.device, "--max-steps", str(steps),
               "--headless", "--runs-dir", str(runs), "--name", "ddp", "--sample-interval", "0",
               "--checkpoint-interval", "0", "--eval-tokens", str(EVAL_TOKENS), "--jsonl", str(jsonl)]
    if not plan.cuda:
        command += ["--preset", "tiny", "--threads", "1"]
    env = {**os.environ, FORCE_DDP: "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    status, output = run_process(command, plan.limit - 10, env)
    seconds = time.perf_counter() - t0
    events = read_jsonl(jsonl)
    started = next((e["info"] for e in events if e.get("event") == "Started"), None)
    state, reason = final_state(events)
    losses = [v for e in events if e.get("event") == "Progress" for v in e["losses"]]
    backend = "nccl" if plan.cuda else "gloo"
    if status is None:
        outcome = f"timed out after {seconds:.0f} s (state {state})"
    elif status != 0 or state != "finished" or started is None:
        tail = " | ".join(output.strip().splitlines()[-3:])
        outcome = f"exit status {status}, state {state} {reason}: {tail[-300:]}"
    else:
        outcome = None
    ddp = started is not None and f"processes ({backend})" in started["device_name"]
    dry = "" if plan.cuda else f"{NO_CUDA}: NCCL needs one; gloo dry run: "
    if outcome is not None:
        return "FAIL", f"{dry}torchrun, 1 process, {FORCE_DDP}=1: {outcome}"
    trained = (f"trained {len(losses)} steps (loss {losses[0]:.3f} -> {losses[-1]:.3f}) and finished in "
               f"{seconds:.0f} s" if losses else "finished")
    if ddp:
        detail = f"torchrun, 1 process, {FORCE_DDP}=1: {started['device_name']}, through DDP; {trained}"
        return ("PASS" if plan.cuda else "SKIP"), dry + detail
    detail = (f"torchrun, 1 process, {FORCE_DDP}=1: {trained}, but NOT through DDP ({started['device_name']}, "
              f"world size {started['world_size']}): engine/run/distributed.py does not honour {FORCE_DDP}")
    return ("FAIL" if plan.cuda else "SKIP"), dry + detail


# ---- the environment line ---------------------------------------------------------------------------
def environment() -> str:
    import platform

    import torch

    parts = [f"python {platform.python_version()} ({sys.executable})", f"torch {torch.__version__}"]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        parts.append(f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, {props.name} "
                     f"({mib(props.total_memory)}, capability {props.major}.{props.minor}), "
                     f"{torch.cuda.device_count()} GPU(s)")
    else:
        parts.append(f"{NO_CUDA}: CUDA-only checks SKIP after a CPU dry run")
    import importlib.util

    missing = [m for m in ("pytest", "platformdirs", "unidecode") if importlib.util.find_spec(m) is None]
    import charrnn_tui.engine

    parts.append(f"charrnn_tui.engine from {Path(charrnn_tui.engine.__file__).parent}")
    if missing:
        parts.append(f"MISSING: {', '.join(missing)} (carry wheels in .whl/: the script installs them)")
    return "; ".join(parts)


CHECK_FUNCTIONS: dict[str, Callable[[Plan, Path], tuple[str, str]]] = {
    "cuda_tests": check_cuda_tests,
    "step_dtypes_syncs": check_step_dtypes_syncs,
    "step_speed": check_step_speed,
    "time_to_loss": check_time_to_loss,
    "sample_speed": check_sample_speed,
    "batch_size_auto": check_batch_size_auto,
    "resume_equality": check_resume_equality,
    "oom_recovery": check_oom_recovery,
    "torchrun_ddp": check_torchrun_ddp,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=[*CHECKS, "env", "list"])
    parser.add_argument("--tmp", type=Path, help="a folder of its own for this check's runs (removed by the caller)")
    parser.add_argument("--result", type=Path, help="where to write the result line (default: stdout)")
    parser.add_argument("--quick", action="store_true", help="about a second per timed part")
    parser.add_argument("--limit", type=float, default=None, help="this check's time limit, seconds")
    args = parser.parse_args()
    if args.check == "list":
        print("\n".join(f"{name} {limit}" for name, limit in CHECKS.items()))
        return 0
    if args.check == "env":
        print(environment())
        return 0
    import torch

    plan = Plan(cuda=torch.cuda.is_available(), quick=args.quick, limit=args.limit or CHECKS[args.check])
    tmp = args.tmp or Path(os.environ.get("TMPDIR", "/tmp"))
    tmp.mkdir(parents=True, exist_ok=True)
    say(f"== {args.check} on {plan.device}{' (quick)' if plan.quick else ''}, limit {plan.limit:g} s")
    t0 = time.perf_counter()
    try:
        status, detail = CHECK_FUNCTIONS[args.check](plan, tmp)
    except BaseException as e:  # noqa: BLE001 - any failure is the check's result
        traceback.print_exc()
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        status, detail = "FAIL", f"{type(e).__name__}: {first[:300]}"
    line = f"{status} {args.check}: {detail} [{time.perf_counter() - t0:.0f} s]"
    say(line)
    if args.result:
        args.result.write_text(line + "\n")
    else:
        print(line)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # not waiting on threads a failed check may have left (a novelty index, NCCL's)


if __name__ == "__main__":
    sys.exit(main())
