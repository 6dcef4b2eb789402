"""One run on several processes (torchrun, gloo on CPU): the same loss curve as one process, one
run folder, requests that reach every rank, checkpoints that resume on any number of processes,
and a lost rank that ends the run with its last checkpoint intact.

The runs are real: `python -m torch.distributed.run --standalone --nproc-per-node 2 -m
charrnn_tui.engine train ...`, as a user would start them (with the engine module in place of the
console script)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import wait_until

from charrnn_tui.engine.errors import ConfigError
from charrnn_tui.engine.protocol import Pause, Resume, Stop
from charrnn_tui.engine.run.distributed import SINGLE, World, check_batch, shard, state_rows, world_from_env
from charrnn_tui.engine.runs import list_runs
from charrnn_tui.engine.text.data import IGNORE, Batch

# fp32, no dropout, a flat learning rate: two processes must then follow one to float rounding.
FLAGS = ["--preset", "tiny", "--hidden", "48", "--embedding", "16", "--batch-size", "6", "--seq-len", "16",
         "--precision", "fp32", "--no-lr-decay", "--warmup-steps", "0", "--lr", "0.01", "--seed", "5",
         "--eval-interval", "10", "--checkpoint-interval", "0", "--sample-interval", "0", "--threads", "1"]
DISTRIBUTED_TIMEOUT = 180


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    from charrnn_tui.corpora import bundled_path

    path = tmp_path / "plays.txt"
    # 20,011 characters: the last of the 6 streams is padded, so the ranks score unequal numbers of
    # targets, which the loss scaling must get right.
    path.write_text(bundled_path("shakespeare").read_text()[:20_011])
    return path


def engine(*args: str) -> list[str]:
    return [sys.executable, "-m", "charrnn_tui.engine", *args]


def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "charrnn_tui.engine", *args]


def quiet_env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def run(command: list[str], check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=DISTRIBUTED_TIMEOUT, env=quiet_env())
    assert not check or done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@contextlib.contextmanager
def torchrun_in_background(*args: str) -> Iterator[subprocess.Popen]:
    """A 2-process run under torchrun that the test steers; killed with its ranks if the test fails."""
    launcher = subprocess.Popen(torchrun(2, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=quiet_env(), start_new_session=True)
    try:
        yield launcher
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()


def step_losses(jsonl: Path) -> dict[int, float]:
    losses: dict[int, float] = {}
    for line in jsonl.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "Progress":
            losses.update({event["first_step"] + i: v for i, v in enumerate(event["losses"])})
    return losses


def validations(jsonl: Path) -> dict[int, float]:
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    return {e["step"]: e["nats"] for e in events if e["event"] == "Evaluated"}


def assert_same_curve(a: dict[int, float], b: dict[int, float], steps: range, tolerance: float = 1e-4) -> None:
    assert set(steps) <= set(a) and set(steps) <= set(b)
    worst = max(abs(a[s] - b[s]) for s in steps)
    assert worst < tolerance, f"losses differ by up to {worst}"


def test_two_processes_follow_the_loss_curve_of_one_and_write_one_run(corpus, tmp_path):
    runs = tmp_path / "runs"
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    run(engine("train", str(corpus), *FLAGS, "--max-steps", "30", "--runs-dir", str(runs), "--name", "one",
               "--headless", "--jsonl", str(one)))
    done = run(torchrun(2, "train", str(corpus), *FLAGS, "--max-steps", "30", "--runs-dir", str(runs),
                        "--name", "two", "--headless", "--jsonl", str(two)))
    assert "× 2 processes (gloo)" in done.stdout
    assert done.stdout.count("finished: reached max-steps 30") == 1  # rank 0 alone prints
    started = next(json.loads(line) for line in two.read_text().splitlines() if '"Started"' in line)
    assert started["info"]["world_size"] == 2  # what the app's status shows, with the combined tokens/s
    events = [json.loads(line) for line in one.read_text().splitlines()]
    assert next(e for e in events if e["event"] == "Started")["info"]["world_size"] == 1
    assert_same_curve(step_losses(one), step_losses(two), range(1, 31))
    val_one, val_two = validations(one), validations(two)
    assert set(val_two) == {10, 20, 30} and all(abs(val_one[s] - val_two[s]) < 1e-4 for s in val_two)
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"]  # one folder for the two processes
    def files(name: str) -> list[str]:
        return sorted(p.name for p in (runs / name).iterdir())

    assert files("two") == files("one") and "latest.pt" in files("two")  # what one process writes, once
    status = json.loads((runs / "two" / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 30 and status["world_size"] == 2
    listed = {e.name: e for e in list_runs(runs)}
    assert listed["two"].world_size == 2 and listed["two"].model_label.endswith("(2 ranks)")
    assert listed["one"].world_size == 1 and "ranks" not in listed["one"].model_label


def test_random_windows_follow_one_process_through_the_short_last_batch_of_an_epoch(corpus, tmp_path):
    # An epoch of random windows ends with a batch of fewer windows than --batch-size, shared
    # unevenly (or not at all) between the ranks.
    runs = tmp_path / "runs"
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    flags = [*FLAGS, "--sampler", "random", "--max-steps", "400", "--eval-interval", "1000"]
    run(engine("train", str(corpus), *flags, "--runs-dir", str(runs), "--name", "one", "--headless",
               "--jsonl", str(one)))
    run(torchrun(2, "train", str(corpus), *flags, "--runs-dir", str(runs), "--name", "two", "--headless",
                 "--jsonl", str(two)))
    assert_same_curve(step_losses(one), step_losses(two), range(1, 401))


def test_a_checkpoint_resumes_on_another_number_of_processes(corpus, tmp_path):
    runs = tmp_path / "runs"
    straight = tmp_path / "straight.jsonl"
    run(engine("train", str(corpus), *FLAGS, "--max-steps", "45", "--runs-dir", str(runs), "--name", "straight",
               "--headless", "--jsonl", str(straight)))
    # Started on two processes, resumed on one; and the reverse.
    for name, first, then in (("from-two", torchrun(2), engine()), ("from-one", engine(), torchrun(2))):
        run([*first, "train", str(corpus), *FLAGS, "--max-steps", "30", "--runs-dir", str(runs), "--name", name,
             "--headless"])
        resumed = tmp_path / f"{name}.jsonl"
        run([*then, "train", "--resume", name, "--max-steps", "15", "--runs-dir", str(runs), "--headless",
             "--jsonl", str(resumed)])
        losses = step_losses(resumed)
        assert min(losses) == 31  # the same global stream positions, with the carried state
        assert_same_curve(step_losses(straight), losses, range(31, 46))


def test_pause_and_stop_requests_reach_every_rank(corpus, tmp_path):
    from charrnn_tui.engine.events import StateChanged
    from charrnn_tui.engine.serve.client import EngineClient

    runs = tmp_path / "runs"
    events = tmp_path / "paused.jsonl"
    with torchrun_in_background("train", str(corpus), *FLAGS, "--runs-dir", str(runs), "--name", "p",
                                "--headless", "--jsonl", str(events)) as launcher:
        wait_until(lambda: (runs / "p" / "engine.sock").exists() and step_losses(events), "the run's socket",
                   timeout=60)
        states: list[str] = []
        client = EngineClient(runs / "p", lambda e: states.append(e.state) if isinstance(e, StateChanged) else None)
        client.connect()
        import threading

        threading.Thread(target=client.run, daemon=True).start()
        client.request(Pause())
        wait_until(lambda: "paused" in states, "paused", timeout=60)
        paused_at = json.loads((runs / "p" / "status.json").read_text())["step"]
        time.sleep(1.5)
        assert json.loads((runs / "p" / "status.json").read_text())["step"] == paused_at
        client.request(Resume())
        wait_until(lambda: states.count("training") >= 1 and states[-1] == "training", "training again",
                   timeout=60)
        client.request(Stop(save=True))
        out, err = launcher.communicate(timeout=DISTRIBUTED_TIMEOUT)
    assert launcher.returncode == 0, err[-3000:]
    stopped_at = json.loads((runs / "p" / "status.json").read_text())["step"]
    assert stopped_at > paused_at and json.loads((runs / "p" / "status.json").read_text())["state"] == "stopped"
    # Both ranks took exactly the same steps through the pause: one process follows the same curve.
    one = tmp_path / "one.jsonl"
    run(engine("train", str(corpus), *FLAGS, "--max-steps", str(stopped_at), "--runs-dir", str(runs),
               "--name", "one", "--headless", "--jsonl", str(one)))
    assert_same_curve(step_losses(one), step_losses(events), range(1, stopped_at + 1))


def test_a_lost_rank_ends_the_run_with_its_last_checkpoint_intact(corpus, tmp_path):
    from charrnn_tui.engine.checkpoint import load_checkpoint

    runs = tmp_path / "runs"
    flags = [f for f in FLAGS]
    flags[flags.index("--checkpoint-interval") + 1] = "20"
    with torchrun_in_background("train", str(corpus), *flags, "--runs-dir", str(runs), "--name", "k",
                                "--headless") as launcher:
        wait_until(lambda: (runs / "k" / "latest.pt").exists(), "the first checkpoint", timeout=60)
        follower = next(pid for pid in _children(launcher.pid) if b"RANK=1\0" in _environ(pid))
        os.kill(follower, signal.SIGKILL)
        out, err = launcher.communicate(timeout=DISTRIBUTED_TIMEOUT)
    assert launcher.returncode != 0
    status = json.loads((runs / "k" / "status.json").read_text())
    assert status["state"] == "error" and "rank 0 of 2 lost touch" in status["reason"], status
    assert "the last checkpoint (step" in status["reason"]
    assert "charrnn-tui: error: rank 0 of 2 lost touch" in err
    assert load_checkpoint(runs / "k" / "latest.pt")["step"] % 20 == 0  # whole, and one the run wrote
    assert not list(_children(launcher.pid))


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == pid:
                found.append(int(entry.name))
    return found


def _environ(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "environ").read_bytes()
    except OSError:
        return b""


# ---- the pieces, without processes ---------------------------------------------------------------


def test_the_world_comes_from_torchruns_environment():
    assert world_from_env({}) == SINGLE and not SINGLE.distributed and SINGLE.leader
    world = world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert world == World(rank=3, size=4, local_rank=1, local_size=2) and world.distributed and not world.leader
    alone = {"WORLD_SIZE": "1", "RANK": "0"}
    assert not world_from_env(alone).distributed and not world_from_env({**alone, "CHARRNN_FORCE_DDP": "0"}).distributed
    assert world_from_env({**alone, "CHARRNN_FORCE_DDP": "1"}).distributed  # one process through DDP, on request
    assert world_from_env({"CHARRNN_FORCE_DDP": "1"}) == SINGLE  # not under torchrun: nothing to join
    with pytest.raises(ConfigError, match="whole numbers"):
        world_from_env({"WORLD_SIZE": "two"})
    with pytest.raises(ConfigError, match="inconsistent: RANK 2, WORLD_SIZE 2"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "2"})


def test_each_rank_takes_its_own_block_of_the_global_batch():
    x = torch.arange(6 * 3).view(6, 3)
    batch = Batch(x, x + 1, reset=False, predictions=17)
    parts = [shard(batch, World(rank=r, size=3)) for r in range(3)]
    assert torch.equal(torch.cat([p.x for p in parts]), x) and torch.equal(torch.cat([p.y for p in parts]), x + 1)
    assert all(p.predictions == 17 for p in parts)  # the global count: the loss is scaled by it
    assert shard(batch, SINGLE) is batch
    state = (torch.arange(2 * 6 * 4.0).view(2, 6, 4),)
    blocks = [state_rows(state, World(rank=r, size=2), 6)[0] for r in range(2)]
    assert torch.equal(torch.cat(blocks, dim=1), state[0]) and blocks[1].shape == (2, 3, 4)
    short = Batch(x[:5], x[:5] + 1, reset=True, predictions=9)  # a short last batch: blocks of 2 and 3
    halves = [shard(short, World(rank=r, size=2)) for r in range(2)]
    assert [len(h.x) for h in halves] == [2, 3] and torch.equal(torch.cat([h.x for h in halves]), x[:5])
    one_window = Batch(x[:1], x[:1] + 1, reset=True, predictions=3)
    empty, full = (shard(one_window, World(rank=r, size=2)) for r in range(2))
    assert torch.equal(full.x, x[:1]) and (empty.y == IGNORE).all() and len(empty.x) == 1  # scores nothing
    check_batch(6, World(rank=0, size=3))
    with pytest.raises(ConfigError, match="--batch-size 6 does not split evenly over 4 processes"):
        check_batch(6, World(rank=0, size=4))


def test_auto_batch_size_over_processes_is_a_multiple_of_them(monkeypatch):
    import types

    from charrnn_tui.engine.run import run_setup

    notices = []
    ranks_fit = [40, 37]  # what each rank's probe found (one process's batch)

    class Group:
        def min_int(self, value):
            return min(ranks_fit)

    group = Group()
    world, device = World(rank=0, size=2), torch.device("cuda", 0)
    config = types.SimpleNamespace(seq_len=10, fit_batch_size=False)

    def batch_size(fits_one_process, train_tokens):
        return run_setup.distributed_batch_size(group, config, world, device, fits_one_process, train_tokens,
                                                notices.append)

    monkeypatch.setattr(run_setup, "memory_limited", lambda device: True)
    assert batch_size(40, train_tokens=100_000) == 74  # 37 streams on each
    assert "batch-size 74 (37 streams each)" in notices[-1].message
    assert batch_size(40, train_tokens=501) == 50  # the text holds 50 streams
    # a preset's run keeps an epoch of 256 steps: 1M tokens at seq-len 256 hold 15 streams, so 14 over two
    config = types.SimpleNamespace(seq_len=256, fit_batch_size=True)
    ranks_fit[:] = [400, 370]
    assert batch_size(400, train_tokens=1_000_000) == 14
    monkeypatch.setattr(run_setup, "memory_limited", lambda device: False)  # a CPU: the preset's batch, split
    assert batch_size(15, train_tokens=100_000) == 14


def test_every_rank_stops_in_one_line_when_one_cannot_set_up_or_builds_another_run(corpus, tmp_path):
    runs = tmp_path / "runs"
    # Rank 0 cannot make the run's folder (the runs folder is a file): the other rank hears why.
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    done = run(torchrun(2, "train", str(corpus), *FLAGS, "--max-steps", "2", "--runs-dir", str(not_a_folder),
                        "--headless"), check=False)
    assert done.returncode != 0 and "[rank1]: Traceback" not in done.stderr and "[rank0]: Traceback" not in done.stderr
    assert f"charrnn-tui: error: cannot create a run folder in {not_a_folder}" in done.stderr
    assert "charrnn-tui: error: rank 1: rank 0 of 2 could not set up the run: cannot create a run folder" in done.stderr
    # Each machine with its own copy of the corpus, and one copy differs.
    other = tmp_path / "plays-1.txt"
    other.write_text(corpus.read_text().replace("the", "teh"))
    (tmp_path / "plays-0.txt").write_text(corpus.read_text())
    script = (f"exec {sys.executable} -m charrnn_tui.engine train {tmp_path}/plays-$RANK.txt "
              f"{' '.join(FLAGS)} --max-steps 2 --runs-dir {runs} --name differs --headless")
    done = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "--no-python", "bash", "-c", script], check=False)
    assert done.returncode != 0 and "[rank1]: Traceback" not in done.stderr and "[rank0]: Traceback" not in done.stderr
    assert done.stderr.count("rank 1 built a different run than rank 0") == 2  # said by both ranks


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP"])
def test_a_signal_to_torchrun_saves_and_stops_the_run(signum, corpus, tmp_path):
    runs = tmp_path / "runs"
    with torchrun_in_background("train", str(corpus), *FLAGS, "--runs-dir", str(runs), "--name", "s",
                                "--headless") as launcher:
        wait_until(lambda: (runs / "s" / "engine.sock").exists(), "the run's socket", timeout=60)
        time.sleep(1)
        launcher.send_signal(signum)  # torchrun passes it on to both ranks
        out, err = launcher.communicate(timeout=DISTRIBUTED_TIMEOUT)
    status = json.loads((runs / "s" / "status.json").read_text())
    assert status["state"] == "stopped", err[-2000:]
    from charrnn_tui.engine.checkpoint import load_checkpoint

    assert load_checkpoint(runs / "s" / "latest.pt")["step"] == status["step"] > 0
    assert "saving a checkpoint and stopping" in err and not list(_children(launcher.pid))


def test_ranks_that_share_a_gpu_are_named_with_it_in_one_line():
    from charrnn_tui.engine.run.distributed import shared_gpus

    h100 = "NVIDIA H100 80GB HBM3"
    assert shared_gpus([("GPU-a", h100), ("GPU-b", h100)]) is None  # each its own
    assert shared_gpus([("GPU-a", h100)]) is None
    message = shared_gpus([("GPU-a", h100), ("GPU-a", h100)])
    assert message.startswith(f"ranks 0 and 1 share one GPU ({h100}, GPU-a): NCCL needs a GPU of its own for "
                              "each process") and "--nproc-per-node" in message and "\n" not in message
    # Two machines of two GPUs, each with its processes on one: both pairs named.
    message = shared_gpus([("GPU-a", h100), ("GPU-a", h100), ("GPU-c", "H200"), ("GPU-c", "H200"), ("GPU-d", h100)])
    assert message.startswith(f"ranks 0 and 1 share one GPU ({h100}, GPU-a); ranks 2 and 3 share one GPU "
                              "(H200, GPU-c): ")
    assert shared_gpus([("GPU-a", "X")] * 3).startswith("ranks 0, 1 and 2 share one GPU (X, GPU-a): ")


GPU_CHECK = """
import os
import sys

