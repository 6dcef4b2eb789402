"""Issue 24, items 5 and 6: every hint can be typed as printed, `stop` on an ended run is no error, a
--runs-dir typo is, `sample` before a run's first checkpoint says when it comes, the app says where
the run is once it has closed, and an explicit --name never makes NAME-2."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import LocalRun, run_cli, tiny_config

from charrnn_tui.engine import runs as runs_module
from charrnn_tui.engine.errors import CharRNNError, ConfigError
from charrnn_tui.engine.runs import LATEST, SOCKET, new_run_dir, write_status
from charrnn_tui.tui.run_view import RunView


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn-tui: error: "), result.stderr
    return lines[0]


def ended_run(runs_dir: Path, name: str, state: str, step: int, checkpoint: bool = True) -> Path:
    """A run folder as an engine leaves it: status.json (a live state with no engine: crashed), a checkpoint."""
    folder = runs_dir / name
    folder.mkdir(parents=True)
    write_status(folder, {"state": state, "step": step, "corpus": "abc", "model": "lstm 1x32"})
    if checkpoint:
        (folder / LATEST).write_bytes(b"")
    return folder


def attach_error(monkeypatch, *argv: str) -> str:
    """`charrnn-tui attach ARGV`'s one-line error, from run_app itself: the console script refuses
    attach without a terminal before it gets there (tui/cli.py), and no app may open here."""
    from charrnn_tui.engine.cli.main import parse
    from charrnn_tui.tui import app as app_module

    def no_app(*args, **kwargs):
        raise AssertionError("the app opened")

    monkeypatch.setattr(app_module, "CharRNNApp", no_app)
    with pytest.raises(CharRNNError) as raised:
        app_module.run_app(parse(["attach", *argv]))
    return f"charrnn-tui: error: {raised.value}"


def command_in(text: str, verb: str) -> list[str]:
    """The words of the `charrnn-tui VERB ...` a message suggests, as a user would type them."""
    quoted = next(part for part in text.split("`") if part.startswith(f"charrnn-tui {verb}"))
    return shlex.split(quoted)[1:]


# ---- a: hints name --runs-dir when it is not the default ------------------------------------------
def test_hints_repeat_a_runs_dir_that_is_not_the_default(tmp_path, monkeypatch):
    runs = tmp_path / "my runs"  # a space: the hint quotes it
    ended_run(runs, "crashed", "training", 12)
    (runs / "crashed" / SOCKET).touch()
    missing = one_line_error(run_cli("stop", "nope", "--runs-dir", str(runs)))
    assert f"`charrnn-tui runs --runs-dir '{runs}'` lists them" in missing
    listed = run_cli(*command_in(missing, "runs"))  # typed as printed, it lists this folder
    assert listed.returncode == 0 and "crashed" in listed.stdout
    none_live = attach_error(monkeypatch, "--runs-dir", str(runs))
    assert f"charrnn-tui runs --runs-dir '{runs}'" in none_live
    crashed = attach_error(monkeypatch, "crashed", "--runs-dir", str(runs))
    assert command_in(crashed, "train") == ["train", "--resume", "crashed", "--runs-dir", str(runs)]


def test_hints_leave_out_the_default_runs_dir(tmp_path, monkeypatch):
    from charrnn_tui.engine.runs import resolve_run

    monkeypatch.setattr(runs_module, "default_runs_dir", lambda: tmp_path / "default")
    (tmp_path / "default").mkdir()
    with pytest.raises(CharRNNError, match=r"; `charrnn-tui runs` lists them$"):
        resolve_run("nope", tmp_path / "default", live=True)
    assert runs_module.run_hint("stop", tmp_path / "default" / "r") == "charrnn-tui stop r"
    assert runs_module.run_hint("stop", tmp_path / "other" / "r", " --no-save") == \
        f"charrnn-tui stop r --no-save --runs-dir {tmp_path / 'other'}"


def test_the_apps_hint_before_a_run_has_started_names_the_default_runs_dir(tmp_path, monkeypatch):
    """An app made without runs_dir (the default folder) and with no run yet: the hint is for the
    default folder. It raised TypeError (Path(None)); the type checker found it."""
    from charrnn_tui.tui.app import CharRNNApp

    monkeypatch.setattr(runs_module, "default_runs_dir", lambda: tmp_path / "default")
    assert CharRNNApp(autostart=False)._hint("attach") == "charrnn-tui attach"
    assert CharRNNApp(autostart=False, runs_dir=tmp_path / "other")._hint("runs") == \
        f"charrnn-tui runs --runs-dir {tmp_path / 'other'}"


# ---- b: stop on a run that has ended ----------------------------------------------------------------
def test_stop_on_an_ended_run_says_so_and_succeeds(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    ended_run(runs, "done", "finished", 30)
    ended_run(runs, "halted", "stopped", 40)
    ended_run(runs, "crashed", "training", 12)
    (runs / "empty").mkdir()  # a folder that is no run
    for name, said in (("done", "run done already finished at step 30 (not live); nothing to stop"),
                       ("halted", "run halted already stopped at step 40 (not live); nothing to stop"),
                       ("crashed", "run crashed already crashed at step 12 (not live); nothing to stop")):
        stopped = run_cli("stop", name, "--runs-dir", str(runs))
        assert stopped.returncode == 0 and stopped.stderr == "", stopped.stderr
        assert stopped.stdout.startswith(said + "\n") or stopped.stdout.startswith(said + ";"), stopped.stdout
    assert "charrnn-tui train --resume crashed --runs-dir" in run_cli("stop", "crashed", "--runs-dir", str(runs)).stdout
    assert "no such run" in one_line_error(run_cli("stop", "nope", "--runs-dir", str(runs)))
    assert "not a run" in one_line_error(run_cli("stop", "empty", "--runs-dir", str(runs)))
    attached = attach_error(monkeypatch, "done", "--runs-dir", str(runs))  # attach still cannot
    assert "run done is not running: it finished at step 30; `charrnn-tui train --resume done" in attached


# ---- c: runs with a runs folder that does not exist ------------------------------------------------
def test_runs_dir_that_does_not_exist_is_an_error_but_an_empty_one_or_a_new_user_is_not(tmp_path, monkeypatch):
    typo = tmp_path / "typo"
    for args in (["runs"], ["runs", "--json"], ["stop", "x"], ["sample", "x"]):
        error = one_line_error(run_cli(*args, "--runs-dir", str(typo)))
        assert error == f"charrnn-tui: error: no such folder {typo} (--runs-dir)", args
    for args in ([], ["x"]):
        assert attach_error(monkeypatch, *args, "--runs-dir", str(typo)).endswith(f"no such folder {typo} (--runs-dir)")
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    listed = run_cli("runs", "--runs-dir", str(empty))
    assert listed.returncode == 0 and listed.stdout == f"no runs in {empty}\n"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "fresh-home"))  # a new user: no runs folder yet
    new_user = run_cli("runs")
    assert new_user.returncode == 0 and new_user.stdout.startswith("no runs yet"), new_user.stderr
    assert run_cli("runs", "--json").stdout.strip() == "[]"
    assert not (tmp_path / "fresh-home").exists()


# ---- d: sample (next, eval, resume) before a run's first checkpoint ---------------------------------
@pytest.fixture
def early_run(repetitive_text, runs_dir):
    run = LocalRun(tiny_config(repetitive_text, report_interval=0.05, checkpoint_interval=100_000), runs_dir,
                   "early").start()
    try:
        deadline = time.monotonic() + 30
        while run.server.record.state != "training":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        run.server.write_status()
        yield run
    finally:
        run.stop()


def test_sample_before_the_first_checkpoint_says_when_it_comes(early_run, runs_dir):
    for args in (["sample", "early"], ["train", "--resume", "early", "--headless"]):
        error = one_line_error(run_cli(*args, "--runs-dir", str(runs_dir)))
        assert "run early is training and has saved no checkpoint yet: its first comes at step 100,000" in error
        assert command_in(error, "attach") == ["attach", "early", "--runs-dir", str(runs_dir)]
    assert not (runs_dir / "early" / LATEST).exists()


def test_a_run_that_ended_before_its_first_checkpoint_says_there_is_nothing_to_load(tmp_path):
    runs = tmp_path / "runs"
    ended_run(runs, "short", "training", 12, checkpoint=False)  # killed before its first save
    error = one_line_error(run_cli("sample", "short", "--runs-dir", str(runs)))
    assert error.endswith("run short crashed at step 12 before saving a checkpoint: nothing to load")


def test_the_first_checkpoint_step_follows_the_interval_and_max_steps(tmp_path, monkeypatch):
    folder = tmp_path / "r"
    folder.mkdir()
    monkeypatch.setattr(runs_module, "is_live", lambda run_dir: True)
    cases = [({"checkpoint_interval": 500, "step": 1234}, "comes at step 1,500 (at step 1,234 by its last report)"),
             ({"checkpoint_interval": 500, "max_steps": 1300, "step": 1234}, "its first comes at step 1,300"),
             ({"checkpoint_interval": 0, "step": 7}, "saves its first checkpoint when it ends"),
             ({"step": 7}, "is training at step 7 and has saved no checkpoint yet")]
    for status, said in cases:
        write_status(folder, {"state": "training", **status})
        assert said in runs_module.no_checkpoint_message(folder), status


# ---- e: what the terminal says once the app has closed ---------------------------------------------
def fake_app(run_dir: Path | None, state: str, step: int, *, saved_step: int = 0, saved_path: str = "",
             detaching: bool = False, error: str = "") -> SimpleNamespace:
    view = RunView()
    view.state, view.step, view.saved_step, view.saved_path = state, step, saved_step, saved_path
    if state == "error":
        view.reason = error
    client = SimpleNamespace(run_dir=run_dir, state=state, step=step, error=error) if run_dir else None
    return SimpleNamespace(trainer=client, view=view, detaching=detaching)


def test_after_the_app_closes_it_says_where_the_run_is(tmp_path):
    from charrnn_tui.engine.runs import background_message
    from charrnn_tui.tui.app import after_exit_message

    run_dir = tmp_path / "runs" / "r"
    detached = after_exit_message(fake_app(run_dir, "training", 120, detaching=True))
    assert detached.startswith(f"run r is still training in the background ({run_dir})\n")
    assert f"charrnn-tui attach r --runs-dir {run_dir.parent}\n" in detached
    assert f"charrnn-tui stop r --runs-dir {run_dir.parent}\n" in detached
    assert detached.splitlines()[1:] == background_message(run_dir).splitlines()[1:]  # as `train --detach` says
    paused = after_exit_message(fake_app(run_dir, "paused", 120, detaching=True))
    assert paused.startswith("run r is still paused in the background")
    saved = after_exit_message(fake_app(run_dir, "stopped", 1200, saved_step=1200, saved_path=f"{run_dir}/latest.pt"))
    assert saved.startswith(f"run r stopped at step 1,200; saved to {run_dir}/latest.pt; `charrnn-tui train --resume r")
    unsaved = after_exit_message(fake_app(run_dir, "stopped", 130, saved_step=100, saved_path="/x/latest.pt"))
    assert "run r stopped at step 130; the steps after 100 were not saved" in unsaved
    nothing = after_exit_message(fake_app(run_dir, "stopped", 30))
    assert nothing == "run r stopped at step 30; nothing was saved\n"
    finished = after_exit_message(fake_app(run_dir, "finished", 80, saved_step=80, saved_path="/x/latest.pt"))
    assert finished == "run r finished at step 80; saved to /x/latest.pt\n"
    failed = after_exit_message(fake_app(None, "error", 0, error="corpus abc.txt: not UTF-8"))
    assert failed == "charrnn-tui: error: corpus abc.txt: not UTF-8\n"
    assert after_exit_message(fake_app(None, "starting", 0)) == ""  # quit before any run


def test_run_app_prints_the_message_once_the_app_has_closed(tmp_path, monkeypatch, capsys):
    from charrnn_tui.tui import app as app_module

    run_dir = tmp_path / "runs" / "r"

    class ClosedApp:
        def __init__(self, engine_factory, runs_dir=None):
            self.trainer = SimpleNamespace(run_dir=run_dir, state="training", step=7, error="")
            self.view, self.detaching = RunView(), True

        def run(self):
            return 0

    monkeypatch.setattr(app_module, "CharRNNApp", ClosedApp)
    monkeypatch.setattr(app_module, "has_terminal", lambda: True)
    args = argparse.Namespace(command="train", runs_dir=tmp_path / "runs", train_argv=[], name=None, resume=None)
    assert app_module.run_app(args) == 0
    out = capsys.readouterr()
    assert out.out.startswith("run r is still training in the background") and out.err == ""
    assert f"charrnn-tui attach r --runs-dir {run_dir.parent}" in out.out


# ---- item 6: --name X when run X exists -----------------------------------------------------------
def test_an_explicit_name_that_exists_is_refused_and_nothing_is_written(repetitive_text, tmp_path):
    runs = tmp_path / "runs"
    ended_run(runs, "taken", "finished", 30)
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    train = ["train", str(repetitive_text), "--preset", "tiny", "--hidden", "16", "--seq-len", "16", "--batch-size",
             "4", "--threads", "1", "--device", "cpu", "--runs-dir", str(runs), "--name", "taken", "--max-steps", "5"]
    said = (f"charrnn-tui: error: run taken already exists in {runs}: continue it with --resume taken, "
            "or choose another --name")
    for how in ("--headless", "--detach"):  # the engine refuses it; --detach before starting one
        assert one_line_error(run_cli(*train, how)) == said, how
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before


def test_the_app_refuses_a_taken_name_before_any_screen(tmp_path, monkeypatch):
    from charrnn_tui.tui import app as app_module

    def no_app(*args, **kwargs):  # were the name let through, no app (and no engine) may start here
        raise AssertionError("the app opened")

    monkeypatch.setattr(app_module, "CharRNNApp", no_app)
    (tmp_path / "taken").mkdir()
    args = argparse.Namespace(command="train", runs_dir=tmp_path, train_argv=[], name="taken", resume=None)
    with pytest.raises(ConfigError, match="run taken already exists"):
        app_module.run_app(args)


def test_only_a_default_name_gets_a_number_on_a_collision(tmp_path):
    assert new_run_dir(tmp_path, "abc-lstm32-1") == tmp_path / "abc-lstm32-1"
    assert new_run_dir(tmp_path, "abc-lstm32-1") == tmp_path / "abc-lstm32-1-2"
    with pytest.raises(ConfigError, match="run mine already exists"):
        new_run_dir(tmp_path, "mine", exact=True) and new_run_dir(tmp_path, "mine", exact=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abc-lstm32-1", "abc-lstm32-1-2", "mine"]


def test_status_json_says_when_the_first_checkpoint_comes(early_run, runs_dir):
    status = runs_module.read_status(runs_dir / "early")
    assert status["checkpoint_interval"] == 100_000 and "max_steps" in status
