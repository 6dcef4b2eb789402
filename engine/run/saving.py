"""Writing a run's checkpoints while it trains, and what to say when one cannot be: functions of the
Run and its Trained that return what came of it. The Trainer decides when to save and what a
failure means for the run (pause for a UI, a warning headless, an error for non-finite weights);
the payload and the restoring are engine/run/checkpoints.py."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.checkpoint import non_finite_tensor, save_checkpoint
from charrnn_tui.engine.errors import CheckpointError
from charrnn_tui.engine.events import CheckpointSaved, Notice
from charrnn_tui.engine.model.device import reseed_cudnn_dropout
from charrnn_tui.engine.run.checkpoints import checkpoint_payload
from charrnn_tui.engine.run.run import EventSink, Run, Trained
from charrnn_tui.engine.runs import LATEST, keep_step_copy, run_hint


@dataclass(frozen=True)
class Saved:
    """What came of a save: written, or not (a failed write has been warned of), and the error that
    ends the run when the weights were not finite (then nothing was written)."""

    written: bool
    failure: str = ""


def save(run: Run, trained: Trained, name: str, saved_step: int, emit: EventSink) -> Saved:
    """Write the checkpoint `name` (LATEST keeps its step copies) of the leader's run; `saved_step`,
    the last one written, for the advice when the weights are not finite."""
    step = trained.step
    assert run.run_dir is not None, "the leader's set-up has placed the run"
    payload = checkpoint_payload(run, trained)
    broken = non_finite_tensor(payload)
    if broken is not None:
        return Saved(False, f"{broken} is not finite at step {step}; not saved. {last_good_checkpoint(saved_step)}")
    path = run.run_dir / name
    try:
        save_checkpoint(payload, path)
    except CheckpointError as e:
        emit(Notice(str(e), "warning"))  # the run goes on (or, in a UI, pauses): not an error yet
        return Saved(False)
    reseed_cudnn_dropout(run.device)  # a run resumed from this file draws the same dropout masks
    if name == LATEST:
        keep_step_copy(path, step, run.config.keep_checkpoints)
    emit(CheckpointSaved(str(path), step, name.removesuffix(".pt"), time.time()))
    return Saved(True)


def worth_saving_after_out_of_memory(run: Run | None, trained: Trained, saved_step: int) -> bool:
    # An allocation that fails outside the optimizer's update leaves the weights of the last
    # whole step, which are worth keeping; a failure inside it may leave them half-updated.
    return run is not None and not run.train_step.updating and trained.step > saved_step


def steps_lost(saved_step: int, step: int) -> str:
    """The error of a run whose final checkpoint could not be written, headless."""
    last = f"the last checkpoint is step {saved_step}" if saved_step else "nothing was saved"
    return f"the final checkpoint could not be written, so steps {saved_step + 1}-{step} are lost; {last}"


def last_good_checkpoint(saved_step: int) -> str:
    """The advice after a loss, a gradient or the weights went non-finite."""
    if not saved_step:
        return "Nothing was saved; start again with a lower --lr"
    return f"Resume from the last checkpoint (step {saved_step}) with a lower --lr"


def last_checkpoint_note(saved_step: int, run_dir: Path | None) -> str:
    """Where a run that failed with its processes stands, and how to resume it."""
    if not saved_step or run_dir is None:
        return "nothing was saved"
    return f"the last checkpoint (step {saved_step}) is intact: `{run_hint('train --resume', run_dir)}`"


def remove_empty_run_dir(run_dir: Path | None) -> None:
    # A new run that failed before its first checkpoint leaves nothing behind.
    if run_dir is not None and run_dir.is_dir():
        leftovers = [p for p in run_dir.iterdir() if p.name != ".lock"]
        if not leftovers:
            (run_dir / ".lock").unlink(missing_ok=True)
            run_dir.rmdir()


def out_of_memory_advice(config: cfg.TrainConfig, saved_step: int, device: torch.device | None) -> str:
    """The error of a run that ran out of memory: what to change, and where to resume from."""
    c = config
    smaller = f"--batch-size {c.batch_size // 2}, " if c.batch_size > 1 else ""
    saved = f"; saved at step {saved_step}, so --resume with a smaller batch" if saved_step else ""
    auto = "" if c.auto_batch_size else ", or --batch-size auto"
    where = device.type.upper() if device is not None else "host"  # None: before one was picked
    return (f"{where} out of memory with batch-size {c.batch_size} and seq-len {c.seq_len}: "
            f"try {smaller}a lower --seq-len or --hidden{auto}{saved}")
