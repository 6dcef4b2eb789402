"""`runs`, `stop`, `attach` and `train --detach` through the console script, as a user runs them."""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import signal
import subprocess
import time

import pytest
from helpers import LocalRun, cli_command, run_cli, tiny_config

from charrnn_tui.engine.checkpoint import load_checkpoint
from charrnn_tui.engine.protocol import Pause
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import SOCKET, write_status


@pytest.fixture
def runs_of_every_state(repetitive_text, runs_dir):
    Trainer(tiny_config(repetitive_text, max_steps=30, eval_interval=10), runs_dir=runs_dir,
            run_name="done").run()
    crashed = runs_dir / "crashed"
    shutil.copytree(runs_dir / "done", crashed)
    write_status(crashed, {"state": "training", "step": 12, "corpus": "abc", "model": "lstm 1x32"})
    (crashed / SOCKET).touch()  # left behind by a killed engine; nobody holds the lock
    live = LocalRun(tiny_config(repetitive_text, report_interval=0.05), runs_dir, "live").start()
    yield runs_dir, live
    live.stop()


def test_runs_lists_every_run_with_its_state(runs_of_every_state):
    runs_dir, live = runs_of_every_state
    viewer = live.client()
    viewer.connect()
    live.server.write_status()
    table = run_cli("runs", "--runs-dir", str(runs_dir))
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
    assert table.stdout.splitlines()[0].split()[:3] == ["NAME", "STATE", "CORPUS"]
    assert lines["live"][1] == "training" and lines["done"][1] == "finished" and lines["crashed"][1] == "crashed"
    listed = {r["name"]: r for r in json.loads(run_cli("runs", "--json", "--runs-dir", str(runs_dir)).stdout)}
    assert {"name", "state", "step", "best_val", "path", "viewers"} <= set(listed["live"])
    assert listed["live"]["viewers"] == 1 and listed["live"]["live"] is True
    assert listed["done"]["step"] == 30 and listed["done"]["best_val"] > 0 and not listed["done"]["live"]
    assert listed["done"]["world_size"] == 1 and listed["live"]["world_size"] == 1
    assert listed["crashed"]["state"] == "crashed" and listed["crashed"]["path"] == str(runs_dir / "crashed")
    viewer.close()


def _attach_error(monkeypatch, *argv: str) -> str:
    """attach's error from run_app (the console script wants a terminal first; no app may open here)."""
    from charrnn_tui.engine.cli.main import parse
    from charrnn_tui.engine.errors import CharRNNError
    from charrnn_tui.tui import app as app_module

    monkeypatch.setattr(app_module, "CharRNNApp", None)  # calling it fails the test
    with pytest.raises(CharRNNError) as raised:
        app_module.run_app(parse(["attach", *argv]))
    return str(raised.value)


def test_attach_and_stop_on_a_run_that_is_not_live_say_why_in_one_line(runs_of_every_state, monkeypatch):
    runs_dir, _ = runs_of_every_state
    resume = f"charrnn-tui train --resume crashed --runs-dir {runs_dir}"
    crashed = _attach_error(monkeypatch, "crashed", "--runs-dir", str(runs_dir))
    assert "\n" not in crashed and "crashed" in crashed and resume in crashed
    assert "is not running: it finished at step 30" in _attach_error(monkeypatch, "done", "--runs-dir", str(runs_dir))
    assert "no such run" in _attach_error(monkeypatch, "nope", "--runs-dir", str(runs_dir))
    # stop: what it is for is done already, so it says so and succeeds
    crashed = run_cli("stop", "crashed", "--runs-dir", str(runs_dir))
    assert crashed.returncode == 0 and crashed.stderr == "" and len(crashed.stdout.splitlines()) == 1
    assert "run crashed already crashed at step 12 (not live); nothing to stop" in crashed.stdout
    assert resume in crashed.stdout
    done = run_cli("stop", "done", "--runs-dir", str(runs_dir))
    assert done.returncode == 0 and done.stdout == "run done already finished at step 30 (not live); nothing to stop\n"
    missing = run_cli("stop", "nope", "--runs-dir", str(runs_dir))
    assert missing.returncode == 2 and "no such run" in missing.stderr


