"""Run setup and checkpoints: everything a run is made of, built from a config or a checkpoint, and
the checkpoint that holds it again.

Mixed into Trainer (engine/run/trainer.py), whose loop uses what `_setup` builds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from charrnn_tui.corpora import BUNDLED
from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.checkpoint import load_checkpoint, non_finite_tensor, save_checkpoint
from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.errors import CharRNNError, CheckpointError, ConfigError, CorpusError
from charrnn_tui.engine.events import CheckpointSaved, Event, Notice, RunInfo, Started
from charrnn_tui.engine.history import LossHistory
from charrnn_tui.engine.model.device import (
    configure_backends,
    describe_device,
    fork_rng,
    pick_device,
    precision_label,
    release_cached_memory,
    reseed_cudnn_dropout,
    synchronize,
    use_bf16,
)
from charrnn_tui.engine.model.model import CharRNN, State
from charrnn_tui.engine.model.sampling import TextGenerator
from charrnn_tui.engine.model.step import TrainStep
from charrnn_tui.engine.overfitting import read_history
from charrnn_tui.engine.printable import percent
from charrnn_tui.engine.run import schedule
from charrnn_tui.engine.run.batch_size import (
    AUTO_BATCH_LIMIT,
    is_out_of_memory,
    largest_fitting,
    memory_limited,
    with_headroom,
)
from charrnn_tui.engine.run.distributed import Peers, ProcessGroup, World, check_batch, state_rows
from charrnn_tui.engine.run.gpu_monitor import GpuMonitor
from charrnn_tui.engine.run.metrics import MetricsLog, require_tensorboard
from charrnn_tui.engine.run.run import Run
from charrnn_tui.engine.run.schedule import Schedule
from charrnn_tui.engine.run.threads import available_cores
from charrnn_tui.engine.runs import (
    LATEST,
    RunLock,
    default_run_name,
    keep_step_copy,
    new_run_dir,
    remove_partial_writes,
    require_own_run_dir,
    run_hint,
)
from charrnn_tui.engine.text.corpus import Corpus, corpus_spec, load_corpus
from charrnn_tui.engine.text.data import (
    LAYOUT,
    Batcher,
    legacy_epoch_float,
    make_batcher,
    split_tokens,
    validation_ids,
)
from charrnn_tui.engine.text.novelty import BackgroundIndex
from charrnn_tui.engine.text.run_text import TextFingerprint, describe_change, save_validation
from charrnn_tui.engine.text.vocab import CharVocab, WordVocab, build_vocab, vocab_from_dict

# Fields a user may change when resuming; the rest must match the checkpoint.
RESUMABLE_OVERRIDES = (
    "max_steps", "max_epochs", "max_time", "early_stop", "eval_interval", "eval_tokens", "checkpoint_interval",
    "keep_checkpoints", "report_interval", "sample_interval", "sample_length", "temperature", "top_k", "top_p",
    "device", "precision", "threads", "lr", "grad_clip", "warmup_steps", "batch_size", "auto_batch_size", "seq_len",
    "lr_decay", "tensorboard", "fit_eval_interval", "fit_batch_size",
)


class RunSetup:
    # What the run it is mixed into holds and does (engine/run/trainer.py's Trainer, which sets these
    # in its __init__, with engine/run/control.py): named here for the type checker.
    config: cfg.TrainConfig  # a resumed run's is its checkpoint's, read by _setup
    resume_path: Path | None
    overrides: dict[str, Any]
    loaded_corpus: Corpus | None
    run_name: str | None
    runs_dir: Path
    world: World
    built: Run | None  # None until _setup has built the run (`run` is the method that runs it)
    peers: Peers  # Alone: one process; set-up makes it the ProcessGroup of a distributed run
    device: torch.device | None  # None until _setup has picked it (before it builds the run)
    gpu_monitor: GpuMonitor | None
    state: str
    paused: bool
    pause_on_save_error: bool
    step: int
    train_seconds: float
    saved_step: int

    if TYPE_CHECKING:
        def emit(self, event: Event) -> None: ...
        def _fail(self, message: str) -> None: ...
        def _set_state(self, state: str, reason: str = "") -> None: ...
        def _report(self) -> bool: ...
        def _position(self) -> schedule.Position: ...

    def _built(self) -> Run:
        assert self.built is not None, "set-up has built the run"
        return self.built

    # What the run is made of, read-only, for callers outside engine/run/ (and tests); the run's own
    # files read `self.built`. The optional ones are None until set-up has made them.
    @property
    def vocab(self) -> CharVocab | WordVocab:
        return self._built().vocab

    @property
    def model(self) -> CharRNN:
        return self._built().model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._built().optimizer

    @property
    def bf16(self) -> bool:
        return self._built().bf16

    @property
    def train_ids(self) -> torch.Tensor:
        return self._built().train_ids

    @property
    def val_ids(self) -> torch.Tensor:
        return self._built().val_ids

    @property
    def batcher(self) -> Batcher:
        return self._built().batcher

    @property
    def generator(self) -> TextGenerator:
        return self._built().generator

    @property
    def schedule(self) -> Schedule:
        return self._built().schedule

    @property
    def train_step(self) -> TrainStep | None:
        return self.built.train_step if self.built is not None else None

    @property
    def run_dir(self) -> Path | None:  # the leader's, once _place_run has made or found it
        return self.built.run_dir if self.built is not None else None

    @property
    def lock(self) -> RunLock | None:
        return self.built.lock if self.built is not None else None

    @property
    def metrics(self) -> MetricsLog | None:
        return self.built.metrics if self.built is not None else None

    @property
    def copy_index(self) -> BackgroundIndex | None:
        return self.built.copy_index if self.built is not None else None

    @property
    def info(self) -> RunInfo | None:
        return self.built.info if self.built is not None else None

    @property
    def corpus(self) -> Corpus | None:
        return self.built.corpus if self.built is not None else None

    @property
    def text_fingerprint(self) -> TextFingerprint | None:
        return self.built.text_fingerprint if self.built is not None else None

    # ---- set-up -------------------------------------------------------------------------------
    def _setup(self) -> None:
        checkpoint = None
        if self.resume_path is not None:
            checkpoint = load_checkpoint(self.resume_path)
            self.config = resumed_config(checkpoint, self.overrides)
        config = self.config
        cfg.validate(config)
        if config.tensorboard:
            require_tensorboard()  # before anything is made: a run that cannot log as asked does not start
        torch.manual_seed(config.seed)

        corpus, self.loaded_corpus = self.loaded_corpus, None
        if corpus is None or checkpoint is not None:
            corpus = self._load_corpus(config, checkpoint)
        # What checkpoints and RUN/validation.pt record from now on: the text as trained on now.
        fingerprint = TextFingerprint.of(corpus.text)
        if checkpoint is not None:
            vocab = vocab_from_dict(checkpoint["vocab"])
        else:
            vocab = build_vocab(corpus.text, config.tokens, config.min_freq)
        try:
            ids = vocab.encode(corpus.text)
        except CharRNNError as e:
            change = corpus_change(checkpoint, corpus.text, fingerprint) or "changed"
            raise CheckpointError(f"corpus {corpus.source} {change} since the checkpoint: {e}; put back the "
                                  "text it trained on to resume, or start a new run on this one") from None
        train_ids, val_ids = split_tokens(ids, config.val_fraction)
        if config.top_k is not None and config.top_k > len(vocab):
            raise ConfigError(f"top-k {config.top_k} is larger than the vocabulary ({len(vocab)} tokens)")

        world = self.world
        self.device = device = self._pick_device(config.device)
        configure_backends(device, config.threads or self._default_threads(device))
        if world.distributed and not config.auto_batch_size:
            check_batch(config.batch_size, world)  # the same on every rank: they all stop here, or none
        bf16 = use_bf16(device, config.precision)
        self.gpu_monitor = GpuMonitor(device) if world.leader else None
        config.model.vocab_size = len(vocab)
        model = CharRNN(config.model).to(device)
        optimizer = make_optimizer(model, config, device)
        train_step = TrainStep(model, optimizer, device, bf16=bf16, grad_clip=config.grad_clip)
        on_device = train_ids.to(device)
        probed = config.auto_batch_size and (checkpoint is None or self.overrides.get("auto_batch_size")
                                             or config.seq_len != checkpoint["config"]["seq_len"])
        preset_batch = config.batch_size
        if probed:
            config.batch_size = self._auto_batch_size(len(train_ids), model, train_step, len(vocab))
        elif checkpoint is None and config.fit_batch_size:
            config.batch_size = cfg.fitted_batch_size(preset_batch, config.seq_len, len(train_ids))
        group: ProcessGroup | None = None
        if world.distributed:
            self.peers = group = ProcessGroup(world, device)
            if probed:  # each rank probed its own memory: the smallest decides (a resume keeps the batch)
                config.batch_size = self._distributed_batch_size(group, config.batch_size, len(train_ids))
                check_batch(config.batch_size, world)
        # From here the run is built: what follows restores it, or places it, with the leader's
        # folder, lock, logs and corpus filled in last (a follower has none).
        self.built = run = Run(
            config=config, device=device, bf16=bf16, vocab=vocab, model=model, optimizer=optimizer,
            train_step=train_step, train_ids=on_device, val_ids=validation_ids(val_ids, config.eval_tokens).to(device),
            batcher=make_batcher(config.sampler, on_device, config.batch_size, config.seq_len, config.seed),
            generator=TextGenerator(model, vocab), schedule=Schedule(), peers=self.peers,
            text_fingerprint=fingerprint if world.leader else None,
        )
        self.temperature = config.temperature

        self.train_state: State | None = None
        self.train_seconds = 0.0
        self.tokens_seen = 0
        self.losses = LossHistory()
        self.val_history: list[tuple[int, float]] = []
        self.train_at_eval: list[tuple[int, float]] = []  # mean training loss before each evaluation
        self.samples: list[tuple[int, str]] = []
        self.best_val = math.inf
        self.evals_since_best = 0  # counted, not read off val_history: thinning drops points
        self.first_after_best: int | None = None  # the step of the first evaluation after the best
        if checkpoint is None and config.fit_eval_interval:
            config.eval_interval = cfg.fitted_eval_interval(config, len(train_ids))
        self.plan_notes = [] if checkpoint is not None else self._plan_notes(preset_batch, probed)
        failed: CharRNNError | None = None
        try:
            if world.leader:
                self._place_run(checkpoint, corpus.name)
            elif checkpoint is not None:  # a follower trains; the leader keeps the folder, lock and logs
                self._restore(checkpoint)
                self._resume_schedule(checkpoint)
        except CharRNNError as e:
            if group is None:
                raise
            failed = e
        if group is not None:
            # Every rank stops here if one failed or built a different run (a machine with another
            # corpus file or a stale checkpoint); otherwise DDP starts them all from rank 0's weights.
            group.agree(run_fingerprint(config, vocab, corpus.text, self.step, run.batcher, checkpoint),
                             failed)
            if not world.leader:  # its own dropout masks (rank 0's are the run's, in checkpoints)
                torch.manual_seed(config.seed + 1_000_003 * world.rank + self.step)
            train_step.distribute(group.wrap(model), world.size)
            if not world.leader:
                return
        self.saved_step = self.step
        run_dir = run.run_dir
        assert run_dir is not None, "the leader's _place_run has made or found it"
        run.metrics = MetricsLog(run_dir, resumed_step=self.step if checkpoint is not None else None,
                                 tensorboard=config.tensorboard)
        # Samples are checked for text copied from the corpus once this index is built.
        run.copy_index = BackgroundIndex(corpus.text)
        run.corpus = dataclasses.replace(corpus, text="")  # the ids are all training needs from here

        m = config.model
        run.info = info = RunInfo(
            run_name=run_dir.name, run_dir=str(run_dir), corpus_name=corpus.name,
            corpus_source=corpus.source, corpus_chars=len(corpus.text), train_tokens=len(train_ids),
            val_tokens=len(run.val_ids), token_kind=vocab.kind, vocab_size=len(vocab), model_kind=m.kind,
            layers=m.layers, hidden=m.hidden, embedding=m.embedding, parameters=model.num_parameters(),
            device=device.type, device_name=describe_device(device) + (
                f" × {plural(world.size, 'process')} ({group.backend})" if group is not None else ""),
            precision=precision_label(device, bf16), preset=config.preset, batch_size=config.batch_size,
            seq_len=config.seq_len, max_steps=config.max_steps, max_epochs=config.max_epochs,
            max_time=config.max_time, resumed_step=self.step, config=cfg.to_dict(config), world_size=world.size,
        )
        self.emit(Started(info, self.losses.to_dict(), tuple(self.val_history), tuple(self.samples)))
        self._keep_run_text(run_dir, checkpoint, corpus, val_ids, fingerprint)
        if len(run.val_ids) < len(val_ids):
            self.emit(Notice(f"validation reads the first {len(run.val_ids):,} of the split's {len(val_ids):,} "
                             "tokens, the same ones every time (--eval-tokens N or all to change it)"))
        size = checkpoint_bytes(model, optimizer)
        if size >= LARGE_CHECKPOINT:
            copies = 2 + config.keep_checkpoints  # latest, best and the step-N copies of earlier latests
            self.emit(Notice(f"each checkpoint is about {size / 2**20:,.0f} MB (the weights and the optimizer's "
                             f"state): up to {copies} of them in {run_dir} (--keep-checkpoints)", "warning"))

    def _plan_notes(self, preset_batch: int, probed: bool) -> list[str]:
        """How a new run's batch and learning rate suit its text, in words for start-up."""
        run = self._built()
        config, notes = self.config, []
        epoch = run.batcher.batches_in_epoch()
        if not probed and config.batch_size < preset_batch:
            before = len(run.train_ids) // (preset_batch * config.seq_len)
            notes.append(f"batch-size {preset_batch} lowered to {config.batch_size} for {plural(epoch, 'step')} an "
                         f"epoch, not {before:,} (--batch-size sets it)")
        if config.lr_decay and not schedule.has_limit(config):
            notes.append(schedule.describe_open_ended(epoch))
        return notes

    def _load_corpus(self, config: cfg.TrainConfig, checkpoint: dict[str, Any] | None) -> Corpus:
        try:
            return load_corpus(config.corpus, csv_column=config.csv_column, ascii_only=config.ascii,
                               encoding=config.encoding)
        except CorpusError:
            spec = config.corpus
            if checkpoint is None or not spec or spec in BUNDLED or Path(spec).expanduser().exists():
                raise  # not gone, but unreadable: its own message says why
            # Training on needs the text itself; `eval` needs only what the run kept (engine/text/run_text.py).
            assert self.resume_path is not None, "the checkpoint's"
            run = self.resume_path.parent
            raise CorpusError(f"corpus {spec} of run {run.name} is gone: put the file back there to resume "
                              f"(`{run_hint('eval', run)}` still scores the validation text the run kept)") from None

    def _keep_run_text(self, run_dir: Path, checkpoint: dict[str, Any] | None, corpus: Corpus,
                       val_ids: torch.Tensor, fingerprint: TextFingerprint) -> None:
        """Say what a resume does with a changed corpus, and keep the validation split, as cut from
        the text trained on now, in the run folder (rewritten at each start), for `eval RUN`."""
        run = self._built()
        change = corpus_change(checkpoint, corpus.text, fingerprint)
        if change is not None:
            unknown = ", words its vocabulary lacks read as <unk>," if run.vocab.kind == "word" else ""
            self.emit(Notice(f"corpus {corpus.source} {change} since the checkpoint (step {self.step:,}): the run "
                             f"goes on with the text as it is now{unknown} and validates on its last "
                             f"{percent(self.config.val_fraction)} (earlier figures scored the old text)", "warning"))
        try:
            save_validation(run_dir, val_ids, corpus.source, fingerprint)
        except CheckpointError as e:  # the run is not worse for it: `eval` falls back to the corpus file
            self.emit(Notice(f"{e}: `{run_hint('eval', run_dir)}` will need the corpus file", "warning"))

    def _place_run(self, checkpoint: dict[str, Any] | None, corpus_name: str) -> None:
        """The run's folder and lock: the checkpoint's, restored from, or a new one."""
        config = self.config
        run = self._built()
        if checkpoint is not None:
            assert self.resume_path is not None, "the checkpoint's"
            run.run_dir = self.resume_path.parent
            require_own_run_dir(run.run_dir)  # yours, a real folder, only you can add files: it is written to
            run.lock = RunLock(run.run_dir).acquire()
            remove_partial_writes(run.run_dir)
            self._restore(checkpoint)
            self._resume_schedule(checkpoint)
        else:
            name = self.run_name or default_run_name(corpus_name, config.model.kind, config.model.hidden,
                                                         config.model.layers)
            run.run_dir = new_run_dir(self.runs_dir, name, exact=bool(self.run_name))  # --name X: X or an error
            run.lock = RunLock(run.run_dir).acquire()

    def _pick_device(self, name: str) -> torch.device:
        device = pick_device(name)
        if not self.world.distributed:
            return device
        if device.type == "mps":
            raise ConfigError("a run on several processes trains on CUDA GPUs or CPUs, not Apple MPS: "
                              "--device cpu")
        if device.type == "cuda":  # one GPU per local rank, or the one GPU a launcher left each process
            count = torch.cuda.device_count()
            if count != 1 and self.world.local_rank >= count:
                raise ConfigError(f"local rank {self.world.local_rank} has no GPU of its own: this machine has "
                                  f"{count}; start at most {plural(count, 'process')} on it (--nproc-per-node)")
            device = torch.device("cuda", 0 if count == 1 else self.world.local_rank)
            torch.cuda.set_device(device)
        return device

    def _default_threads(self, device: torch.device) -> int | None:
        """CPU processes of a distributed run share the machine's cores; one process keeps torch's
        choice (and its engine balances it against other runs: engine/run/threads.py)."""
        if not self.world.distributed or device.type != "cpu":
            return None
        return max(1, available_cores() // self.world.local_size)

    def _distributed_batch_size(self, group: ProcessGroup, fits_one_process: int, train_tokens: int) -> int:
        """--batch-size auto over several processes: each holds 1/N of the streams, so N times what
        fits the tightest one, a multiple of N, and within the text."""
        size, device = self.world.size, self.device
        assert device is not None, "picked before the batch size"
        if not memory_limited(device):  # the preset's batch (the same on every rank), split evenly
            return max(size, fits_one_process // size * size)
        limit = max(1, min(AUTO_BATCH_LIMIT * size, (train_tokens - 1) // self.config.seq_len))
        if self.config.fit_batch_size:
            limit = cfg.fitted_batch_size(limit, self.config.seq_len, train_tokens)
        chosen = max(size, min(group.min_int(fits_one_process) * size, limit) // size * size)
        self.emit(Notice(f"--batch-size auto over {plural(size, 'process')}: batch-size {chosen} "
                         f"({plural(chosen // size, 'stream')} each)"))
        return chosen

    def _auto_batch_size(self, train_tokens: int, model: CharRNN, train_step: TrainStep, vocab_size: int) -> int:
        """The largest batch that fits in the device's memory (with some headroom), found by
        probing with the model and step set-up has built; or the preset's where memory is not the
        limit."""
        config, device = self.config, self.device
        assert device is not None, "picked before the batch size"
        limit = max(1, min(AUTO_BATCH_LIMIT, (train_tokens - 1) // config.seq_len))  # a window per stream
        fitted = cfg.fitted_batch_size(limit, config.seq_len, train_tokens) if config.fit_batch_size else limit
        capped, limit = fitted < limit, fitted  # an epoch of a few hundred steps
        if not memory_limited(device):
            chosen = min(config.batch_size, limit)
            self.emit(Notice(f"--batch-size auto: memory is not the limit on a {device.type}, so the "
                             f"preset's measured batch size {chosen} is used"))
            return chosen
        # Room for AdamW's two moments, which the probe's passes don't allocate.
        reserve = [torch.empty_like(p) for p in model.parameters() for _ in range(2)]
        largest = largest_fitting(lambda batch: self._batch_fits(batch, model, train_step, vocab_size),
                                  config.batch_size, limit)
        del reserve
        if largest == 0:
            raise ConfigError(f"out of {device.type} memory even at batch-size 1 with seq-len "
                              f"{config.seq_len}: lower --seq-len or --hidden")
        chosen = largest if largest == limit else with_headroom(largest)
        if capped and chosen == limit:
            self.emit(Notice(f"--batch-size auto: batch-size {chosen}, the largest that keeps {cfg.EPOCH_STEPS} "
                             f"steps an epoch on this text ({train_tokens:,} tokens at seq-len {config.seq_len}); "
                             f"{device.type} memory holds it"))
            return chosen
        self.emit(Notice(f"--batch-size auto: {largest} fit in {device.type} memory at seq-len "
                         f"{config.seq_len}; training with batch-size {chosen}"))
        return chosen

    def _batch_fits(self, batch: int, model: CharRNN, train_step: TrainStep, vocab_size: int) -> bool:
        """Whether a forward and backward pass at this batch size fits in the device's memory."""
        device = self.device
        assert device is not None, "picked before the batch size is probed"
        try:
            with fork_rng(device), model.dropout_off():  # the run's random streams stay as they were
                x = torch.arange(batch * self.config.seq_len, device=device).remainder(vocab_size)
                x = x.view(batch, self.config.seq_len)
                train_step.loss(x, x, None)[0].backward()
                synchronize(device)
            fits = True
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(e):
                raise
            fits = False
        model.zero_grad(set_to_none=True)
        release_cached_memory(device)
        return fits

    # ---- resuming -----------------------------------------------------------------------------
    def _same_batch_shape(self, ck: dict[str, Any]) -> bool:
        old = ck["config"]
        return ((old["batch_size"], old["seq_len"]) == (self.config.batch_size, self.config.seq_len)
                and ck["batcher"].get("layout") == LAYOUT)

    def _restore(self, ck: dict[str, Any]) -> None:
        run = self._built()
        device = run.device
        try:
            run.model.load_state_dict(ck["model"])
            load_optimizer_state(run.optimizer, ck["optimizer"])
            self._restore_position(ck)
            self.step = int(ck["step"])
            self.train_seconds = float(ck["train_seconds"])
            self.tokens_seen = int(ck["tokens_seen"])
            saved_state = ck["train_state"] if self._same_batch_shape(ck) else None
            if saved_state:
                moved = state_rows(tuple(t.to(device, torch.float32) for t in saved_state), self.world,
                                   self.config.batch_size)
                self.train_state = (moved[0], moved[1]) if len(moved) == 2 else moved[0]  # an LSTM's (h, c)
            history = ck["history"]
            if "losses" in history:
                self.losses = LossHistory.from_dict(history["losses"])
            else:  # before the history was bounded, checkpoints held every loss
                self.losses = LossHistory.from_losses(history["train"].tolist())
            self.val_history = [(int(s), float(v)) for s, v in history["val"]]
            self.train_at_eval = [(int(s), float(v)) for s, v in history.get("train_at_eval", [])]
            self.samples = [(int(s), str(t)) for s, t in history["samples"]]
            self.best_val = float(ck["best_val"])
            if "since_best" in history:
                self.evals_since_best = int(history["since_best"])
                after = history.get("first_after_best")
                self.first_after_best = None if after is None else int(after)
            else:  # saved before the history was thinned: every evaluation is in it
                self.evals_since_best = read_history(self.val_history, {}).since_best
                after = len(self.val_history) - self.evals_since_best  # the index of the first after the best
                self.first_after_best = self.val_history[after][0] if self.evals_since_best else None
            torch.set_rng_state(ck["rng"]["torch"])
            if device.type == "cuda" and ck["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(ck["rng"]["cuda"], device)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise CheckpointError(f"{self.resume_path}: checkpoint contents do not match its config ({e})") from None

    def _resume_schedule(self, ck: dict[str, Any]) -> None:
        """The schedule as the checkpoint left it; then, if the resume gives new stop conditions,
        those replace the run's (each an amount of training more, 0 for none) and a new segment of
        the schedule starts here."""
        run = self._built()
        position = self._position()
        if "schedule" in ck:
            try:
                run.schedule = Schedule.from_dict(ck["schedule"])
            except (ValueError, TypeError) as e:
                raise CheckpointError(f"{self.resume_path}: {e}") from None
        else:  # written before schedules were saved: a run with a limit goes on as it did; an open-ended
            # one through the cosine of its first 10 epochs (the one it followed, with no time bound),
            # then back at the peak with the plateau rule where it used to hold its floor
            run.schedule.cosine_seconds = None
        more = {k: v for k, v in self.overrides.items() if k in schedule.LIMITS and v is not None}
        keep = bool(self.overrides.get("keep_schedule"))
        if not more:
            if keep:
                raise ConfigError("--keep-schedule goes with a new stop condition (--max-steps, --max-epochs or "
                                  "--max-time: how much more to train)")
            reached = schedule.limit_reached(self.config, position.step, position.epoch, position.seconds)
            if reached:
                assert self.resume_path is not None, "the checkpoint's"  # in the run's folder (a follower has none)
                raise ConfigError(f"run {self.resume_path.parent.name} already {reached}: give --max-steps, "
                                  "--max-epochs or --max-time for more training (how much more), or --max-time 0 "
                                  "to train until stopped")
            return
        current = run.schedule.rate(self.config, position)
        old = schedule.describe_limits(self.config)
        for limit in schedule.LIMITS:
            amount = more.get(limit)
            end = None if not amount else position.of(limit) + amount
            setattr(self.config, limit, int(end) if limit == "max_steps" and end is not None else end)
        change = run.schedule.restart(self.config, position, current, keep)
        new = schedule.describe_limits(self.config, position)
        self.emit(Notice(f"resumed at step {position.step:,}: {new}" + (f" (was {old})" if old != new else "")
                         + f"; {change}"))

    def _restore_position(self, ck: dict[str, Any]) -> None:
        run = self._built()
        if self._same_batch_shape(ck):
            run.batcher.load_state_dict(ck["batcher"])
            return
        # Resumed with another batch shape (say, a smaller batch after running out of memory), or
        # from a checkpoint of an earlier layout: the same point of the epoch, with the hidden
        # state restarting.
        c, old = self.config, ck["config"]
        if ck["batcher"].get("layout") == LAYOUT:
            before = make_batcher(c.sampler, run.train_ids, old["batch_size"], old["seq_len"], c.seed)
            before.load_state_dict(ck["batcher"])
            epoch = before.epoch_float
            changed = (f"with batch-size {c.batch_size} x seq-len {c.seq_len} (the run had "
                       f"{old['batch_size']} x {old['seq_len']})")
        else:
            epoch = legacy_epoch_float(c.sampler, ck["batcher"], old["batch_size"], old["seq_len"],
                                       len(run.train_ids))
            changed = "from a checkpoint of an earlier version, whose batches were cut differently,"
        run.batcher.seek(epoch)
        self.emit(Notice(f"resumed {changed} at epoch {epoch:.2f}; the hidden state starts afresh"))

    # ---- checkpoints --------------------------------------------------------------------------
    def _save(self, name: str) -> bool:
        """Write a checkpoint; False if it could not be written (and, for a UI, training is paused)."""
        if self.state == "error":
            return False  # never write weights from a failed run over a good checkpoint
        run = self._built()
        assert run.run_dir is not None, "the leader's set-up has placed the run"
        payload = self._checkpoint_payload()
        broken = non_finite_tensor(payload)
        if broken is not None:
            self._fail(f"{broken} is not finite at step {self.step}; not saved. {self._last_good_checkpoint()}")
            return False
        path = run.run_dir / name
        try:
            save_checkpoint(payload, path)
        except CheckpointError as e:
            self.emit(Notice(str(e), "warning"))  # the run goes on (or, in a UI, pauses): not an error yet
            if self.pause_on_save_error and not self.paused:
                self.paused = True
                self._set_state("paused", "checkpoint failed")
            return False
        reseed_cudnn_dropout(run.device)  # a run resumed from this file draws the same dropout masks
        if name == LATEST:
            self.saved_step = self.step
            keep_step_copy(path, self.step, self.config.keep_checkpoints)
        self.emit(CheckpointSaved(str(path), self.step, name.removesuffix(".pt"), time.time()))
        return True

    def _save_final(self) -> bool:
        # A failed write loses nothing when the latest checkpoint already holds every step.
        return self._save(LATEST) or self.step == self.saved_step

    def _save_after_out_of_memory(self) -> None:
        # An allocation that fails outside the optimizer's update leaves the weights of the last
        # whole step, which are worth keeping; a failure inside it may leave them half-updated.
        run = self.built
        if run is None or run.train_step.updating or self.step <= self.saved_step:
            return
        release_cached_memory(run.device)
        try:
            if self._report():  # read the pending losses first: never save over a NaN
                self._save(LATEST)
        except Exception as e:
            if not is_out_of_memory(e):
                raise

    def _fail_unsaved(self) -> None:
        # Headless, nobody can retry the save: end as an error so the exit status says so.
        if self.state == "error":
            return  # the save found non-finite weights: that is the error to report
        last = f"the last checkpoint is step {self.saved_step}" if self.saved_step else "nothing was saved"
        self._fail(f"the final checkpoint could not be written, so steps {self.saved_step + 1}-{self.step} "
                   f"are lost; {last}")

    def _last_good_checkpoint(self) -> str:
        if not self.saved_step:
            return "Nothing was saved; start again with a lower --lr"
        return f"Resume from the last checkpoint (step {self.saved_step}) with a lower --lr"

    def _remove_empty_run_dir(self) -> None:
        # A run that failed before its first checkpoint leaves nothing behind.
        run_dir = self.built.run_dir if self.built is not None else None
        if run_dir is not None and self.resume_path is None and run_dir.is_dir():
            leftovers = [p for p in run_dir.iterdir() if p.name != ".lock"]
            if not leftovers:
                (run_dir / ".lock").unlink(missing_ok=True)
                run_dir.rmdir()

    def _carried_state(self) -> tuple[torch.Tensor, ...]:
        """This process's carried state (its block of the batch's streams), as a tuple."""
        state = self.train_state
        return () if state is None else state if isinstance(state, tuple) else (state,)

    def _checkpoint_payload(self) -> dict[str, Any]:
        run = self._built()
        device, run_dir, corpus, fingerprint = run.device, run.run_dir, run.corpus, run.text_fingerprint
        assert run_dir is not None and corpus is not None and fingerprint is not None, "the leader's, once placed"
        # The whole batch's state (a distributed run's leader gathers every rank's block), in float32
        # whatever autocast made it: resumable either way
        saved_state = [t.float().cpu() for t in self.peers.gather_state(self._carried_state())]
        return {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "vocab": run.vocab.to_dict(),
            "config": cfg.to_dict(self.config),
            "step": self.step,
            "train_seconds": self.train_seconds,
            "tokens_seen": self.tokens_seen,
            "batcher": run.batcher.state_dict(),
            "train_state": saved_state,
            "best_val": self.best_val,
            "schedule": run.schedule.to_dict(),
            "history": {
                "losses": self.losses.to_dict(),
                "val": [list(v) for v in self.val_history],
                "train_at_eval": [list(v) for v in self.train_at_eval],
                "since_best": self.evals_since_best,
                "first_after_best": self.first_after_best,
                "samples": [list(s) for s in self.samples],
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


def corpus_change(checkpoint: dict[str, Any] | None, text: str, fingerprint: TextFingerprint) -> str | None:
    """How the resumed run's corpus changed since its checkpoint; None if it did not, for a new
    run, or for a checkpoint from before fingerprints (nothing to compare with). `fingerprint` is
    the text's, as read now."""
    stored = TextFingerprint.from_dict(checkpoint.get("corpus_fingerprint")) if checkpoint is not None else None
    if stored is None or stored == fingerprint:  # the usual case: the text is not hashed again
        return None
    return describe_change(stored, text)


def run_fingerprint(config: cfg.TrainConfig, vocab: CharVocab | WordVocab, text: str, step: int, batcher: Batcher,
                    checkpoint: dict[str, Any] | None) -> str:
    """What every rank of a distributed run must agree on: settings, text, vocabulary and where
    training stands (a stale copy of the checkpoint on one machine differs in step or save time)."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass"))
    saved_at = checkpoint.get("saved_at") if checkpoint is not None else None
    digest.update(json.dumps([cfg.to_dict(config), vocab.to_dict(), step, batcher.state_dict(), saved_at],
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()


def make_optimizer(model: CharRNN, config: cfg.TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    # Fused AdamW on CUDA: one kernel for all parameters, no host sync.
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


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
    (`RunSetup._resume_schedule`)."""
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
