"""A run's checkpoint and back: the payload written from a Run and its Trained (engine/run/run.py),
and, on a resume, the config, the Run's state, the progress and the schedule restored from it.

Functions of what they read; the Trainer decides when to save and what a failure means."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.errors import CheckpointError, ConfigError
from charrnn_tui.engine.events import Notice
from charrnn_tui.engine.history import LossHistory
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.overfitting import read_history
from charrnn_tui.engine.run import schedule
from charrnn_tui.engine.run.distributed import World, state_rows
from charrnn_tui.engine.run.run import EventSink, Run, Trained, position
from charrnn_tui.engine.run.schedule import Schedule
from charrnn_tui.engine.text.corpus import corpus_spec
from charrnn_tui.engine.text.data import LAYOUT, legacy_epoch_float, make_batcher
from charrnn_tui.engine.text.run_text import TextFingerprint, describe_change

RESUMABLE_OVERRIDES = cfg.resumable_fields()  # fields a resume may change; the rest must match


def checkpoint_payload(run: Run, trained: Trained) -> dict[str, Any]:
    """What a checkpoint holds: the leader's Run and how far it has trained."""
    device, run_dir, corpus, fingerprint = run.device, run.run_dir, run.corpus, run.text_fingerprint
    assert run_dir is not None and corpus is not None and fingerprint is not None, "the leader's, once placed"
    # The whole batch's state (a distributed run's leader gathers every rank's block), in float32
    # whatever autocast made it: resumable either way
    saved_state = [t.float().cpu() for t in run.peers.gather_state(trained.carried_state())]
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "vocab": run.vocab.to_dict(),
        "config": cfg.to_dict(run.config),
        "step": trained.step,
        "train_seconds": trained.train_seconds,
        "tokens_seen": trained.tokens_seen,
        "batcher": run.batcher.state_dict(),
        "train_state": saved_state,
        "best_val": trained.best_val,
        "schedule": run.schedule.to_dict(),
        "history": {
            "losses": trained.losses.to_dict(),
            "val": [list(v) for v in trained.val_history],
            "train_at_eval": [list(v) for v in trained.train_at_eval],
            "since_best": trained.evals_since_best,
            "first_after_best": trained.first_after_best,
            "samples": [list(s) for s in trained.samples],
        },
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        },
        "run_name": run_dir.name,
        "corpus": {"name": corpus.name, "source": corpus.source},
        "corpus_fingerprint": fingerprint.to_dict(),  # to tell, on a resume, if the text changed
        "saved_at": time.time(),
    }


