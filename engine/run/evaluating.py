"""An evaluation while the run trains: the validation loss, the best so far and the count since it,
the histories (thinned), the schedule's answer to it, the overfitting verdict, and whether
--early-stop ends the run. A function of the Run and its Trained; the Trainer saves best.pt and
stops."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.events import Evaluated, Notice, Validating
from charrnn_tui.engine.history import thin_evaluations
from charrnn_tui.engine.model.evaluate import evaluate
from charrnn_tui.engine.overfitting import read_history
from charrnn_tui.engine.run.control import TYPING_CHUNK
from charrnn_tui.engine.run.metrics import MetricsLog
from charrnn_tui.engine.run.run import EventSink, Run, Trained, learning_rate, position

VALIDATING_INTERVAL = 0.5  # seconds between Validating events during an evaluation


@dataclass(frozen=True)
class Evaluation:
    """What an evaluation came to, for the loop."""

    is_best: bool  # best.pt is to be written
    seconds: float  # the evaluation itself (the ETA counts the final one)
    early_stop: str | None  # why --early-stop ends the run now, or None


def evaluate_run(run: Run, trained: Trained, metrics: MetricsLog, mean_train_loss: float | None,
                 between: Callable[[], None] | None, emit: EventSink) -> Evaluation:
    """Evaluate on the validation text and record it in `trained` and the metrics log, emitting
    Validating as it goes and Evaluated at the end. `mean_train_loss`: of the steps since the last
    evaluation (None without any); `between`: called between short chunks while someone types."""
    t0 = time.perf_counter()
    # The same figure as `charrnn-tui eval RUN`; in short chunks while someone types (the same
    # result: the chunk size does not change it), answering keystrokes between them.
    shown = [t0]

    def progress(done: float) -> None:  # the first call, then about twice a second
        now = time.perf_counter()
        if done == 0.0 or now - shown[0] >= VALIDATING_INTERVAL:
            shown[0] = now
            emit(Validating(trained.step, done, len(run.val_ids)))

    result = evaluate(run.model, run.val_ids, chunk=TYPING_CHUNK if between is not None else None,
                      between=between, progress=progress)
    seconds = time.perf_counter() - t0
    is_best = result.nats < trained.best_val
    trained.best_val = min(trained.best_val, result.nats)
    if is_best:
        trained.evals_since_best, trained.first_after_best = 0, None
    else:
        if not trained.evals_since_best:
            trained.first_after_best = trained.step  # thinning may drop it from val_history
        trained.evals_since_best += 1
    train_at_eval = trained.train_at_eval
    if mean_train_loss is not None:
        train_at_eval = [*train_at_eval, (trained.step, mean_train_loss)]
    trained.val_history, trained.train_at_eval = thin_evaluations(
        [*trained.val_history, (trained.step, result.nats)], train_at_eval)
    change = run.schedule.after_evaluation(run.config, position(run, trained), result.nats)
    since_change = run.schedule.since_change
    verdict = read_history(trained.val_history, dict(trained.train_at_eval), since_best=trained.evals_since_best,
                           first_after_best=trained.first_after_best, since_change=since_change,
                           learning=learning_rate(run, trained) > 0)
    metrics.validation(trained.step, trained.train_seconds, trained.tokens_seen, learning_rate(run, trained),
                       result.nats)
    emit(Evaluated(trained.step, result.nats, result.bits, result.perplexity, trained.best_val, is_best,
                   result.tokens, time.perf_counter() - t0, verdict.best_step, verdict.overfitting_since))
    if change is not None:
        emit(Notice(change))
    # A change of the learning rate is a reason to wait: counted from the best or the last change.
    early_stop = run.config.early_stop
    waited = verdict.since_best if since_change is None else min(verdict.since_best, since_change)
    stop = None
    if early_stop and waited >= early_stop:
        since = "" if waited == verdict.since_best else f", {waited} since the learning rate last changed"
        stop = (f"early stop: no new best in {plural(verdict.since_best, 'evaluation')}{since}; "
                f"best.pt is step {verdict.best_step}, val {verdict.best_val:.4f}")
    return Evaluation(is_best, seconds, stop)