def test_stop_saves_and_ends_a_live_run_and_returns_when_it_has(runs_of_every_state):
    runs_dir, live = runs_of_every_state
    stopped = run_cli("stop", "live", "--runs-dir", str(runs_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert "run live stopped at step" in stopped.stdout and "latest.pt" in stopped.stdout
    live.thread.join(10)
    assert not live.thread.is_alive() and live.result == ["stopped"]
    assert load_checkpoint(runs_dir / "live" / "latest.pt")["step"] == live.trainer.trained.step
    assert not (runs_dir / "live" / SOCKET).exists()


def test_detach_returns_once_listening_and_a_bad_run_fails_in_one_line(repetitive_text, tmp_path):
    runs = tmp_path / "runs"
    started = run_cli("train", str(repetitive_text), "--preset", "tiny", "--hidden", "16", "--seq-len", "16",
                      "--batch-size", "4", "--threads", "1", "--device", "cpu", "--runs-dir", str(runs), "--name",
                      "bg", "--max-steps", "100000", "--detach")
    assert started.returncode == 0, started.stderr
    assert "run bg is training in the background" in started.stdout
    assert (runs / "bg" / SOCKET).exists()
    stop = next(line for line in started.stdout.splitlines() if "stop it:" in line).split("charrnn-tui ")[1]
    assert stop == f"stop bg --runs-dir {runs}"  # typed as printed, it reaches this run
    assert run_cli(*shlex.split(stop)).returncode == 0
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00 binary")
    failed = run_cli("train", str(bad), "--runs-dir", str(runs), "--detach")
    assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert "charrnn-tui: error:" in failed.stderr
    # a run that cannot even be planned (its flags contradict each other) says why, once, as itself
    unplanned = run_cli("train", str(repetitive_text), "--keep-schedule", "--runs-dir", str(runs), "--detach")
    assert unplanned.returncode == 2
    assert unplanned.stderr.strip() == "charrnn-tui: error: --keep-schedule goes with --resume"


def test_a_script_interrupting_a_headless_run_gets_a_finished_run_and_no_process_left(repetitive_text, tmp_path):
    runs = tmp_path / "runs"
    cmd = [*cli_command(), "train", str(repetitive_text), "--preset", "tiny", "--hidden", "16", "--seq-len", "16",
           "--batch-size", "4", "--threads", "1", "--device", "cpu", "--headless", "--sample-interval", "0",
           "--runs-dir", str(runs), "--name", "scripted"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60  # Ctrl+C once it trains (as a script's timeout would), not at a guess
        while time.monotonic() < deadline and process.poll() is None:
            status = runs / "scripted" / "status.json"
            with contextlib.suppress(OSError, ValueError):
                if json.loads(status.read_text()).get("step", 0) > 0:
                    break
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "SIGINT: saving a checkpoint and stopping" in stderr and "stopped" in stdout
    assert load_checkpoint(runs / "scripted" / "latest.pt")["step"] > 0
    # The run's process has been reaped: anything matching now was left behind.
    left = subprocess.run(["pgrep", "-f", "--", f"{runs} --name scripted"], capture_output=True, text=True)
    assert left.returncode in (0, 1), left.stderr  # 1: none matched; 2 was a pattern pgrep read as an option
    left = left.stdout.strip()
    assert not left, f"processes left behind: {left}"
    status = json.loads(run_cli("runs", "--json", "--runs-dir", str(runs)).stdout)
    assert status[0]["state"] == "stopped" and not (runs / "scripted" / SOCKET).exists()


@pytest.mark.parametrize("command", [["runs"], ["stop", "x"], ["attach"], ["sample", "x"], ["eval", "x"], ["train"]])
def test_every_command_takes_runs_dir(command, tmp_path):
    from charrnn_tui.engine.cli.main import parse

    args = parse([*command, "--runs-dir", str(tmp_path)])
    assert args.runs_dir == tmp_path


def test_stop_without_saving_says_the_steps_since_the_last_checkpoint_are_not_saved(repetitive_text, runs_dir):
    run = LocalRun(tiny_config(repetitive_text, report_interval=0.05, checkpoint_interval=50), runs_dir,
                   "discard").start()
    deadline = time.monotonic() + 30
    while run.trainer.saved_step < 50 or run.trainer.trained.step < run.trainer.saved_step + 10:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    run.trainer.request(Pause())  # so that no periodic save falls between here and the stop
    while run.server.record.state != "paused":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    stopped = run_cli("stop", "discard", "--no-save", "--runs-dir", str(runs_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert "run discard stopped at step" in stopped.stdout
    assert "not saved (the last checkpoint is step " in stopped.stdout and "saved step" not in stopped.stdout


def test_flags_are_never_abbreviated():
    from charrnn_tui.engine.cli.main import parse

    with pytest.raises(SystemExit):
        parse(["train", "x.txt", "--deta"])
    assert parse(["train", "x.txt", "--detach"]).detach


def test_a_run_name_wins_over_a_folder_of_that_name_where_the_command_is_typed(tmp_path, monkeypatch):
    from charrnn_tui.engine.runs import LATEST, resolve_checkpoint, resolve_run

    runs_dir, here = tmp_path / "runs", tmp_path / "here"
    (runs_dir / "cpu").mkdir(parents=True)
    (runs_dir / "cpu" / LATEST).write_bytes(b"")
    (here / "cpu").mkdir(parents=True)  # e.g. a folder of notes called like the run
    monkeypatch.chdir(here)
    assert resolve_run("cpu", runs_dir, live=False) == runs_dir / "cpu"
    assert resolve_checkpoint("cpu", runs_dir) == runs_dir / "cpu" / LATEST
    assert resolve_run("./cpu", runs_dir, live=False).resolve() == here / "cpu"  # a path is a path
    assert resolve_run(str(runs_dir / "cpu"), tmp_path / "elsewhere", live=False) == runs_dir / "cpu"
