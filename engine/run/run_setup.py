"""Run set-up: the steps that build what a run is made of (engine/run/run.py's Run) from a config,
or from a checkpoint's, each a function of what it reads that returns what it makes.

`build_run` calls them in order, for the Trainer's `setup` (engine/run/trainer.py);
engine/run/checkpoints.py restores a resumed run's state into what they build."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from charrnn_tui.corpora import BUNDLED
from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.errors import CharRNNError, CheckpointError, ConfigError, CorpusError
from charrnn_tui.engine.events import Notice, RunInfo, Started
from charrnn_tui.engine.model.device import (
    configure_backends,
    describe_device,
    fork_rng,
    pick_device,
    precision_label,
    release_cached_memory,
    synchronize,
    use_bf16,
)
from charrnn_tui.engine.model.model import CharRNN
from charrnn_tui.engine.model.sampling import TextGenerator
from charrnn_tui.engine.model.step import TrainStep
from charrnn_tui.engine.printable import percent
from charrnn_tui.engine.run import schedule
from charrnn_tui.engine.run.batch_size import (
    AUTO_BATCH_LIMIT,
    is_out_of_memory,
    largest_fitting,
    memory_limited,
    with_headroom,
)
from charrnn_tui.engine.run.checkpoints import (
    LARGE_CHECKPOINT,
    checkpoint_bytes,
    corpus_change,
    restore,
    resume_schedule,
)
from charrnn_tui.engine.run.distributed import Alone, Peers, ProcessGroup, World, check_batch
from charrnn_tui.engine.run.gpu_monitor import GpuMonitor
from charrnn_tui.engine.run.metrics import MetricsLog, require_tensorboard
from charrnn_tui.engine.run.run import EventSink, Run, Trained
from charrnn_tui.engine.run.schedule import Schedule
from charrnn_tui.engine.run.threads import available_cores
from charrnn_tui.engine.runs import (
    RunLock,
    default_run_name,
    new_run_dir,
    remove_partial_writes,
    require_own_run_dir,
    run_hint,
)
from charrnn_tui.engine.text.corpus import Corpus, load_corpus
from charrnn_tui.engine.text.data import Batcher, make_batcher, split_tokens, validation_ids
from charrnn_tui.engine.text.novelty import BackgroundIndex
from charrnn_tui.engine.text.run_text import TextFingerprint, save_validation
from charrnn_tui.engine.text.vocab import CharVocab, WordVocab, build_vocab, vocab_from_dict


@dataclass
class TextSplit:
    """The corpus as the run reads it: its vocabulary and its ids, cut into training and validation."""

    corpus: Corpus
    fingerprint: TextFingerprint  # of the text as read now: what checkpoints and RUN/validation.pt record
    vocab: CharVocab | WordVocab
    train_ids: torch.Tensor  # on the CPU
    val_ids: torch.Tensor  # the whole validation split, on the CPU


def read_text(config: cfg.TrainConfig, checkpoint: dict[str, Any] | None, corpus: Corpus | None,
              resume_path: Path | None) -> TextSplit:
    """The corpus (read already by the command line, or read here; a resumed run's always here,
    as its checkpoint names it), with the checkpoint's vocabulary or a new one."""
    if corpus is None or checkpoint is not None:
        corpus = load_run_corpus(config, checkpoint, resume_path)
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
    return TextSplit(corpus, fingerprint, vocab, train_ids, val_ids)


def load_run_corpus(config: cfg.TrainConfig, checkpoint: dict[str, Any] | None, resume_path: Path | None) -> Corpus:
    try:
        return load_corpus(config.corpus, csv_column=config.csv_column, ascii_only=config.ascii,
                           encoding=config.encoding)
    except CorpusError:
        spec = config.corpus
        if checkpoint is None or not spec or spec in BUNDLED or Path(spec).expanduser().exists():
            raise  # not gone, but unreadable: its own message says why
        # Training on needs the text itself; `eval` needs only what the run kept (engine/text/run_text.py).
        assert resume_path is not None, "the checkpoint's"
        run = resume_path.parent
        raise CorpusError(f"corpus {spec} of run {run.name} is gone: put the file back there to resume "
                          f"(`{run_hint('eval', run)}` still scores the validation text the run kept)") from None


