"""The training loop: truncated BPTT in steps, steered by queued requests, reporting through events.

Only the thread that calls `run()` touches the model. Other threads (a UI) call the request
methods (`pause`, `save_now`, `prompt`...), which queue work that the loop serves between steps.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import config as cfg
from .batch_size import AUTO_BATCH_LIMIT, is_out_of_memory, largest_fitting, memory_limited, with_headroom
from .checkpoint import load_checkpoint, non_finite_tensor, save_checkpoint
from .corpus import corpus_spec, load_corpus
from .data import LAYOUT, legacy_epoch_float, make_batcher, split_tokens, validation_ids
from .device import (
    autocast,
    configure_backends,
    describe_device,
    fork_rng,
    memory_in_use,
    pick_device,
    release_cached_memory,
    reseed_cudnn_dropout,
    synchronize,
    use_bf16,
)
from .errors import CharRNNError, CheckpointError, ConfigError
from .evaluate import evaluate
from .events import (
    CheckpointSaved,
    Evaluated,
    Event,
    Notice,
    Progress,
    RunInfo,
    SampleFinished,
    SampleStarted,
    SampleText,
    SettingsChanged,
    Started,
    StateChanged,
)
from .model import CharRNN, State, detach_state
from .runs import (
    BEST,
    LATEST,
    RunLock,
    default_run_name,
    default_runs_dir,
    keep_step_copy,
    new_run_dir,
    remove_partial_writes,
)
from .sampling import Continuation, SampleSettings, TextGenerator
from .vocab import build_vocab, vocab_from_dict

EventSink = Callable[[Event], None]
MAX_SAVED_SAMPLES = 50
OPEN_ENDED_DECAY_EPOCHS = 10.0  # the decay horizon of a run with no stop condition

# Fields a user may change when resuming; the rest must match the checkpoint.
RESUMABLE_OVERRIDES = (
    "max_steps", "max_epochs", "max_time", "eval_interval", "eval_tokens", "checkpoint_interval", "keep_checkpoints",
    "report_interval", "sample_interval", "sample_length", "temperature", "top_k", "top_p",
    "device", "precision", "threads", "lr", "grad_clip", "warmup_steps", "batch_size", "auto_batch_size", "seq_len",
    "lr_decay",
)


class Trainer:
    def __init__(
        self,
        config: cfg.TrainConfig | None = None,
        *,
        on_event: EventSink | None = None,
        runs_dir: Path | None = None,
        run_name: str | None = None,
        resume: Path | None = None,
        overrides: dict[str, Any] | None = None,
        pause_on_save_error: bool = False,
    ):
        if config is None and resume is None:
            raise ValueError("Trainer needs a config or a checkpoint to resume")
        self.config = config
        self.on_event = on_event or (lambda event: None)
        self.runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
        self.run_name = run_name
        self.resume_path = Path(resume) if resume else None
        self.overrides = overrides or {}
        # A UI pauses when a checkpoint cannot be written (disk full), so the user can free space
        # and press save; headless, training goes on (the previous checkpoint is intact).
        self.pause_on_save_error = pause_on_save_error
        self.paused = False
        self._requests: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.state = "starting"
        self.error = ""
        self.lock: RunLock | None = None
        self.step = 0
        self.saved_step = 0
        self.updating = True  # until the loop starts, a failure leaves nothing worth saving
        self._sample_ids = 0

    # ---- requests: safe to call from any thread ---------------------------------------------
    def pause(self) -> None:
        self._requests.put(("pause", None))

    def resume(self) -> None:
        self._requests.put(("resume", None))

    def toggle_pause(self) -> None:
        self._requests.put(("toggle_pause", None))

    def stop(self, save: bool = True, unattended: bool = False) -> None:
        """`unattended`: nobody is left to retry a failed save (the terminal or the parent has gone),
        so the run ends even then, rather than pausing as it does for a UI."""
        self._requests.put(("stop", (save, unattended)))

    def save_now(self) -> None:
        self._requests.put(("save", None))

    def sample_now(self) -> None:
        self._requests.put(("sample", None))

    def evaluate_now(self) -> None:
        self._requests.put(("evaluate", None))

    def set_temperature(self, temperature: float) -> None:
        self._requests.put(("temperature", float(temperature)))

    def prompt(self, text: str, length: int | None = None) -> None:
        self._requests.put(("prompt", (text, length)))

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> str:
        """Set up, train until a stop condition or a stop request, and return the final state."""
        try:
            self._setup()
            self._loop()
        except CharRNNError as e:
            self._remove_empty_run_dir()
            self._fail(str(e))
            raise
        except Exception as e:
            if not is_out_of_memory(e):
                self._fail(f"{type(e).__name__}: {e}")
                raise
            self._save_after_out_of_memory()
            self._remove_empty_run_dir()
            if self.state == "error":  # the save found a NaN loss: that is the error to report
                raise CharRNNError(self.error) from None
            message = self._out_of_memory_message()
            self._fail(message)
            raise CharRNNError(message) from None
        finally:
            if self.lock is not None:
                self.lock.release()
        return self.state

    def _save_after_out_of_memory(self) -> None:
        # An allocation that fails outside the optimizer's update leaves the weights of the last
        # whole step, which are worth keeping; a failure inside it may leave them half-updated.
        if self.updating or self.step <= self.saved_step:
            return
        release_cached_memory(self.device)
        try:
            if self._report():  # read the pending losses first: never save over a NaN
                self._save(LATEST)
        except Exception as e:
            if not is_out_of_memory(e):
                raise

    def _out_of_memory_message(self) -> str:
        c = self.config
        smaller = f"--batch-size {c.batch_size // 2}, " if c.batch_size > 1 else ""
        saved = f"; saved at step {self.saved_step}, so --resume with a smaller batch" if self.saved_step else ""
        auto = "" if c.auto_batch_size else ", or --batch-size auto"
        return (f"{self.device.type.upper()} out of memory with batch-size {c.batch_size} and seq-len {c.seq_len}: "
                f"try {smaller}a lower --seq-len or --hidden{auto}{saved}")

    def _remove_empty_run_dir(self) -> None:
        # A run that failed before its first checkpoint leaves nothing behind.
        run_dir = getattr(self, "run_dir", None)
        if run_dir is not None and self.resume_path is None and run_dir.is_dir():
            leftovers = [p for p in run_dir.iterdir() if p.name != ".lock"]
            if not leftovers:
                (run_dir / ".lock").unlink(missing_ok=True)
                run_dir.rmdir()

    def _fail(self, message: str) -> None:
        self.state = "error"
        self.error = message
        self.emit(Notice(message, "error"))
        self.emit(StateChanged("error", message))

    def emit(self, event: Event) -> None:
        self.on_event(event)

    # ---- set-up -------------------------------------------------------------------------------
    def _setup(self) -> None:
        checkpoint = None
        if self.resume_path is not None:
            checkpoint = load_checkpoint(self.resume_path)
            self.config = _resumed_config(checkpoint, self.overrides)
        config = self.config
        cfg.validate(config)
        torch.manual_seed(config.seed)

        corpus = load_corpus(config.corpus, csv_column=config.csv_column, ascii_only=config.ascii,
                             encoding=config.encoding)
        if checkpoint is not None:
            vocab = vocab_from_dict(checkpoint["vocab"])
        else:
            vocab = build_vocab(corpus.text, config.tokens, config.min_freq)
        try:
            ids = vocab.encode(corpus.text)
        except CharRNNError as e:
            raise CheckpointError(f"corpus no longer matches the checkpoint's vocabulary: {e}") from None
        train_ids, val_ids = split_tokens(ids, config.val_fraction)
        if config.top_k is not None and config.top_k > len(vocab):
            raise ConfigError(f"top-k {config.top_k} is larger than the vocabulary ({len(vocab)} tokens)")

        self.device = pick_device(config.device)
        configure_backends(self.device, config.threads)
        self.bf16 = use_bf16(self.device, config.precision)
        self.vocab = vocab
        config.model.vocab_size = len(vocab)
        self.model = CharRNN(config.model).to(self.device)
        self.train_ids = train_ids.to(self.device)
        if config.auto_batch_size and (checkpoint is None or self.overrides.get("auto_batch_size")
                                       or config.seq_len != checkpoint["config"]["seq_len"]):
            config.batch_size = self._auto_batch_size(len(train_ids))
        self.val_ids = validation_ids(val_ids, config.eval_tokens).to(self.device)
        self.batcher = make_batcher(config.sampler, self.train_ids, config.batch_size, config.seq_len, config.seed)
        self.optimizer = _make_optimizer(self.model, config, self.device)
        self.generator = TextGenerator(self.model, vocab)
        self.temperature = config.temperature

        self.train_state: State | None = None
        self.train_seconds = 0.0
        self.tokens_seen = 0
        self.train_history = array("f")
        self.val_history: list[tuple[int, float]] = []
        self.samples: list[tuple[int, str]] = []
        self.best_val = math.inf
        if checkpoint is not None:
            self.run_dir = self.resume_path.parent
            self.lock = RunLock(self.run_dir).acquire()
            remove_partial_writes(self.run_dir)
            self._restore(checkpoint)
        else:
            name = self.run_name or default_run_name(corpus.name, config.model.kind, config.model.hidden)
            self.run_dir = new_run_dir(self.runs_dir, name)
            self.lock = RunLock(self.run_dir).acquire()
        self.saved_step = self.step
        self.corpus = dataclasses.replace(corpus, text="")  # the ids are all training needs from here

        m = config.model
        self.info = RunInfo(
            run_name=self.run_dir.name, run_dir=str(self.run_dir), corpus_name=corpus.name,
            corpus_source=corpus.source, corpus_chars=len(corpus.text), train_tokens=len(train_ids),
            val_tokens=len(self.val_ids), token_kind=vocab.kind, vocab_size=len(vocab), model_kind=m.kind,
            layers=m.layers, hidden=m.hidden, embedding=m.embedding, parameters=self.model.num_parameters(),
            device=self.device.type, device_name=describe_device(self.device),
            precision="bf16" if self.bf16 else "fp32", preset=config.preset, batch_size=config.batch_size,
            seq_len=config.seq_len, max_steps=config.max_steps, max_epochs=config.max_epochs,
            max_time=config.max_time, resumed_step=self.step, config=cfg.to_dict(config),
        )
        self.emit(Started(self.info, tuple(self.train_history), tuple(self.val_history), tuple(self.samples)))

    def _same_batch_shape(self, ck: dict[str, Any]) -> bool:
        old = ck["config"]
        return ((old["batch_size"], old["seq_len"]) == (self.config.batch_size, self.config.seq_len)
                and ck["batcher"].get("layout") == LAYOUT)

    def _restore_position(self, ck: dict[str, Any]) -> None:
        if self._same_batch_shape(ck):
            self.batcher.load_state_dict(ck["batcher"])
            return
        # Resumed with another batch shape (say, a smaller batch after running out of memory), or
        # from a checkpoint of an earlier layout: the same point of the epoch, with the hidden
        # state restarting.
        c, old = self.config, ck["config"]
        if ck["batcher"].get("layout") == LAYOUT:
            before = make_batcher(c.sampler, self.train_ids, old["batch_size"], old["seq_len"], c.seed)
            before.load_state_dict(ck["batcher"])
            epoch = before.epoch_float
            changed = (f"with batch-size {c.batch_size} x seq-len {c.seq_len} (the run had "
                       f"{old['batch_size']} x {old['seq_len']})")
        else:
            epoch = legacy_epoch_float(c.sampler, ck["batcher"], old["batch_size"], old["seq_len"],
                                       len(self.train_ids))
            changed = "from a checkpoint of an earlier version, whose batches were cut differently,"
        self.batcher.seek(epoch)
        self.emit(Notice(f"resumed {changed} at epoch {epoch:.2f}; the hidden state starts afresh"))

    def _auto_batch_size(self, train_tokens: int) -> int:
        config = self.config
        limit = max(1, min(AUTO_BATCH_LIMIT, train_tokens // (config.seq_len + 1)))  # a sequence per stream
        if not memory_limited(self.device):
            chosen = min(config.batch_size, limit)
            self.emit(Notice(f"--batch-size auto: memory is not the limit on a {self.device.type}, so the "
                             f"preset's measured batch size {chosen} is used"))
            return chosen
        # Room for AdamW's two moments, which the probe's passes don't allocate.
        reserve = [torch.empty_like(p) for p in self.model.parameters() for _ in range(2)]
        largest = largest_fitting(self._batch_fits, config.batch_size, limit)
        del reserve
        if largest == 0:
            raise ConfigError(f"out of {self.device.type} memory even at batch-size 1 with seq-len "
                              f"{config.seq_len}: lower --seq-len or --hidden")
        chosen = largest if largest == limit else with_headroom(largest)
        self.emit(Notice(f"--batch-size auto: {largest} fit in {self.device.type} memory at seq-len "
                         f"{config.seq_len}; training with batch-size {chosen}"))
        return chosen

    def _batch_fits(self, batch: int) -> bool:
        """Whether a forward and backward pass at this batch size fits in the device's memory."""
        try:
            with fork_rng(self.device), self.model.dropout_off():  # the run's random streams stay as they were
                self._trial_step(batch)
            fits = True
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(e):
                raise
            fits = False
        self.model.zero_grad(set_to_none=True)
        release_cached_memory(self.device)
        return fits

    def _trial_step(self, batch: int) -> None:
        x = torch.arange(batch * self.config.seq_len, device=self.device).remainder(len(self.vocab))
        x = x.view(batch, self.config.seq_len)
        self._loss(x, x, None)[0].backward()
        synchronize(self.device)

    def _loss(self, x: torch.Tensor, y: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """Mean cross-entropy of a training batch (the loss itself in fp32), and the state after it."""
        with autocast(self.device, self.bf16):
            logits, state = self.model(x, state)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten()), state

    def _restore(self, ck: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self._restore_position(ck)
            self.step = int(ck["step"])
            self.train_seconds = float(ck["train_seconds"])
            self.tokens_seen = int(ck["tokens_seen"])
            saved_state = ck["train_state"] if self._same_batch_shape(ck) else None
            if saved_state:
                moved = [t.to(self.device, torch.float32) for t in saved_state]
                self.train_state = tuple(moved) if len(moved) == 2 else moved[0]
            history = ck["history"]
            self.train_history = array("f", history["train"].tolist())
            self.val_history = [(int(s), float(v)) for s, v in history["val"]]
            self.samples = [(int(s), str(t)) for s, t in history["samples"]]
            self.best_val = float(ck["best_val"])
            torch.set_rng_state(ck["rng"]["torch"])
            if self.device.type == "cuda" and ck["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(ck["rng"]["cuda"], self.device)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise CheckpointError(f"{self.resume_path}: checkpoint contents do not match its config ({e})") from None

    # ---- main loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        config = self.config
        self.paused = False
        self.stop_requested: bool | None = None  # None: keep going; else whether to save
        self._set_state("training")
        self.session_start_seconds = self.train_seconds
        self.session_start_fraction = self._limit_fraction()
        self.step_log = torch.empty(4096, 2, device=self.device)  # loss and gradient norm per step
        self.pending = 0
        self.updating = False
        self.pending_first_step = self.step + 1
        self.tokens_since_report = 0
        self.next_sample_at = time.monotonic()  # first live sample straight away
        self.last_report = time.perf_counter()
        self.seconds_at_report = self.train_seconds

        while True:
            self._serve_requests(block=self.paused)
            if self.state == "error":  # a NaN found while serving a request
                return
            if self.stop_requested is not None:
                if self._stop_on_request():
                    return
                continue  # the final save failed: paused, so the user can free space and retry
            if self.paused:
                continue
            if self._limit_reached():
                if self._finish():
                    return
                continue

            # Training time is the steps themselves (and the read-back in reports), never the
            # requests, evaluations, samples and saves served between them.
            started = time.perf_counter()
            self._train_step()
            self.train_seconds += time.perf_counter() - started

            now = time.perf_counter()
            due_report = now - self.last_report >= config.report_interval or self.pending == len(self.step_log)
            due_eval = self.step % config.eval_interval == 0
            due_checkpoint = config.checkpoint_interval and self.step % config.checkpoint_interval == 0
            due_sample = config.sample_interval and time.monotonic() >= self.next_sample_at
            if due_report or due_eval or due_checkpoint or due_sample or self._limit_reached():
                if not self._report():
                    return
                if due_eval:
                    self._evaluate()
                if due_checkpoint:
                    self._save(LATEST)
                if self.state == "error":  # a save found non-finite weights
                    return
                if due_sample:
                    self._sample(prompt="", source="live")

    def _stop_on_request(self) -> bool:
        """Save if asked and stop; False when the save failed and a UI wants the run kept, paused."""
        if not self._flush_progress():
            return True
        if self.stop_requested and not self._save_final():
            if self.pause_on_save_error:
                self.stop_requested = None
                self.emit(Notice("could not save, so training is paused, not stopped: free space and press "
                                 "save, or quit without saving", "warning"))
                return False
            self._fail_unsaved()
            return True
        self._set_state("stopped")
        return True

    def _save_final(self) -> bool:
        # A failed write loses nothing when the latest checkpoint already holds every step.
        return self._save(LATEST) or self.step == self.saved_step

    def _fail_unsaved(self) -> None:
        # Headless, nobody can retry the save: end as an error so the exit status says so.
        if self.state == "error":
            return  # the save found non-finite weights: that is the error to report
        last = f"the last checkpoint is step {self.saved_step}" if self.saved_step else "nothing was saved"
        self._fail(f"the final checkpoint could not be written, so steps {self.saved_step + 1}-{self.step} "
                   f"are lost; {last}")

    def _train_step(self) -> None:
        config = self.config
        position = self.batcher.state_dict()
        batch = self.batcher.next()
        state = None if batch.reset else self.train_state
        lr = self._lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        try:
            loss, state = self._loss(batch.x, batch.y, state)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        except RuntimeError as e:
            if is_out_of_memory(e):
                self.batcher.load_state_dict(position)  # not trained on: a save after this resumes here
            raise
        # The global gradient norm (before clipping) is kept with the loss and read back with it:
        # a non-finite norm means the update below made the weights non-finite, even when the
        # loss that produced it was finite.
        grad_norm = clip_gradients(self.model, config.grad_clip)
        self.updating = True
        self.optimizer.step()
        self.updating = False
        self.train_state = detach_state(state) if self.batcher.carries_state else None
        self.step_log[self.pending, 0] = loss.detach()
        self.step_log[self.pending, 1] = grad_norm
        self.pending += 1
        self.step += 1
        self.tokens_seen += batch.predictions
        self.tokens_since_report += batch.predictions

    def _report(self) -> bool:
        """Send the losses since the last report; False when the loss went NaN/inf and the run stopped."""
        if not self.pending:
            return True
        started = time.perf_counter()
        losses, grad_norms = self.step_log[: self.pending].T.tolist()  # the one host sync per report
        now = time.perf_counter()
        self.train_seconds += now - started  # waiting here is the device finishing the steps
        elapsed = max(self.train_seconds - self.seconds_at_report, 1e-9)
        self.seconds_at_report = self.train_seconds
        self.last_report = now
        first = self.pending_first_step
        self.pending = 0
        self.pending_first_step = self.step + 1
        bad = next((i for i, (v, g) in enumerate(zip(losses, grad_norms, strict=True))
                    if not (math.isfinite(v) and math.isfinite(g))), None)
        if bad is not None:
            self.train_history.extend(losses[:bad])
            what = (f"loss became {losses[bad]}" if not math.isfinite(losses[bad])
                    else f"gradient norm became {grad_norms[bad]}")
            self._fail(f"{what} at step {first + bad}; stopped without saving. {self._last_good_checkpoint()}")
            return False
        self.train_history.extend(losses)
        tokens_per_s = self.tokens_since_report / elapsed
        self.tokens_since_report = 0
        self.emit(Progress(
            step=self.step, first_step=first, losses=tuple(losses), epoch=self.batcher.epoch_float,
            tokens_per_s=tokens_per_s, lr=self._lr(), train_seconds=self.train_seconds,
            eta_seconds=self._eta(), epoch_eta_seconds=self._epoch_eta(tokens_per_s),
            memory_bytes=memory_in_use(self.device),
        ))
        return True

    def _flush_progress(self) -> bool:
        """Report what is pending; False if that found a NaN/inf loss and failed the run."""
        return self._report() if self.pending else True

    def _evaluate(self) -> None:
        t0 = time.perf_counter()
        result = evaluate(self.model, self.val_ids)  # the same figure as `charrnn-tui eval RUN`
        is_best = result.nats < self.best_val
        self.best_val = min(self.best_val, result.nats)
        self.val_history.append((self.step, result.nats))
        self.emit(Evaluated(self.step, result.nats, result.bits, result.perplexity, self.best_val, is_best,
                            result.tokens, time.perf_counter() - t0))
        if is_best:
            self._save(BEST)

    def _finish(self) -> bool:
        """Evaluate, save and finish; False when the save failed and a UI wants the run kept, paused."""
        if not self._flush_progress():
            return True
        if not self.val_history or self.val_history[-1][0] != self.step:
            self._evaluate()
        if not self._save_final():
            if self.pause_on_save_error:
                return False
            self._fail_unsaved()
            return True
        self._set_state("finished", self._limit_description())
        return True

    # ---- requests -----------------------------------------------------------------------------
    def _serve_requests(self, block: bool) -> None:
        while True:
            try:
                name, arg = self._requests.get(timeout=0.05) if block else self._requests.get_nowait()
            except queue.Empty:
                return
            block = False
            if name == "pause" or (name == "toggle_pause" and not self.paused):
                if not self.paused:
                    if not self._flush_progress():
                        return
                    self.paused = True
                    self._set_state("paused")
            elif name == "resume" or name == "toggle_pause":
                if self.paused:
                    self.paused = False
                    self.last_report = time.perf_counter()
                    self._set_state("training")
            elif name == "stop":
                save, unattended = arg
                self.stop_requested = bool(save)
                if unattended:
                    self.pause_on_save_error = False
                return
            elif name == "save":
                if not self._flush_progress():
                    return
                self._save(LATEST)
            elif name == "sample":
                self._sample(prompt="", source="live")
            elif name == "evaluate":
                if not self._flush_progress():
                    return
                self._evaluate()
            elif name == "temperature":
                if math.isfinite(arg) and arg > 0:
                    self.temperature = arg
                    self.emit(SettingsChanged(self.temperature))
                else:
                    self.emit(Notice(f"temperature must be a positive number, not {arg}", "warning"))
            elif name == "prompt":
                text, length = arg
                self._sample(prompt=text, source="prompt", length=length)

    def _sample(self, prompt: str, source: str, length: int | None = None) -> None:
        config = self.config
        if source == "live":  # first, so that a sample that fails is not retried at every step
            self.next_sample_at = time.monotonic() + config.sample_interval
        self._sample_ids += 1
        sample_id = self._sample_ids
        settings = SampleSettings(
            length=config.sample_length if length is None else length,
            temperature=self.temperature, top_k=config.top_k, top_p=config.top_p,
        )
        result = Continuation(prompt)
        pieces = self.generator.stream(prompt, settings, result)
        try:
            first = next(pieces, None)  # prepares the prompt, so its notes are known
        except CharRNNError as e:
            self.emit(Notice(str(e), "warning"))
            return
        self.emit(SampleStarted(sample_id, self.step, prompt, self.temperature, source, tuple(result.notes)))
        if first is not None:
            self.emit(SampleText(sample_id, first))
        for piece in pieces:
            self.emit(SampleText(sample_id, piece))
        self.emit(SampleFinished(sample_id, result.text))
        if source == "live":
            self.samples = [*self.samples[-(MAX_SAVED_SAMPLES - 1):], (self.step, result.text)]

    def _set_state(self, state: str, reason: str = "") -> None:
        self.state = state
        self.emit(StateChanged(state, reason))

    # ---- schedule and limits ------------------------------------------------------------------
    def _limit_fraction(self) -> float | None:
        """How far through the run the stop conditions say we are (the largest of them), or None."""
        c = self.config
        fractions = []
        if c.max_steps:
            fractions.append(self.step / c.max_steps)
        if c.max_epochs:
            fractions.append(self.batcher.epoch_float / c.max_epochs)
        if c.max_time:
            fractions.append(self.train_seconds / c.max_time)
        return min(1.0, max(fractions)) if fractions else None

    def _limit_reached(self) -> bool:
        c = self.config
        return bool(
            (c.max_steps and self.step >= c.max_steps)
            or (c.max_epochs and self.batcher.epoch_float >= c.max_epochs)
            or (c.max_time and self.train_seconds >= c.max_time)
        )

    def _limit_description(self) -> str:
        c = self.config
        if c.max_steps and self.step >= c.max_steps:
            return f"reached max-steps {c.max_steps}"
        if c.max_epochs and self.batcher.epoch_float >= c.max_epochs:
            return f"reached max-epochs {c.max_epochs:g}"
        return f"reached max-time {c.max_time:g}s"

    def _lr(self) -> float:
        """Linear warm-up, then cosine decay to min_lr_ratio*lr over the run's stop condition, or
        over OPEN_ENDED_DECAY_EPOCHS when it has none (a peak rate tuned for short runs is too high
        to hold for ever: validation loss rose again after two epochs at it)."""
        c = self.config
        if self.step < c.warmup_steps:
            return c.lr * (self.step + 1) / c.warmup_steps
        if not c.lr_decay:
            return c.lr
        fraction = self._limit_fraction()
        if fraction is None:
            fraction = min(1.0, self.batcher.epoch_float / OPEN_ENDED_DECAY_EPOCHS)
        floor = c.lr * c.min_lr_ratio
        return floor + 0.5 * (c.lr - floor) * (1 + math.cos(math.pi * fraction))

    def _eta(self) -> float | None:
        fraction = self._limit_fraction()
        done = None if fraction is None else fraction - self.session_start_fraction
        spent = self.train_seconds - self.session_start_seconds
        if fraction is None or not done or done <= 0:
            return None
        return spent * (1 - fraction) / done

    def _epoch_eta(self, tokens_per_s: float) -> float | None:
        if tokens_per_s <= 0:
            return None
        left = 1.0 - (self.batcher.epoch_float % 1.0)
        return left * len(self.train_ids) / tokens_per_s

    # ---- checkpoints --------------------------------------------------------------------------
    def _save(self, name: str) -> bool:
        """Write a checkpoint; False if it could not be written (and, for a UI, training is paused)."""
        if self.state == "error":
            return False  # never write weights from a failed run over a good checkpoint
        payload = self._checkpoint_payload()
        broken = non_finite_tensor(payload)
        if broken is not None:
            self._fail(f"{broken} is not finite at step {self.step}; not saved. {self._last_good_checkpoint()}")
            return False
        path = self.run_dir / name
        try:
            save_checkpoint(payload, path)
        except CheckpointError as e:
            self.emit(Notice(str(e), "warning"))  # the run goes on (or, in a UI, pauses): not an error yet
            if self.pause_on_save_error and not self.paused:
                self.paused = True
                self._set_state("paused", "checkpoint failed")
            return False
        reseed_cudnn_dropout(self.device)  # a run resumed from this file draws the same dropout masks
        if name == LATEST:
            self.saved_step = self.step
            keep_step_copy(path, self.step, self.config.keep_checkpoints)
        self.emit(CheckpointSaved(str(path), self.step, name.removesuffix(".pt"), time.time()))
        return True

    def _last_good_checkpoint(self) -> str:
        if not self.saved_step:
            return "Nothing was saved; start again with a lower --lr"
        return f"Resume from the last checkpoint (step {self.saved_step}) with a lower --lr"

    def _checkpoint_payload(self) -> dict[str, Any]:
        state = self.train_state
        tensors = () if state is None else state if isinstance(state, tuple) else (state,)
        saved_state = [t.float().cpu() for t in tensors]  # float32 whatever autocast made it: resumable either way
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "vocab": self.vocab.to_dict(),
            "config": cfg.to_dict(self.config),
            "step": self.step,
            "train_seconds": self.train_seconds,
            "tokens_seen": self.tokens_seen,
            "batcher": self.batcher.state_dict(),
            "train_state": saved_state,
            "best_val": self.best_val,
            "history": {
                "train": torch.tensor(self.train_history, dtype=torch.float32),
                "val": [list(v) for v in self.val_history],
                "samples": [list(s) for s in self.samples],
            },
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            },
            "run_name": self.run_dir.name,
            "corpus": {"name": self.corpus.name, "source": self.corpus.source},
            "saved_at": time.time(),
        }


def clip_gradients(model: CharRNN, max_norm: float) -> torch.Tensor:
    """Scale the gradients to a global norm of at most `max_norm` (0: leave them) and return their
    norm before that, as a tensor on the device: nothing here waits for the device."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    return torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)


def _make_optimizer(model: CharRNN, config: cfg.TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    # Fused AdamW on CUDA: one kernel for all parameters, no host sync.
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def _resumed_config(checkpoint: dict[str, Any], overrides: dict[str, Any]) -> cfg.TrainConfig:
    """The checkpoint's config with the user's changes; a change the run cannot take is an error,
    never silently dropped (`model.` keys name model fields)."""
    config = cfg.from_dict(checkpoint.get("config"))
    given = {k: v for k, v in overrides.items() if v is not None}
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
