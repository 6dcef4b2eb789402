"""The progress reports of a run: the losses of the steps since the last one, read back from the
device in one host sync (the step log stays on the device in between, engine/model/step.py), the
speed, the ETA, the machine's figures, as one Progress event; and the stop of a run whose loss or
gradient norm went NaN/inf. The loop decides when (engine/run/trainer.py)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from charrnn_tui.engine.events import Notice, Progress
from charrnn_tui.engine.model.device import memory_in_use
from charrnn_tui.engine.run import schedule
from charrnn_tui.engine.run.gpu_monitor import GpuMonitor
from charrnn_tui.engine.run.metrics import MetricsLog
from charrnn_tui.engine.run.process_usage import ProcessUsage
from charrnn_tui.engine.run.run import EventSink, Run, Trained, learning_rate, limit_fraction


class Reports:
    """The reports of the leader's run, from set-up on: what they read across reports (the speed's
    clock, the losses since the last evaluation, the GPU monitor) and this session's start, which the
    ETA counts from (`start`, as the loop begins)."""

    def __init__(self, run: Run, metrics: MetricsLog, emit: EventSink, gpu_monitor: GpuMonitor | None,
                 balance_threads: Callable[[float | None], None] | None):
        self.run, self.metrics, self.emit = run, metrics, emit
        self.gpu_monitor = gpu_monitor
        self.process_usage = ProcessUsage()  # read at each report
        # Called at each report with the speed since the last one, on the training thread
        # (engine/run/threads.py).
        self.balance_threads = balance_threads
        self.train_sum, self.train_count = 0.0, 0  # training losses since the last evaluation
        self.last_eval_seconds = 0.0  # how long the latest evaluation took
        self.overhead_seconds = 0.0  # this session's evaluations, samples and saves: the ETA counts them
        self.session_start_seconds = 0.0
        self.session_start_fraction: float | None = None
        self.first_unreported_step = 1
        self.tokens_since_report = 0  # counted by the loop, step by step
        self.last_report = time.perf_counter()
        self.seconds_at_report = 0.0

    def start(self, trained: Trained) -> None:
        """This session of training begins: the speed and the ETA count from here."""
        self.session_start_seconds = trained.train_seconds
        self.session_start_fraction = limit_fraction(self.run, trained)
        self.overhead_seconds = 0.0
        self.first_unreported_step = trained.step + 1
        self.tokens_since_report = 0
        self.last_report = time.perf_counter()
        self.seconds_at_report = trained.train_seconds

    def report(self, trained: Trained) -> str | None:
        """Send the losses since the last report; what went NaN/inf, and at which step, when one
        did (the run must stop: the losses before it are kept, no Progress is sent), else None."""
        run = self.run
        if not run.train_step.log.count:
            return None
        started = time.perf_counter()
        run.peers.add_up_losses(run.train_step.log)  # every rank's share of each step's loss, added up
        losses, grad_norms = run.train_step.log.read()  # the one host sync per report
        now = time.perf_counter()
        trained.train_seconds += now - started  # waiting here is the device finishing the steps
        elapsed = max(trained.train_seconds - self.seconds_at_report, 1e-9)
        self.seconds_at_report = trained.train_seconds
        self.last_report = now
        first = self.first_unreported_step
        self.first_unreported_step = trained.step + 1
        bad = next((i for i, (v, g) in enumerate(zip(losses, grad_norms, strict=True))
                    if not (math.isfinite(v) and math.isfinite(g))), None)
        if bad is not None:
            trained.losses.extend(losses[:bad])
            what = (f"loss became {losses[bad]}" if not math.isfinite(losses[bad])
                    else f"gradient norm became {grad_norms[bad]}")
            return f"{what} at step {first + bad}"
        trained.losses.extend(losses)
        self.train_sum += sum(losses)
        self.train_count += len(losses)
        lr = learning_rate(run, trained)
        self.metrics.train(trained.step, trained.train_seconds, trained.tokens_seen, lr, sum(losses) / len(losses),
                           sum(grad_norms) / len(grad_norms))
        tokens_per_s = self.tokens_since_report / elapsed
        if self.balance_threads is not None:  # on a CPU it times thread counts by these speeds
            self.balance_threads(tokens_per_s if speed_tells_threads(run) else None)
        self.tokens_since_report = 0
        usage = self.process_usage.read()
        self.emit(Progress(
            step=trained.step, first_step=first, losses=tuple(losses), epoch=run.batcher.epoch_float,
            tokens_per_s=tokens_per_s, lr=lr, train_seconds=trained.train_seconds,
            eta_seconds=self.eta(trained), epoch_eta_seconds=epoch_eta(run, tokens_per_s),
            memory_bytes=memory_in_use(run.device), **self._gpu_fields(),
            cpu_percent=usage.cpu_percent, rss_bytes=usage.rss_bytes,
        ))
        return None

    def mean_train_loss(self) -> float | None:
        """The mean training loss since the last evaluation; None without a step reported."""
        return self.train_sum / self.train_count if self.train_count else None

    def evaluated(self, seconds: float) -> None:
        """An evaluation took `seconds` (the ETA counts the final one): the training losses of the
        next one count from here."""
        self.last_eval_seconds = seconds
        self.train_sum, self.train_count = 0.0, 0

    def eta(self, trained: Trained) -> float | None:
        """Seconds of wall-clock time to the stop condition: the training left, at this session's
        pace, plus evaluations, samples and saves in the share they took so far, plus the final
        evaluation."""
        fraction, start = limit_fraction(self.run, trained), self.session_start_fraction
        if fraction is None or start is None:  # no stop condition (none is added during a session)
            return None
        done = fraction - start
        spent = trained.train_seconds - self.session_start_seconds
        if done <= 0:
            return None
        return schedule.wall_eta(spent * (1 - fraction) / done, spent, self.overhead_seconds, self.last_eval_seconds)

    def _gpu_fields(self) -> dict[str, int]:
        reading = self.gpu_monitor.read() if self.gpu_monitor is not None else None
        if reading is None:
            if self.gpu_monitor is not None and self.gpu_monitor.missing:
                self.emit(Notice(self.gpu_monitor.missing))  # once: then there is nothing to say
                self.gpu_monitor = None
            return {}
        return {"gpu_utilisation": reading.utilisation, "gpu_memory_used": reading.memory_used,
                "gpu_memory_total": reading.memory_total}


def epoch_eta(run: Run, tokens_per_s: float) -> float | None:
    """Seconds to the end of this epoch at this speed."""
    if tokens_per_s <= 0:
        return None
    left = 1.0 - (run.batcher.epoch_float % 1.0)
    return left * len(run.train_ids) / tokens_per_s


def speed_tells_threads(run: Run) -> bool:
    """Whether this report's speed says how fast its thread count is: on a CPU, and not while
    the novelty index is built on every core (it would slow the counts timed first most)."""
    index = run.copy_index
    return run.device.type == "cpu" and not (index is not None and index.building)
