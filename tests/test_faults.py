import time

import pytest
import torch
from helpers import cli_command, tiny_config

from charrnn_tui.engine import protocol
from charrnn_tui.engine.checkpoint import load_checkpoint
from charrnn_tui.engine.events import Notice, StateChanged
from charrnn_tui.engine.model.step import TrainStep
from charrnn_tui.engine.protocol import Stop
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import LATEST
from charrnn_tui.engine.text.run_text import VALIDATION


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(repetitive_text, runs_dir,
                                                                                monkeypatch):
    events = []
    config = tiny_config(repetitive_text, max_steps=200, checkpoint_interval=20, report_interval=1e-9)
    trainer = Trainer(config, runs_dir=runs_dir, run_name="nan", on_event=events.append)
    real_step = trainer.step

    def poisoned_step():
        real_step()
        if trainer.trained.step >= 45:  # from step 45 on the loss is NaN, as after a blow-up
            log = trainer.built.train_step.log
            log.values[log.count - 1, 0] = float("nan")

    monkeypatch.setattr(trainer, "step", poisoned_step)
    try:
        trainer.run()
    except Exception as e:  # the TUI worker sees this; the state and message come as events first
        raise AssertionError(f"NaN must not raise: {e!r}") from e
    assert trainer.state == "error"
    error = [e for e in events if isinstance(e, StateChanged)][-1]
    assert "loss became nan at step 45" in error.reason and "last checkpoint (step 40)" in error.reason
    assert any(isinstance(e, Notice) and e.level == "error" for e in events)
    checkpoint = load_checkpoint(runs_dir / "nan" / LATEST)
    assert checkpoint["step"] == 40
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())


def test_sigkill_at_random_moments_never_breaks_the_latest_checkpoint(repetitive_text, tmp_path):
    """A real training process that saves every step, killed with SIGKILL again and again."""
    import random
    import signal
    import subprocess
    import time

    from charrnn_tui.engine.checkpoint import load_checkpoint as load

    cmd = cli_command()
    runs = tmp_path / "runs"
    common = ["--headless", "--runs-dir", str(runs), "--checkpoint-interval", "1", "--sample-interval", "0",
              "--threads", "1", "--device", "cpu"]
    first = ["train", str(repetitive_text), "--preset", "tiny", "--hidden", "32", "--seq-len", "16",
             "--batch-size", "4", "--name", "killed", *common]
    again = ["train", "--resume", "killed", *common]
    latest = runs / "killed" / LATEST
    rng = random.Random(0)
    steps = []
    for attempt in range(8):
        proc = subprocess.Popen([*cmd, *(first if attempt == 0 else again)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        start_mtime = latest.stat().st_mtime_ns if latest.exists() else 0
        while not latest.exists() or latest.stat().st_mtime_ns == start_mtime:  # saving has begun
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))  # the random moment itself: no outcome is awaited here
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        checkpoint = load(latest)  # must always be a whole checkpoint
        steps.append(checkpoint["step"])
    assert steps == sorted(steps) and steps[-1] > steps[0]  # each resume went on from the last
    finish = subprocess.run([*cmd, *again, "--max-steps", "5"], capture_output=True, text=True,
                            timeout=120)
    assert finish.returncode == 0, finish.stderr
    assert load(latest)["step"] == steps[-1] + 5
    assert not list((runs / "killed").glob(".*.tmp-*"))  # partial writes were cleaned up


