"""One run on several processes under torchrun: DistributedDataParallel averages the gradients
(NCCL between GPUs, gloo between CPU processes); rank 0 leads and the other ranks follow.

Rank 0 runs the whole training loop: it evaluates, samples, saves, writes metrics, prints and serves
the run's socket. Before each step it tells the followers what to do, in one small message on a
CPU (gloo) group: train a step at this learning rate, add up the losses for a report, send their
carried state for a checkpoint, or stop. So a request from the app (pause, stop, save) reaches
every rank at a step boundary, the ranks always take the same steps, and a follower needs no
clock, schedule or socket of its own. A paused leader sends nothing; its followers wait (the
control group's timeout is a week, not the default half hour).

Each rank trains on its own block of the global batch's streams and carries that block's hidden
state. A checkpoint holds the whole batch's state (gathered on rank 0), so it resumes on any
number of processes at the same global stream positions.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import torch

from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.errors import CharRNNError, ConfigError
from charrnn_tui.engine.model.step import StepLog
from charrnn_tui.engine.text.data import IGNORE, Batch

STEP, REPORT, GATHER, STOP = range(4)
AGREE_BYTES = 512  # a set-up fingerprint (32) and a rank's error message, in one all-gather
CONTROL_TIMEOUT = timedelta(days=7)  # a follower waits this long for a paused leader
# Gradients, losses and states: a rank this late is lost. All ranks enter these together, so the
# wait is only their difference in speed. On CPUs (gloo) a rank killed at the wrong moment can
# leave the others waiting inside the all-reduce rather than failing it: 20 s lets rank 0 fail
# cleanly (and say so) before torchrun, 30 s after it saw a rank die, kills what is left. NCCL
# gets longer: its communicators are set up at the first collective, across machines.
GLOO_TIMEOUT = timedelta(seconds=20)
NCCL_TIMEOUT = timedelta(minutes=10)


class DistributedError(CharRNNError):
    """Another process of the run was lost (or a collective failed)."""


@dataclass(frozen=True)
class World:
    """Where this process stands in the run: torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    forced: bool = False  # through DDP even alone (CHARRNN_FORCE_DDP=1 under torchrun: the GPU acceptance check)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1 or self.forced

    def rows(self, batch_size: int) -> slice:
        """This rank's block of a global batch's streams: equal blocks when the size divides it (it
        always does for the configured batch), blocks one apart for a short last batch of an epoch."""
        return slice(batch_size * self.rank // self.size, batch_size * (self.rank + 1) // self.size)


SINGLE = World()
# Under torchrun, "1" makes even a single process train through the process group and DDP, so that the
# multi-process path (NCCL on a GPU) can be checked on a machine with one GPU (bench/gpu_acceptance.sh).
FORCE_DDP = "CHARRNN_FORCE_DDP"


def world_from_env(environ: Mapping[str, str] = os.environ) -> World:
    """The world torchrun describes in the environment; one process without it."""
    if "WORLD_SIZE" not in environ:
        return SINGLE
    try:
        size = int(environ["WORLD_SIZE"])
        rank = int(environ.get("RANK", "0"))
        local_rank = int(environ.get("LOCAL_RANK", str(rank)))
        local_size = int(environ.get("LOCAL_WORLD_SIZE", str(size)))
    except ValueError:
        raise ConfigError("torchrun's environment is broken: RANK, WORLD_SIZE, LOCAL_RANK and "
                          "LOCAL_WORLD_SIZE must be whole numbers") from None
    if not (size >= 1 and 0 <= rank < size and 0 <= local_rank < local_size <= size):
        raise ConfigError(f"torchrun's environment is inconsistent: RANK {rank}, WORLD_SIZE {size}, "
                          f"LOCAL_RANK {local_rank}, LOCAL_WORLD_SIZE {local_size}")
    return World(rank, size, local_rank, local_size, forced=environ.get(FORCE_DDP) == "1")


def check_batch(batch_size: int, world: World) -> None:
    if batch_size % world.size:
        raise ConfigError(f"--batch-size {batch_size} does not split evenly over {plural(world.size, 'process')}: "
                          f"use a multiple of {world.size} (the batch size is the global number of streams)")


def shard(batch: Batch, world: World) -> Batch:
    """This rank's streams of a global batch. `predictions` stays the global count: the loss is
    scaled by it, so that averaged gradients equal one process's over the whole batch."""
    if not world.distributed:
        return batch
    rows = world.rows(batch.x.shape[0])
    x, y = batch.x[rows], batch.y[rows]
    if not len(x):  # a last batch with fewer windows than ranks: one unscored row, so that every
        # rank still takes the step (DDP's all-reduce needs all of them) and adds nothing to it
        x, y = batch.x[:1], torch.full_like(batch.y[:1], IGNORE)
    return Batch(x, y, batch.reset, batch.predictions)


def state_rows(state: tuple[torch.Tensor, ...], world: World, batch_size: int) -> tuple[torch.Tensor, ...]:
    """This rank's block of a whole batch's carried state (layers, batch, hidden)."""
    if not world.distributed:
        return state
    return tuple(t[:, world.rows(batch_size)].contiguous() for t in state)


GPU_ID_BYTES = 256  # a GPU's UUID (40 characters) and name, in one all-gather


def gpu_identity(device: torch.device) -> tuple[str, str]:
    """The GPU's UUID, as nvidia-smi -L writes it, and its name."""
    props = torch.cuda.get_device_properties(device)
    return f"GPU-{props.uuid}", props.name


def shared_gpus(gpus: list[tuple[str, str]]) -> str | None:
    """A one-line error when two or more ranks have the same GPU (gpus: each rank's (uuid, name),
    in rank order), naming the ranks and the GPU; None when each has its own. NCCL needs a GPU per
    process: ranks that share one fail inside it, and the user would only read that the run lost
    touch."""
    ranks: dict[str, list[int]] = {}
    for rank, (uuid, _) in enumerate(gpus):
        ranks.setdefault(uuid, []).append(rank)
    shared = [found for found in ranks.values() if len(found) > 1]
    if not shared:
        return None
    which = "; ".join(f"ranks {', '.join(map(str, found[:-1]))} and {found[-1]} share one GPU "
                      f"({gpus[found[0]][1]}, {gpus[found[0]][0]})" for found in shared)
    return (f"{which}: NCCL needs a GPU of its own for each process; start at most as many processes on a "
            "machine as it has GPUs (--nproc-per-node), or give each its own with CUDA_VISIBLE_DEVICES")


class Peers(Protocol):
    """The run's other processes, as the training loop meets them at its fixed points: before a
    step, around it, at a report, at a save, when a step fails, and at the end. A ProcessGroup
    under torchrun; Alone (which does nothing) for one process, so the loop calls these always."""

    @property
    def waiting(self) -> bool:
        """Whether the followers wait for a command: False inside a step's all-reduce that failed,
        and once a collective failed (a rank is gone), when nothing may be sent nor torn down."""
        ...

    def step(self, lr: float) -> None:
        """Before the leader's step: every follower takes it too, at this learning rate."""
        ...

    def stepping(self) -> AbstractContextManager[None]:
        """Around a step (DDP's all-reduce): `waiting` is False inside, and stays so if it fails."""
        ...

    def add_up_losses(self, log: StepLog) -> None:
        """At a report: each step's loss, every rank's share added up, in the leader's log."""
        ...

    def gather_state(self, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """At a save: the whole batch's carried state from this process's block of it."""
        ...

    def lost(self, error: BaseException) -> DistributedError | None:
        """A step that failed with `error` (not out of memory): the error that says another process
        is gone, or None when there is none to lose (the error is the step's own)."""
        ...

    def release(self) -> None:
        """At the end of the leader's run: the followers stop (unless they are not `waiting`)."""
        ...


class Alone:
    """One process: no one to command, nothing to add up or gather (Peers)."""

    waiting = True

    def step(self, lr: float) -> None:
        pass

    def stepping(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def add_up_losses(self, log: StepLog) -> None:
        pass

    def gather_state(self, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return state

    def lost(self, error: BaseException) -> DistributedError | None:
        return None

    def release(self) -> None:
        pass


class ProcessGroup:
    """The run's process group: DDP's (NCCL or gloo) and a gloo group for the leader's commands.
    The leader's loop uses it as its Peers; a follower's loop receives its commands."""

    def __init__(self, world: World, device: torch.device):
        import torch.distributed as dist

        self.world, self.device, self.dist = world, device, dist
        backend = "nccl" if device.type == "cuda" else "gloo"
        self.backend = backend
        dist.init_process_group(backend, timeout=NCCL_TIMEOUT if backend == "nccl" else GLOO_TIMEOUT)
        self.control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
        self._message = torch.zeros(2, dtype=torch.float64)
        self.waiting = True  # False: a rank may be inside a collective, or gone (Peers.waiting)
        if device.type == "cuda":
            try:  # before NCCL's first collective (DDP's broadcast), which two ranks on one GPU would fail
                self.check_own_gpus(gpu_identity(device))
            except CharRNNError:
                self.close()
                raise

    def check_own_gpus(self, gpu: tuple[str, str]) -> None:
        """Every rank's GPU (its UUID and name), compared on the control group: ranks that share one
        all stop, each with the same line, rather than fail inside NCCL."""
        uuid, name = gpu
        everyone = [text.partition("\t") for text in self.gather_texts(f"{uuid}\t{name}")]
        message = shared_gpus([(uuid, name) for uuid, _, name in everyone])
        if message is not None:
            raise ConfigError(message)

    def gather_texts(self, text: str) -> list[str]:
        """Every rank's short text (up to GPU_ID_BYTES of UTF-8), in rank order, on every rank: byte
        tensors on the control group, as `agree` sends its own."""
        data = text.encode()[:GPU_ID_BYTES]
        mine = torch.zeros(GPU_ID_BYTES, dtype=torch.uint8)
        if data:
            mine[: len(data)] = torch.tensor(list(data), dtype=torch.uint8)
        everyone = [torch.zeros_like(mine) for _ in range(self.world.size)]
        self._collective(lambda: self.dist.all_gather(everyone, mine, group=self.control))
        return [bytes(t.tolist()).rstrip(b"\0").decode(errors="replace") for t in everyone]

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as DDP trains it (its weights are rank 0's from here)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    # ---- Peers: the leader's loop at its fixed points -----------------------------------------
    def step(self, lr: float) -> None:
        self.command(STEP, lr)

    @contextlib.contextmanager
    def stepping(self) -> Iterator[None]:
        self.waiting = False
        yield  # a step that raises leaves it False: the others may be inside the all-reduce
        self.waiting = True

    def add_up_losses(self, log: StepLog) -> None:
        self.command(REPORT)
        log.add_up_losses(self.sum_)

    def gather_state(self, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        self.command(GATHER)
        return self.collect_state(state)

    def release(self) -> None:
        """The leader tells the other ranks that the run has ended. Not after a failed step: a
        follower may then be waiting inside DDP's all-reduce, not for a command."""
        if not self.waiting:
            return
        with contextlib.suppress(DistributedError):  # a follower is gone already: nobody left to tell
            self.command(STOP)
        # Torn down only here and at a follower's STOP: after an error a rank may be stuck in a
        # collective that would hang the teardown; the process's exit ends it, and torchrun the rest.
        self.close()

    # ---- the leader's commands ---------------------------------------------------------------
    def command(self, command: int, lr: float = 0.0) -> None:
        self._message[0], self._message[1] = command, lr
        self._collective(lambda: self.dist.broadcast(self._message, 0, group=self.control))

    def receive(self) -> tuple[int, float]:
        self._collective(lambda: self.dist.broadcast(self._message, 0, group=self.control))
        return int(self._message[0]), float(self._message[1])

    # ---- collectives both sides call ---------------------------------------------------------
    def sum_(self, values: torch.Tensor) -> None:
        self._collective(lambda: self.dist.all_reduce(values))

    def collect_state(self, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Every rank's block of the carried state, put back together in rank order (on every rank).
        None on one rank is None on all (they take the same batches): then nothing is sent."""
        if not state:
            return state
        whole = []
        for part in state:
            parts = [torch.empty_like(part) for _ in range(self.world.size)]
            self._collective(lambda p=part, ps=parts: self.dist.all_gather(ps, p.contiguous()))
            whole.append(torch.cat(parts, dim=1))
        return tuple(whole)

    def agree(self, fingerprint: str, failed: CharRNNError | None) -> None:
        """Every rank's set-up, compared: all go on, or all stop with the same reason (a rank that
        failed alone would leave the others waiting in DDP's first broadcast). Plain byte tensors,
        not pickled objects: torch's object collectives need numpy."""
        mine = torch.zeros(AGREE_BYTES, dtype=torch.uint8)
        mine[:32] = torch.tensor(list(bytes.fromhex(fingerprint)[:32]), dtype=torch.uint8)
        error = str(failed).encode()[: AGREE_BYTES - 33] if failed is not None else b""
        mine[32] = 1 if failed is not None else 0
        if error:
            mine[33 : 33 + len(error)] = torch.tensor(list(error), dtype=torch.uint8)
        everyone = [torch.zeros_like(mine) for _ in range(self.world.size)]
        self._collective(lambda: self.dist.all_gather(everyone, mine, group=self.control))
        if failed is not None:
            raise failed
        for rank, theirs in enumerate(everyone):
            if theirs[32]:
                message = bytes(theirs[33:].tolist()).rstrip(b"\0").decode(errors="replace")
                self.waiting = False  # every rank stops here: none waits for a command
                raise DistributedError(f"rank {rank} of {self.world.size} could not set up the run: {message}")
        differing = [rank for rank, theirs in enumerate(everyone) if not torch.equal(theirs[:32], everyone[0][:32])]
        if differing:
            raise ConfigError(f"rank{'s' if len(differing) > 1 else ''} {', '.join(map(str, differing))} built a "
                              "different run than rank 0 (another corpus, settings or checkpoint): every machine "
                              "needs the same files at the same paths")

    def min_int(self, value: int) -> int:
        t = torch.tensor([value], dtype=torch.int64)
        self._collective(lambda: self.dist.all_reduce(t, op=self.dist.ReduceOp.MIN, group=self.control))
        return int(t)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a broken group cannot always be torn down; we exit anyway
            self.dist.destroy_process_group()

    def lost(self, error: BaseException) -> DistributedError:
        """The one-line error for a collective that failed: another process is gone (torchrun's
        summary names it) or broke. From here nothing is sent to them, nor torn down."""
        self.waiting = False
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        first = re.sub(r"^\[[^\]]*\] ", "", first)  # gloo's source location
        first = first.split(". This is typically")[0]
        return DistributedError(f"rank {self.world.rank} of {self.world.size} lost touch with the other "
                                f"processes of the run ({first})")

    def _collective(self, call) -> None:
        try:
            call()
        except RuntimeError as e:  # torch.distributed.DistBackendError is one
            raise self.lost(e) from None