def restore(run: Run, trained: Trained, ck: dict[str, Any], world: World, path: Path, emit: EventSink) -> None:
    """The checkpoint's weights, optimizer, batcher position, progress and random state, into the
    Run set-up has built from its config and into `trained`. `path` names it in errors."""
    device, config = run.device, run.config
    try:
        run.model.load_state_dict(ck["model"])
        load_optimizer_state(run.optimizer, ck["optimizer"])
        restore_position(run, ck, emit)
        trained.step = int(ck["step"])
        trained.train_seconds = float(ck["train_seconds"])
        trained.tokens_seen = int(ck["tokens_seen"])
        saved_state = ck["train_state"] if same_batch_shape(config, ck) else None
        if saved_state:
            moved = state_rows(tuple(t.to(device, torch.float32) for t in saved_state), world, config.batch_size)
            trained.train_state = (moved[0], moved[1]) if len(moved) == 2 else moved[0]  # an LSTM's (h, c)
        history = ck["history"]
        if "losses" in history:
            trained.losses = LossHistory.from_dict(history["losses"])
        else:  # before the history was bounded, checkpoints held every loss
            trained.losses = LossHistory.from_losses(history["train"].tolist())
        trained.val_history = [(int(s), float(v)) for s, v in history["val"]]
        trained.train_at_eval = [(int(s), float(v)) for s, v in history.get("train_at_eval", [])]
        trained.samples = [(int(s), str(t)) for s, t in history["samples"]]
        trained.best_val = float(ck["best_val"])
        if "since_best" in history:
            trained.evals_since_best = int(history["since_best"])
            after = history.get("first_after_best")
            trained.first_after_best = None if after is None else int(after)
        else:  # saved before the history was thinned: every evaluation is in it
            trained.evals_since_best = read_history(trained.val_history, {}).since_best
            after = len(trained.val_history) - trained.evals_since_best  # the index of the first after the best
            trained.first_after_best = trained.val_history[after][0] if trained.evals_since_best else None
        torch.set_rng_state(ck["rng"]["torch"])
        if device.type == "cuda" and ck["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ck["rng"]["cuda"], device)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f"{path}: checkpoint contents do not match its config ({e})") from None


def resume_schedule(run: Run, trained: Trained, ck: dict[str, Any], overrides: dict[str, Any], path: Path,
                    emit: EventSink) -> None:
    """The schedule as the checkpoint left it; then, if the resume gives new stop conditions,
    those replace the run's (each an amount of training more, 0 for none) and a new segment of
    the schedule starts here."""
    config, where = run.config, position(run, trained)
    if "schedule" in ck:
        try:
            run.schedule = Schedule.from_dict(ck["schedule"])
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: {e}") from None
    else:  # written before schedules were saved: a run with a limit goes on as it did; an open-ended
        # one through the cosine of its first 10 epochs (the one it followed, with no time bound),
        # then back at the peak with the plateau rule where it used to hold its floor
        run.schedule.cosine_seconds = None
    more = {k: v for k, v in overrides.items() if k in schedule.LIMITS and v is not None}
    keep = bool(overrides.get("keep_schedule"))
    if not more:
        if keep:
            raise ConfigError("--keep-schedule goes with a new stop condition (--max-steps, --max-epochs or "
                              "--max-time: how much more to train)")
        reached = schedule.limit_reached(config, where.step, where.epoch, where.seconds)
        if reached:  # the checkpoint is in the run's folder (a follower has none)
            raise ConfigError(f"run {path.parent.name} already {reached}: give --max-steps, "
                              "--max-epochs or --max-time for more training (how much more), or --max-time 0 "
                              "to train until stopped")
        return
    current = run.schedule.rate(config, where)
    old = schedule.describe_limits(config)
    for limit in schedule.LIMITS:
        amount = more.get(limit)
        end = None if not amount else where.of(limit) + amount
        setattr(config, limit, int(end) if limit == "max_steps" and end is not None else end)
    change = run.schedule.restart(config, where, current, keep)
    new = schedule.describe_limits(config, where)
    emit(Notice(f"resumed at step {where.step:,}: {new}" + (f" (was {old})" if old != new else "") + f"; {change}"))


def same_batch_shape(config: cfg.TrainConfig, ck: dict[str, Any]) -> bool:
    old = ck["config"]
    return ((old["batch_size"], old["seq_len"]) == (config.batch_size, config.seq_len)
            and ck["batcher"].get("layout") == LAYOUT)


def restore_position(run: Run, ck: dict[str, Any], emit: EventSink) -> None:
    if same_batch_shape(run.config, ck):
        run.batcher.load_state_dict(ck["batcher"])
        return
    # Resumed with another batch shape (say, a smaller batch after running out of memory), or
    # from a checkpoint of an earlier layout: the same point of the epoch, with the hidden
    # state restarting.
    c, old = run.config, ck["config"]
    if ck["batcher"].get("layout") == LAYOUT:
        before = make_batcher(c.sampler, run.train_ids, old["batch_size"], old["seq_len"], c.seed)
        before.load_state_dict(ck["batcher"])
        epoch = before.epoch_float
        changed = (f"with batch-size {c.batch_size} x seq-len {c.seq_len} (the run had "
                   f"{old['batch_size']} x {old['seq_len']})")
    else:
        epoch = legacy_epoch_float(c.sampler, ck["batcher"], old["batch_size"], old["seq_len"], len(run.train_ids))
        changed = "from a checkpoint of an earlier version, whose batches were cut differently,"
    run.batcher.seek(epoch)
    emit(Notice(f"resumed {changed} at epoch {epoch:.2f}; the hidden state starts afresh"))


def corpus_change(checkpoint: dict[str, Any] | None, text: str, fingerprint: TextFingerprint) -> str | None:
    """How the resumed run's corpus changed since its checkpoint; None if it did not, for a new
    run, or for a checkpoint from before fingerprints (nothing to compare with). `fingerprint` is
    the text's, as read now."""
    stored = TextFingerprint.from_dict(checkpoint.get("corpus_fingerprint")) if checkpoint is not None else None
    if stored is None or stored == fingerprint:  # the usual case: the text is not hashed again
        return None
    return describe_change(stored, text)


# Param-group options that choose the optimizer's implementation for the device, not its maths.
DEVICE_OPTIONS = ("fused", "foreach", "capturable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """The saved moments, step counts and hyperparameters, with this device's implementation:
    load_state_dict takes the saved param groups whole, so a CPU checkpoint (fused None) resumed on
    CUDA would lose fused AdamW, and a CUDA one (fused True) resumed on a CPU would keep it. The
    options in DEVICE_OPTIONS stay as make_optimizer chose them here; they are put in the saved groups
    before loading, so that load_state_dict also places each step count where that implementation
    keeps it (float32 on the parameter's device for fused or capturable, as it was otherwise)."""
    groups = saved["param_groups"]
    here = [{k: group[k] for k in DEVICE_OPTIONS if k in group} for group in optimizer.param_groups]
    if len(groups) == len(here):  # otherwise load_state_dict says what does not match
        groups = [{**group, **options} for group, options in zip(groups, here, strict=True)]
    optimizer.load_state_dict({**saved, "param_groups": groups})


LARGE_CHECKPOINT = 100 * 2**20  # bytes: a checkpoint this large is worth a line at the start


def checkpoint_bytes(model: CharRNN, optimizer: torch.optim.Optimizer) -> int:
    """About what a checkpoint of this run weighs: the weights, and the optimizer's state per weight
    (AdamW's two moments, SGD's momentum), in float32."""
    weights = sum(p.numel() for p in model.parameters())
    per_weight = 2 if isinstance(optimizer, torch.optim.AdamW) else 1
    return 4 * weights * (1 + per_weight)


def resumed_config(checkpoint: dict[str, Any], overrides: dict[str, Any]) -> cfg.TrainConfig:
    """The checkpoint's config with the user's changes; a change the run cannot take is an error,
    never silently dropped (`model.` keys name model fields). Stop conditions and keep_schedule are
    not applied here: they say how much more to train, from where the checkpoint is
    (`resume_schedule`)."""
    config = cfg.from_checkpoint(checkpoint)
    given = {k: v for k, v in overrides.items()
             if v is not None and k not in schedule.LIMITS and k != "keep_schedule"}
    for key, value in given.items():
        if key in RESUMABLE_OVERRIDES:
            continue
        name = key.removeprefix("model.")
        current = getattr(config.model if key.startswith("model.") else config, name)
        if value != current and not (key == "corpus" and corpus_spec(value) == corpus_spec(current)):
            flag = "--model" if key == "model.kind" else "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} cannot change when resuming (the run has {current!r}, not {value!r}); "
                              "start a new run to change it")
    config = dataclasses.replace(config, **{k: v for k, v in given.items() if k in RESUMABLE_OVERRIDES})
    cfg.validate(config)
    return config