def _headless(tmp_path, repetitive_text, name):
    import subprocess

    cmd = cli_command()
    args = ["train", str(repetitive_text), "--preset", "tiny", "--hidden", "32", "--seq-len", "16", "--batch-size",
            "4", "--headless", "--runs-dir", str(tmp_path / "runs"), "--name", name, "--checkpoint-interval", "0",
            "--sample-interval", "0", "--threads", "1", "--device", "cpu", "--eval-interval", "50"]
    return subprocess.Popen([*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_training(proc) -> None:
    import time

    deadline = time.monotonic() + 60
    for line in proc.stdout:  # the first validation line means training is under way
        if ": validation" in line:
            return
        assert time.monotonic() < deadline
    raise AssertionError(proc.stderr.read())


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_headless_signals_save_and_exit_cleanly(signame, repetitive_text, tmp_path):
    import signal

    proc = _headless(tmp_path, repetitive_text, signame)
    _wait_for_training(proc)
    proc.send_signal(getattr(signal, signame))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"{signame}: saving a checkpoint and stopping" in err and "Traceback" not in err
    assert "stopped" in out
    assert load_checkpoint(tmp_path / "runs" / signame / LATEST)["step"] >= 50


def test_a_lost_terminal_detaches_a_headless_run_which_trains_on_until_stopped(repetitive_text, tmp_path):
    import signal

    from helpers import run_cli

    proc = _headless(tmp_path, repetitive_text, "SIGHUP")
    _wait_for_training(proc)
    proc.send_signal(signal.SIGHUP)  # what the terminal's end sends its foreground process
    runs = tmp_path / "runs"
    log = runs / "SIGHUP" / "engine.log"
    deadline = time.monotonic() + 30
    while "SIGHUP: the terminal has gone" not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None, "a lost terminal must not end the run"
        assert time.monotonic() < deadline, "the run's output did not move to its log"
        time.sleep(0.1)
    stopped = run_cli("stop", "SIGHUP", "--runs-dir", str(runs))  # answered only by a run that went on
    assert stopped.returncode == 0, stopped.stderr
    assert "run SIGHUP stopped at step" in stopped.stdout
    assert proc.wait(timeout=30) == 0  # stop returns once the engine has ended
    assert load_checkpoint(runs / "SIGHUP" / LATEST)["step"] >= 50
    assert "stopped" in log.read_text()


def test_second_ctrl_c_quits_at_once(monkeypatch):
    """Two quick SIGINTs reach a process as one, so the handler is tested directly: the first asks
    the trainer to save and stop, the second leaves at once (exit 130). A save cut short that way
    leaves the previous checkpoint intact (see the SIGKILL test and test_atomic_save_*)."""
    import signal

    from charrnn_tui.engine.serve import process as serve

    installed = {}
    monkeypatch.setattr(serve.signal, "signal", lambda sig, handler: installed.__setitem__(sig, handler))

    class Trainer:
        requests: list[protocol.Request] = []

        def request(self, request: protocol.Request) -> None:
            self.requests.append(request)

    trainer = Trainer()
    serve._handle_signals(trainer, detached=False)
    assert set(installed) == {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    installed[signal.SIGINT](signal.SIGINT, None)
    assert trainer.requests == [protocol.Stop(save=True, unattended=True)]  # nobody is left to retry a save
    with pytest.raises(SystemExit) as exit_info:
        installed[signal.SIGINT](signal.SIGINT, None)
    assert exit_info.value.code == 130


@pytest.mark.parametrize("request_", [protocol.SaveNow(), protocol.Stop(), protocol.Pause(), protocol.EvaluateNow()])
def test_a_request_after_an_unreported_nan_never_saves_nan_weights(request_, repetitive_text, runs_dir, monkeypatch):
    # Reports are rare here, so the NaN is first seen when the request flushes the pending losses.
    config = tiny_config(repetitive_text, max_steps=200, checkpoint_interval=20, report_interval=60.0)
    trainer = Trainer(config, runs_dir=runs_dir, run_name="nan-request")
    real_step = trainer.step

    def poisoned_step():
        real_step()
        if trainer.trained.step >= 45:
            log = trainer.built.train_step.log
            log.values[log.count - 1, 0] = float("nan")
        if trainer.trained.step == 46:
            trainer.request(request_)

    monkeypatch.setattr(trainer, "step", poisoned_step)
    assert trainer.run() == "error"
    assert "loss became nan at step 45" in trainer.error
    checkpoint = load_checkpoint(runs_dir / "nan-request" / LATEST)
    assert checkpoint["step"] == 40
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())


def test_top_k_larger_than_the_vocabulary_is_refused_at_start(repetitive_text, runs_dir):
    from charrnn_tui.engine.errors import ConfigError

    with pytest.raises(ConfigError, match=r"top-k 500 is larger than the vocabulary \(\d+ tokens\)"):
        Trainer(tiny_config(repetitive_text, top_k=500, max_steps=5), runs_dir=runs_dir).run()


def test_an_unattended_stop_ends_even_when_the_save_fails(repetitive_text, runs_dir, monkeypatch):
    """After SIGHUP, or with the app's process gone, nobody can free space and retry: a UI run
    whose final save fails must end (and say what was lost), not wait paused for ever."""
    import threading

    from charrnn_tui.engine.errors import CheckpointError
    from charrnn_tui.engine.run import saving

    trainer = Trainer(tiny_config(repetitive_text), runs_dir=runs_dir, run_name="gone", pause_on_save_error=True)
    worker = threading.Thread(target=trainer.run)
    worker.start()
    deadline = time.monotonic() + 60
    while trainer.trained.step < 20 and time.monotonic() < deadline:
        time.sleep(0.01)

    def no_space(payload, path):
        raise CheckpointError(f"cannot write checkpoint {path}: no space left on device; the previous one is intact")

    monkeypatch.setattr(saving, "save_checkpoint", no_space)
    trainer.request(Stop(save=True, unattended=True))
    worker.join(timeout=30)
    assert not worker.is_alive(), "the run waited for a retry that nobody can make"
    assert trainer.state == "error" and "could not be written" in trainer.error and "nothing was saved" in trainer.error


class _InfiniteGradient(torch.autograd.Function):
    """Adds nothing to the loss and an infinite gradient to its input: the loss stays finite, the
    update does not."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.new_zeros(())

    @staticmethod
    def backward(ctx, grad):
        return torch.full(ctx.shape, float("inf"))


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_an_infinite_gradient_behind_a_finite_loss_never_reaches_a_checkpoint(grad_clip, repetitive_text, runs_dir,
                                                                              monkeypatch):
    # The 40th step's loss is finite but its gradient is not; the checkpoint due at step 40 would
    # hold the weights that update made.
    config = tiny_config(repetitive_text, max_steps=200, checkpoint_interval=20, report_interval=60.0,
                         grad_clip=grad_clip)
    trainer = Trainer(config, runs_dir=runs_dir, run_name="inf-grad")
    real_loss = TrainStep.loss

    def poisoned_loss(step, x, y, state, predictions=None):
        loss, state = real_loss(step, x, y, state, predictions)
        if trainer.trained.step == 39:
            loss = loss + _InfiniteGradient.apply(trainer.built.model.head.bias)
        return loss, state

    monkeypatch.setattr(TrainStep, "loss", poisoned_loss)
    assert trainer.run() == "error"
    assert "gradient norm became inf at step 40" in trainer.error
    assert "last checkpoint (step 20)" in trainer.error
    checkpoint = load_checkpoint(runs_dir / "inf-grad" / LATEST)  # which refuses non-finite tensors
    assert checkpoint["step"] == 20
    saved = sorted(p.name for p in (runs_dir / "inf-grad").glob("*.pt") if p.name != VALIDATION)  # checkpoints
    assert saved == ["latest.pt", "step-0000020.pt"]


def test_weights_that_turn_non_finite_without_a_sign_in_the_losses_are_not_saved(repetitive_text, runs_dir,
                                                                               monkeypatch):
    config = tiny_config(repetitive_text, max_steps=200, checkpoint_interval=20, report_interval=60.0)
    trainer = Trainer(config, runs_dir=runs_dir, run_name="nan-weights")
    real_step = trainer.step

    def corrupting_step():
        real_step()
        if trainer.trained.step == 40:
            with torch.no_grad():
                trainer.built.model.head.bias[0] = float("nan")

    monkeypatch.setattr(trainer, "step", corrupting_step)
    assert trainer.run() == "error"
    assert "model.head.bias is not finite at step 40; not saved" in trainer.error
    assert "last checkpoint (step 20)" in trainer.error
    assert load_checkpoint(runs_dir / "nan-weights" / LATEST)["step"] == 20


def test_a_non_finite_checkpoint_from_an_older_version_is_refused_by_name(tmp_path):
    from charrnn_tui.engine.checkpoint import FORMAT, FORMAT_VERSION
    from charrnn_tui.engine.errors import CheckpointError

    path = tmp_path / "latest.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION,
                "model": {"rnn.weight_hh_l0": torch.tensor([1.0, float("inf")])}}, path)
    with pytest.raises(CheckpointError, match=r"model.rnn.weight_hh_l0 is not finite .*earlier step-N.pt or best.pt"):
        load_checkpoint(path)