import torch

from charrnn_tui.engine.run.distributed import ProcessGroup, world_from_env
from charrnn_tui.engine.errors import ConfigError

world = world_from_env()
group = ProcessGroup(world, torch.device("cpu"))
out = open(os.path.join(os.path.dirname(__file__), f"rank{world.rank}.txt"), "w", encoding="utf-8")
for case, gpus in (("own", ["GPU-0a", "GPU-1b"]), ("shared", ["GPU-0a", "GPU-0a"])):
    try:
        group.check_own_gpus((gpus[world.rank], "Card ü"))
        print(f"{case} {world.rank}: ok", file=out)
    except ConfigError as e:
        print(f"{case} {world.rank}: {e}", file=out)
out.close()
group.close()
"""


def test_every_rank_gathers_the_gpus_and_refuses_a_shared_one(tmp_path):
    script = tmp_path / "gpu_check.py"
    script.write_text(GPU_CHECK)
    done = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)])
    # each rank writes a file of its own: two processes' prints on one pipe may interleave mid-line
    written = "".join((tmp_path / f"rank{r}.txt").read_text(encoding="utf-8") for r in range(2)
                      if (tmp_path / f"rank{r}.txt").exists())
    lines = sorted(line for line in written.splitlines() if line.startswith(("own", "shared")))
    refused = "ranks 0 and 1 share one GPU (Card ü, GPU-0a): NCCL needs a GPU of its own for each process"
    assert lines[:2] == ["own 0: ok", "own 1: ok"], done.stdout + done.stderr[-2000:]
    assert [line.startswith(f"shared {r}: {refused}") for r, line in enumerate(lines[2:])] == [True, True], lines


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")
def test_two_ranks_on_one_gpu_stop_with_a_line_that_names_them_and_the_gpu(corpus, tmp_path):
    env = {**quiet_env(), "CUDA_VISIBLE_DEVICES": "0"}  # one GPU left to both processes
    done = subprocess.run(torchrun(2, "train", str(corpus), *FLAGS, "--device", "cuda", "--max-steps", "2",
                                   "--runs-dir", str(tmp_path / "runs"), "--headless"),
                          capture_output=True, text=True, timeout=DISTRIBUTED_TIMEOUT, env=env)
    name = torch.cuda.get_device_properties(0).name
    assert done.returncode != 0 and "lost touch" not in done.stderr, done.stderr[-3000:]
    assert f"ranks 0 and 1 share one GPU ({name}, GPU-" in done.stderr, done.stderr[-3000:]
    assert "[rank0]: Traceback" not in done.stderr and "[rank1]: Traceback" not in done.stderr