def pick_run_device(name: str, world: World) -> torch.device:
    device = pick_device(name)
    if not world.distributed:
        return device
    if device.type == "mps":
        raise ConfigError("a run on several processes trains on CUDA GPUs or CPUs, not Apple MPS: --device cpu")
    if device.type == "cuda":  # one GPU per local rank, or the one GPU a launcher left each process
        count = torch.cuda.device_count()
        if count != 1 and world.local_rank >= count:
            raise ConfigError(f"local rank {world.local_rank} has no GPU of its own: this machine has "
                              f"{count}; start at most {plural(count, 'process')} on it (--nproc-per-node)")
        device = torch.device("cuda", 0 if count == 1 else world.local_rank)
        torch.cuda.set_device(device)
    return device


def default_threads(device: torch.device, world: World) -> int | None:
    """CPU processes of a distributed run share the machine's cores; one process keeps torch's
    choice (and its engine balances it against other runs: engine/run/threads.py)."""
    if not world.distributed or device.type != "cpu":
        return None
    return max(1, available_cores() // world.local_size)


def make_optimizer(model: CharRNN, config: cfg.TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    # Fused AdamW on CUDA: one kernel for all parameters, no host sync.
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


def auto_batch_size(config: cfg.TrainConfig, device: torch.device, train_tokens: int, train_step: TrainStep,
                    vocab_size: int, emit: EventSink) -> int:
    """The largest batch that fits in the device's memory (with some headroom), found by
    probing with the model and step set-up has built; or the preset's where memory is not the
    limit."""
    limit = max(1, min(AUTO_BATCH_LIMIT, (train_tokens - 1) // config.seq_len))  # a window per stream
    fitted = cfg.fitted_batch_size(limit, config.seq_len, train_tokens) if config.fit_batch_size else limit
    capped, limit = fitted < limit, fitted  # an epoch of a few hundred steps
    if not memory_limited(device):
        chosen = min(config.batch_size, limit)
        emit(Notice(f"--batch-size auto: memory is not the limit on a {device.type}, so the "
                    f"preset's measured batch size {chosen} is used"))
        return chosen
    # Room for AdamW's two moments, which the probe's passes don't allocate.
    reserve = [torch.empty_like(p) for p in train_step.model.parameters() for _ in range(2)]
    largest = largest_fitting(lambda batch: batch_fits(batch, config.seq_len, device, train_step, vocab_size),
                              config.batch_size, limit)
    del reserve
    if largest == 0:
        raise ConfigError(f"out of {device.type} memory even at batch-size 1 with seq-len "
                          f"{config.seq_len}: lower --seq-len or --hidden")
    chosen = largest if largest == limit else with_headroom(largest)
    if capped and chosen == limit:
        emit(Notice(f"--batch-size auto: batch-size {chosen}, the largest that keeps {cfg.EPOCH_STEPS} "
                    f"steps an epoch on this text ({train_tokens:,} tokens at seq-len {config.seq_len}); "
                    f"{device.type} memory holds it"))
        return chosen
    emit(Notice(f"--batch-size auto: {largest} fit in {device.type} memory at seq-len "
                f"{config.seq_len}; training with batch-size {chosen}"))
    return chosen


def batch_fits(batch: int, seq_len: int, device: torch.device, train_step: TrainStep, vocab_size: int) -> bool:
    """Whether a forward and backward pass at this batch size fits in the device's memory."""
    model = train_step.model
    try:
        with fork_rng(device), model.dropout_off():  # the run's random streams stay as they were
            x = torch.arange(batch * seq_len, device=device).remainder(vocab_size).view(batch, seq_len)
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


def distributed_batch_size(group: ProcessGroup, config: cfg.TrainConfig, world: World, device: torch.device,
                           fits_one_process: int, train_tokens: int, emit: EventSink) -> int:
    """--batch-size auto over several processes: each holds 1/N of the streams, so N times what
    fits the tightest one, a multiple of N, and within the text."""
    size = world.size
    if not memory_limited(device):  # the preset's batch (the same on every rank), split evenly
        return max(size, fits_one_process // size * size)
    limit = max(1, min(AUTO_BATCH_LIMIT * size, (train_tokens - 1) // config.seq_len))
    if config.fit_batch_size:
        limit = cfg.fitted_batch_size(limit, config.seq_len, train_tokens)
    chosen = max(size, min(group.min_int(fits_one_process) * size, limit) // size * size)
    emit(Notice(f"--batch-size auto over {plural(size, 'process')}: batch-size {chosen} "
                f"({plural(chosen // size, 'stream')} each)"))
    return chosen


def plan_notes(run: Run, preset_batch: int, probed: bool) -> list[str]:
    """How a new run's batch and learning rate suit its text, in words for start-up."""
    config, notes = run.config, []
    epoch = run.batcher.batches_in_epoch()
    if not probed and config.batch_size < preset_batch:
        before = len(run.train_ids) // (preset_batch * config.seq_len)
        notes.append(f"batch-size {preset_batch} lowered to {config.batch_size} for {plural(epoch, 'step')} an "
                     f"epoch, not {before:,} (--batch-size sets it)")
    if config.lr_decay and not schedule.has_limit(config):
        notes.append(schedule.describe_open_ended(epoch))
    return notes


def place_run(run: Run, resume_path: Path | None, run_name: str | None, runs_dir: Path, corpus_name: str) -> None:
    """The leader's folder and lock: the checkpoint's (a resume), or a new one."""
    if resume_path is not None:
        run.run_dir = resume_path.parent
        require_own_run_dir(run.run_dir)  # yours, a real folder, only you can add files: it is written to
        run.lock = RunLock(run.run_dir).acquire()
        remove_partial_writes(run.run_dir)
        return
    model = run.config.model
    name = run_name or default_run_name(corpus_name, model.kind, model.hidden, model.layers)
    run.run_dir = new_run_dir(runs_dir, name, exact=bool(run_name))  # --name X: X or an error
    run.lock = RunLock(run.run_dir).acquire()


def join_training(run: Run, group: ProcessGroup, world: World, text: TextSplit, step: int,
                  checkpoint: dict[str, Any] | None, failed: CharRNNError | None) -> None:
    """Every rank stops here if one failed (`failed`, this rank's) or built a different run (a
    machine with another corpus file or a stale checkpoint); otherwise DDP starts them all from
    rank 0's weights."""
    group.agree(run_fingerprint(run.config, run.vocab, text.corpus.text, step, run.batcher, checkpoint), failed)
    if not world.leader:  # its own dropout masks (rank 0's are the run's, in checkpoints)
        torch.manual_seed(run.config.seed + 1_000_003 * world.rank + step)
    run.train_step.distribute(group.wrap(run.model), world.size)


def open_leader_parts(run: Run, text: TextSplit, trained: Trained, checkpoint: dict[str, Any] | None,
                      world: World, emit: EventSink) -> None:
    """The leader's logs, copy index and description of the run, then Started, and what is worth
    saying at the start."""
    config, run_dir, corpus = run.config, run.run_dir, text.corpus
    assert run_dir is not None, "place_run has made or found it"
    run.metrics = MetricsLog(run_dir, resumed_step=trained.step if checkpoint is not None else None,
                             tensorboard=config.tensorboard)
    # Samples are checked for text copied from the corpus once this index is built.
    run.copy_index = BackgroundIndex(corpus.text)
    run.corpus = dataclasses.replace(corpus, text="")  # the ids are all training needs from here
    m, device, peers = config.model, run.device, run.peers
    run.info = info = RunInfo(
        run_name=run_dir.name, run_dir=str(run_dir), corpus_name=corpus.name,
        corpus_source=corpus.source, corpus_chars=len(corpus.text), train_tokens=len(run.train_ids),
        val_tokens=len(run.val_ids), token_kind=run.vocab.kind, vocab_size=len(run.vocab), model_kind=m.kind,
        layers=m.layers, hidden=m.hidden, embedding=m.embedding, parameters=run.model.num_parameters(),
        device=device.type, device_name=describe_device(device) + (
            f" × {plural(world.size, 'process')} ({peers.backend})" if isinstance(peers, ProcessGroup) else ""),
        precision=precision_label(device, run.bf16), preset=config.preset, batch_size=config.batch_size,
        seq_len=config.seq_len, max_steps=config.max_steps, max_epochs=config.max_epochs,
        max_time=config.max_time, resumed_step=trained.step, config=cfg.to_dict(config), world_size=world.size,
    )
    emit(Started(info, trained.losses.to_dict(), tuple(trained.val_history), tuple(trained.samples)))
    keep_run_text(run, text, checkpoint, trained.step, emit)
    whole = len(text.val_ids)
    if len(run.val_ids) < whole:
        emit(Notice(f"validation reads the first {len(run.val_ids):,} of the split's {whole:,} "
                    "tokens, the same ones every time (--eval-tokens N or all to change it)"))
    size = checkpoint_bytes(run.model, run.optimizer)
    if size >= LARGE_CHECKPOINT:
        copies = 2 + config.keep_checkpoints  # latest, best and the step-N copies of earlier latests
        emit(Notice(f"each checkpoint is about {size / 2**20:,.0f} MB (the weights and the optimizer's "
                    f"state): up to {copies} of them in {run_dir} (--keep-checkpoints)", "warning"))


def keep_run_text(run: Run, text: TextSplit, checkpoint: dict[str, Any] | None, step: int, emit: EventSink) -> None:
    """Say what a resume does with a changed corpus, and keep the validation split, as cut from
    the text trained on now, in the run folder (rewritten at each start), for `eval RUN`."""
    run_dir, corpus = run.run_dir, text.corpus
    assert run_dir is not None, "the leader's"
    change = corpus_change(checkpoint, corpus.text, text.fingerprint)
    if change is not None:
        unknown = ", words its vocabulary lacks read as <unk>," if run.vocab.kind == "word" else ""
        emit(Notice(f"corpus {corpus.source} {change} since the checkpoint (step {step:,}): the run "
                    f"goes on with the text as it is now{unknown} and validates on its last "
                    f"{percent(run.config.val_fraction)} (earlier figures scored the old text)", "warning"))
    try:
        save_validation(run_dir, text.val_ids, corpus.source, text.fingerprint)
    except CheckpointError as e:  # the run is not worse for it: `eval` falls back to the corpus file
        emit(Notice(f"{e}: `{run_hint('eval', run_dir)}` will need the corpus file", "warning"))


def run_fingerprint(config: cfg.TrainConfig, vocab: CharVocab | WordVocab, text: str, step: int, batcher: Batcher,
                    checkpoint: dict[str, Any] | None) -> str:
    """What every rank of a distributed run must agree on: settings, text, vocabulary and where
    training stands (a stale copy of the checkpoint on one machine differs in step or save time)."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass"))
    saved_at = checkpoint.get("saved_at") if checkpoint is not None else None
    digest.update(json.dumps([cfg.to_dict(config), vocab.to_dict(), step, batcher.state_dict(), saved_at],
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()


@dataclass
class Made:
    """What set-up has made so far, each part kept as soon as it exists: a failure later still names
    the device in its message, releases the other processes and removes an empty run folder."""

    device: torch.device | None = None
    peers: Peers = field(default_factory=Alone)
    run: Run | None = None
    gpu_monitor: GpuMonitor | None = None  # the leader's
    plan_notes: list[str] = field(default_factory=list)  # how the defaults suit this text, said at the start


def build_run(config: cfg.TrainConfig, checkpoint: dict[str, Any] | None, world: World, *, corpus: Corpus | None,
              resume_path: Path | None, overrides: dict[str, Any], run_name: str | None, runs_dir: Path,
              trained: Trained, emit: EventSink, made: Made) -> None:
    """Set-up, step by step: the corpus, vocabulary and split, the device, model, optimizer and batch
    size, then the Run; the leader's folder and lock; a resume's state restored into the Run and
    `trained` (engine/run/checkpoints.py); the processes of a distributed run joined; the leader's
    logs and copy index, and Started. `corpus`: read already by the command line, or None."""
    cfg.validate(config)
    if config.tensorboard:
        require_tensorboard()  # before anything is made: a run that cannot log as asked does not start
    torch.manual_seed(config.seed)
    text = read_text(config, checkpoint, corpus, resume_path)
    del corpus  # its text is the TextSplit's now

    made.device = device = pick_run_device(config.device, world)
    configure_backends(device, config.threads or default_threads(device, world))
    if world.distributed and not config.auto_batch_size:
        check_batch(config.batch_size, world)  # the same on every rank: they all stop here, or none
    bf16 = use_bf16(device, config.precision)
    made.gpu_monitor = GpuMonitor(device) if world.leader else None
    config.model.vocab_size = len(text.vocab)
    model = CharRNN(config.model).to(device)
    optimizer = make_optimizer(model, config, device)
    train_step = TrainStep(model, optimizer, device, bf16=bf16, grad_clip=config.grad_clip)
    train_tokens = len(text.train_ids)
    probed = config.auto_batch_size and (checkpoint is None or overrides.get("auto_batch_size")
                                         or config.seq_len != checkpoint["config"]["seq_len"])
    preset_batch = config.batch_size
    if probed:
        config.batch_size = auto_batch_size(config, device, train_tokens, train_step, len(text.vocab), emit)
    elif checkpoint is None and config.fit_batch_size:
        config.batch_size = cfg.fitted_batch_size(preset_batch, config.seq_len, train_tokens)
    group: ProcessGroup | None = None
    if world.distributed:
        made.peers = group = ProcessGroup(world, device)
        if probed:  # each rank probed its own memory: the smallest decides (a resume keeps the batch)
            config.batch_size = distributed_batch_size(group, config, world, device, config.batch_size,
                                                       train_tokens, emit)
            check_batch(config.batch_size, world)
    # From here the run is built: what follows places it and restores it, with the leader's
    # folder, lock, logs and corpus filled in last (a follower has none).
    on_device = text.train_ids.to(device)
    made.run = run = Run(
        config=config, device=device, bf16=bf16, vocab=text.vocab, model=model, optimizer=optimizer,
        train_step=train_step, train_ids=on_device,
        val_ids=validation_ids(text.val_ids, config.eval_tokens).to(device),
        batcher=make_batcher(config.sampler, on_device, config.batch_size, config.seq_len, config.seed),
        generator=TextGenerator(model, text.vocab), schedule=Schedule(), peers=made.peers,
        text_fingerprint=text.fingerprint if world.leader else None,
    )
    if checkpoint is None and config.fit_eval_interval:
        config.eval_interval = cfg.fitted_eval_interval(config, train_tokens)
    made.plan_notes = [] if checkpoint is not None else plan_notes(run, preset_batch, probed)
    failed: CharRNNError | None = None
    try:
        if world.leader:  # a follower trains; the leader keeps the folder, lock and logs
            place_run(run, resume_path, run_name, runs_dir, text.corpus.name)
        if checkpoint is not None:
            assert resume_path is not None, "read from it"
            restore(run, trained, checkpoint, world, resume_path, emit)
            resume_schedule(run, trained, checkpoint, overrides, resume_path, emit)
    except CharRNNError as e:
        if group is None:
            raise
        failed = e
    if group is not None:
        join_training(run, group, world, text, trained.step, checkpoint, failed)
        if not world.leader:
            return
    open_leader_parts(run, text, trained, checkpoint, world, emit)

