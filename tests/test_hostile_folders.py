"""What others can leave in a runs folder or a run folder (issue 25): a planted symbolic link is
never written through, a runs folder others can write to is refused, another user's runs are
skipped, and no file a run folder holds (a FIFO, nested brackets, /dev/zero, NaN, markup) blocks,
crashes or garbles the engine, `runs`, the runs screen or a comparison."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from helpers import run_cli, tiny_config

from charrnn_tui.engine.errors import CheckpointError, ConfigError
from charrnn_tui.engine.runs import LATEST, UNREADABLE, list_runs, load_status, read_status, resolve_checkpoint

OTHER_UID = 12345  # a user who is not the one running the tests
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user (chown) needs root")
BLOCKED = 30.0  # seconds after which a call that should return at once is taken to be blocked


def returns(fn, *args):
    """fn(*args) run on a thread: its result, or a failure (not a hung suite) if it blocks."""
    done, result = threading.Event(), []

    def call():
        try:
            result.append(fn(*args))
        except BaseException as e:  # noqa: BLE001 - raised again below, on the test's thread
            result.append(e)
        finally:
            done.set()

    threading.Thread(target=call, daemon=True).start()
    assert done.wait(BLOCKED), f"{getattr(fn, '__name__', fn)} blocked"
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


@pytest.fixture(autouse=True)
def _no_hostile_status_left(tmp_path: Path):
    """Take away, before conftest's check for engines left running reads every status.json under
    tmp_path, the ones planted here: it would block on a FIFO, read /dev/zero for ever, or raise."""
    yield
    for path in tmp_path.rglob("status.json"):
        if load_status(path.parent)[1] is not None:
            path.unlink()


@pytest.fixture
def fifos():
    """make(path): a FIFO; any reader left blocked on one is let go at the end (a writer opening it)."""
    made: list[Path] = []

    def make(path: Path) -> Path:
        os.mkfifo(path)
        made.append(path)
        return path

    yield make
    for path in made:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only where a reader waits
        except OSError:
            continue
        os.close(fd)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the user's that a planted link points at: it must never change."""
    path = tmp_path / "victim.txt"
    path.write_text("the user's own file\n")
    return path


@pytest.fixture
def run_folder(runs_dir: Path) -> Path:
    folder = runs_dir / "r"
    folder.mkdir(parents=True, mode=0o700)
    return folder


# ---- planted symbolic links -----------------------------------------------------------------------
def test_a_lock_planted_as_a_link_is_not_followed(run_folder, victim):
    from charrnn_tui.engine.runs import RunLock, is_live

    (run_folder / ".lock").symlink_to(victim)
    with pytest.raises(CheckpointError) as refused:
        RunLock(run_folder).acquire()
    assert str(refused.value) == (f"cannot lock run r: {run_folder / '.lock'} is unusable (it is a symbolic link, "
                                  "which charrnn-tui never makes); remove it if no run is using it")
    assert victim.read_text() == "the user's own file\n"
    assert not is_live(run_folder)  # nobody's lock


def test_a_temporary_checkpoint_planted_as_a_link_is_not_followed(run_folder, victim):
    from charrnn_tui.engine.checkpoint import load_checkpoint, save_checkpoint

    planted = run_folder / f".{LATEST}.tmp-{os.getpid()}"  # the name a save used to write to
    planted.symlink_to(victim)
    (run_folder / LATEST).symlink_to(victim)  # and latest.pt itself: the save replaces the link
    save_checkpoint({"weights": torch.ones(2)}, run_folder / LATEST)
    assert victim.read_text() == "the user's own file\n"
    assert not (run_folder / LATEST).is_symlink()
    assert load_checkpoint(run_folder / LATEST)["weights"].tolist() == [1.0, 1.0]
    assert sorted(p.name for p in run_folder.iterdir()) == [planted.name, LATEST]  # no temporary file left


def test_metrics_planted_as_links_are_not_followed(run_folder, victim):
    from charrnn_tui.engine.run.metrics import METRICS, MetricsLog

    (run_folder / METRICS).symlink_to(victim)
    log = MetricsLog(run_folder)
    log.train(1, 0.1, 16, 0.01, 2.5, 1.0)
    log.close()
    assert victim.read_text() == "the user's own file\n"

    (run_folder / METRICS).unlink()
    (run_folder / METRICS).write_text("".join(json.dumps({"step": s, "train_loss": 1.0}) + "\n" for s in (1, 2, 3)))
    (run_folder / f".{METRICS}.tmp-{os.getpid()}").symlink_to(victim)  # where a resume used to write
    MetricsLog(run_folder, resumed_step=2).close()  # drops the lines after step 2
    assert victim.read_text() == "the user's own file\n"
    assert [json.loads(line)["step"] for line in (run_folder / METRICS).read_text().splitlines()] == [1, 2]


def test_an_engine_log_planted_as_a_link_is_not_followed(run_folder, victim):
    from charrnn_tui.engine.runs import LOG

    (run_folder / LOG).symlink_to(victim)
    # In a process of its own: _output_to_log moves stdout and stderr, which must not be the suite's.
    script = "import sys; from pathlib import Path; from charrnn_tui.engine.serve.process import _output_to_log; " \
             "_output_to_log(Path(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", script, str(run_folder)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert (f"CheckpointError: cannot write {run_folder / LOG} (it is a symbolic link, which charrnn-tui never "
            "makes): remove it and try again") in done.stderr
    assert victim.read_text() == "the user's own file\n"


def test_engine_log_is_moved_to_engine_log_1_when_over_its_limit(run_folder, monkeypatch):
    from charrnn_tui.engine.serve import process as serve

    log, kept = run_folder / "engine.log", run_folder / "engine.log.1"
    monkeypatch.setattr(serve, "LOG_LIMIT", 100)
    log.write_text("a" * 100)
    kept.write_text("older")

    def append(text: str) -> None:
        fd = serve.open_log(run_folder)
        os.write(fd, text.encode())
        os.close(fd)

    append("b")  # at the limit: appended to
    assert log.read_text() == "a" * 100 + "b" and kept.read_text() == "older"
    append("c")  # over it: moved aside (the older one goes), a new log begun
    assert log.read_text() == "c" and kept.read_text() == "a" * 100 + "b"


# ---- runs folders others can write to, and other users' runs ------------------------------------
def test_a_runs_folder_others_can_write_to_is_refused_in_one_line(tmp_path, repetitive_text):
    runs = tmp_path / "shared"
    runs.mkdir()
    runs.chmod(0o777)
    message = (f"charrnn-tui: error: runs folder {runs} is writable by its group and others (mode 777), who could "
               f"plant files in your runs: `chmod go-w {runs}`, or choose another --runs-dir\n")
    listed = run_cli("runs", "--runs-dir", str(runs))
    assert (listed.returncode, listed.stdout, listed.stderr) == (2, "", message)
    trained = run_cli("train", str(repetitive_text), "--headless", "--runs-dir", str(runs), "--preset", "tiny",
                      "--max-steps", "2", "--device", "cpu")
    assert (trained.returncode, trained.stderr.splitlines()[-1:]) == (2, [message.strip()])
    assert list(runs.iterdir()) == []  # no run folder was made in it
    runs.chmod(0o770)
    assert "is writable by its group (mode 770)" in run_cli("runs", "--runs-dir", str(runs)).stderr
    for mode in (0o1777, 0o755, 0o700):  # sticky, as /tmp (each removes only their own), or yours alone
        runs.chmod(mode)
        listed = run_cli("runs", "--runs-dir", str(runs))
        assert (listed.returncode, listed.stdout, listed.stderr) == (0, f"no runs in {runs}\n", "")


@needs_root
def test_a_runs_folder_of_another_user_is_refused(tmp_path):
    runs = tmp_path / "theirs"
    runs.mkdir(mode=0o700)
    os.chown(runs, OTHER_UID, -1)
    listed = run_cli("runs", "--runs-dir", str(runs))
    assert listed.returncode == 2 and listed.stderr.count("\n") == 1
    assert listed.stderr.startswith(f"charrnn-tui: error: runs folder {runs} belongs to ")
    assert listed.stderr.endswith(f"uid {OTHER_UID}), not to you: keep runs in a folder of your own (choose another "
                                  "--runs-dir)\n") or listed.stderr.endswith(
        f"uid {OTHER_UID}, not to you: keep runs in a folder of your own (choose another --runs-dir)\n")


@pytest.fixture
def mine_and_theirs(repetitive_text, runs_dir):
    """A run of yours and, newer, another user's in the same runs folder (a shared sticky one)."""
    from charrnn_tui.engine.run.trainer import Trainer

    Trainer(tiny_config(repetitive_text, max_steps=3), runs_dir=runs_dir, run_name="mine").run()
    theirs = runs_dir / "theirs"
    shutil.copytree(runs_dir / "mine", theirs)
    newer = (runs_dir / "mine" / LATEST).stat().st_mtime + 100
    os.utime(theirs / LATEST, (newer, newer))
    for path in (theirs, *theirs.iterdir()):
        os.chown(path, OTHER_UID, -1, follow_symlinks=False)
    runs_dir.chmod(0o1777)
    return runs_dir


@needs_root
def test_another_users_runs_are_skipped_by_runs_and_by_resume(mine_and_theirs):
    from charrnn_tui.engine.cli.main import parse, train_plan

    runs_dir = mine_and_theirs
    assert [e.name for e in list_runs(runs_dir)] == ["mine"]
    listed = run_cli("runs", "--json", "--runs-dir", str(runs_dir))
    assert [r["name"] for r in json.loads(listed.stdout)] == ["mine"]
    # train --resume with no name: your newest run, not the newer one of someone else's
    assert resolve_checkpoint(None, runs_dir) == runs_dir / "mine" / LATEST
    plan = train_plan(parse(["train", "--resume", "--runs-dir", str(runs_dir)]))
    assert plan.resume == runs_dir / "mine" / LATEST
    with pytest.raises(ConfigError) as named:
        resolve_checkpoint("theirs", runs_dir)
    assert "run theirs belongs to " in str(named.value) and "not to you" in str(named.value)


@needs_root
def test_resume_refuses_a_run_folder_that_is_not_yours_or_is_a_link(mine_and_theirs):
    from charrnn_tui.engine.run.trainer import Trainer

    runs_dir = mine_and_theirs
    link = runs_dir / "link"
    link.symlink_to(runs_dir / "mine")
    before = {p: p.read_bytes() for p in runs_dir.glob("*/*") if p.is_file()}
    for folder, why in ((runs_dir / "theirs", "belongs to "), (link, "is a symbolic link")):
        with pytest.raises(ConfigError) as refused:
            Trainer(resume=folder / LATEST, runs_dir=runs_dir).run()
        assert why in str(refused.value) and "\n" not in str(refused.value)
    assert {p: p.read_bytes() for p in runs_dir.glob("*/*") if p.is_file()} == before  # nothing written


@needs_root
def test_stop_and_attach_refuse_another_users_run_by_name_or_path(mine_and_theirs):
    from charrnn_tui.engine.runs import resolve_run

    runs_dir = mine_and_theirs
    for ref in ("theirs", str(runs_dir / "theirs"), str(runs_dir / "theirs" / LATEST)):
        with pytest.raises(ConfigError, match="run theirs belongs to .* not to you"):
            resolve_run(ref, runs_dir, live=True)
    assert resolve_run("mine", runs_dir, live=True) == runs_dir / "mine"


# ---- a sibling run's files: never blocking, never raising ------------------------------------------
def _bad_status(kind: str, folder: Path, make_fifo) -> str:
    """Put a bad status.json of this kind in the folder; what load_status must say of it."""
    path = folder / "status.json"
    if kind == "fifo":
        make_fifo(path)
        make_fifo(folder / ".lock")  # is_live must not block on it either
        return "status.json is a FIFO, not a regular file"
    if kind == "nested":
        path.write_text("[" * 60_000)  # under the size limit: json recurses once a bracket
        return "status.json is nested too deeply"
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
        return "status.json is a symbolic link, not a regular file"
    if kind == "huge":
        with path.open("wb") as f:
            f.truncate(1 << 30)  # sparse: a gigabyte that costs no disk
        return "status.json is larger than 64 KB"
    if kind == "binary":
        path.write_bytes(b"\xff\xfe\x00{")
        return "status.json is not valid JSON"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["fifo", "nested", "dev-zero", "huge", "binary"])
def test_a_sibling_runs_bad_status_is_read_as_nothing_without_blocking(kind, runs_dir, fifos):
    from charrnn_tui.engine.run.threads import other_training_runs
    from charrnn_tui.engine.runs import SOCKET, is_live

    sibling = runs_dir / "sibling"
    sibling.mkdir(parents=True)
    (sibling / SOCKET).touch()  # as a live engine's: other_training_runs reads its status and lock
    why = _bad_status(kind, sibling, fifos)
    assert returns(load_status, sibling) == (None, why)
    assert returns(read_status, sibling) == {}
    assert returns(is_live, sibling) is False
    assert returns(other_training_runs, runs_dir) == 0


def test_a_slow_look_at_the_other_runs_never_holds_up_training(tmp_path, monkeypatch):
    """The look runs on a thread of its own: the training thread waits for it at most SCAN_WAIT,
    once, and takes the count when it comes."""
    from charrnn_tui.engine.run import threads

    release, looks = threading.Event(), []

    def slow_look(runs_dir, own=None):  # a folder on a disk that hangs
        looks.append(runs_dir)
        release.wait(BLOCKED)
        return 1

    monkeypatch.setattr(threads, "other_training_runs", slow_look)
    monkeypatch.setattr(threads, "SCAN_WAIT", 0.01)
    saved = torch.get_num_threads()
    share = threads.ThreadShare(tmp_path, None, cores=4, other_load=lambda: None)  # the folder alone
    try:
        returns(share)  # the run's start: it waited SCAN_WAIT, no longer
        assert share.share == 0 and len(looks) == 1
        share.checked = -threads.INTERVAL
        returns(share, 100.0)  # the next report: the look still going, no second one, no wait
        assert share.share == 0 and len(looks) == 1
        release.set()
        assert share._looked.wait(BLOCKED)
        share(100.0)  # the count arrives: another run trains, so half the cores
        assert share.share == 2 and torch.get_num_threads() == 2
    finally:
        release.set()
        torch.set_num_threads(saved)


# ---- `runs`, the runs screen and comparisons on bad run folders ------------------------------------
BAD_STATUS = {  # folder: (status.json's text, why the run is unreadable)
    "step-infinity": ('{"state": "finished", "step": Infinity}', "status.json: step is not a whole number (Infinity)"),
    "step-nan": ('{"state": "finished", "step": NaN}', "status.json: step is not a whole number (NaN)"),
    "step-1e400": ('{"state": "finished", "step": 1e400}', "status.json: step is not a whole number (Infinity)"),
    "step-401-digits": ('{"step": 1' + "0" * 400 + "}", "status.json: step is not a whole number (a number of 401 "
                        "digits)"),
    "world-nan": ('{"state": "finished", "world_size": NaN}', "status.json: world_size is not a whole number (NaN)"),
    "corpus-number": ('{"state": "finished", "corpus": 5}', "status.json: corpus is not text (5)"),
    "corpus-object": ('{"state": "finished", "corpus": {"a": 1}}', "status.json: corpus is not text (an object)"),
    "viewers-text": ('{"state": "training", "viewers": "many"}', "status.json: viewers is not a whole number ('many')"),
    "a-list": ("[1, 2]", "status.json is not a JSON object"),
}


@pytest.fixture
def bad_runs(runs_dir, fifos):
    """A runs folder of runs with every kind of bad status.json, and three good ones."""
    for name, (text, _) in BAD_STATUS.items():
        (runs_dir / name).mkdir(parents=True)
        (runs_dir / name / "status.json").write_text(text)
    for kind in ("fifo", "nested", "dev-zero", "huge"):
        (runs_dir / kind).mkdir()
        _bad_status(kind, runs_dir / kind, fifos)
    good = {"[draft] notes.txt": {"corpus": "[/x]"}, "[red]x": {"model": "[b]lstm"},
            "nan-best": {"best_val": float("nan")}}  # an old run's NaN best: no best yet, not unreadable
    for name, fields in good.items():
        (runs_dir / name).mkdir()
        (runs_dir / name / "status.json").write_text(json.dumps({"state": "finished", "step": 7, **fields}))
    return runs_dir


def test_runs_lists_a_bad_run_as_unreadable_with_its_reason(bad_runs):
    entries = {e.name: e for e in returns(list_runs, bad_runs)}
    for name, (_, why) in BAD_STATUS.items():
        assert (entries[name].state, entries[name].problem, entries[name].step) == (UNREADABLE, why, None)
    for name in ("fifo", "nested", "dev-zero", "huge"):
        assert entries[name].state == UNREADABLE and entries[name].problem.startswith("status.json ")
    assert entries["[draft] notes.txt"].corpus == "[/x]" and entries["[red]x"].model == "[b]lstm"
    assert (entries["nan-best"].state, entries["nan-best"].best_val, entries["nan-best"].problem) == ("finished", None,
                                                                                                       None)
    listed = run_cli("runs", "--runs-dir", str(bad_runs))
    assert listed.returncode == 0 and listed.stderr == ""
    lines = listed.stdout.splitlines()
    assert "step-1e400 is unreadable: status.json: step is not a whole number (Infinity)" in lines
    assert ["[draft]", "notes.txt", "finished", "[/x]"] in [line.split()[:4] for line in lines]
    as_json = {r["name"]: r for r in json.loads(run_cli("runs", "--json", "--runs-dir", str(bad_runs)).stdout)}
    assert as_json["world-nan"]["problem"] == BAD_STATUS["world-nan"][1] and as_json["nan-best"]["best_val"] is None


async def test_the_runs_screen_shows_names_and_fields_as_they_are_and_bad_runs_as_unreadable(bad_runs):
    from textual.app import App
    from textual.widgets import DataTable

    from charrnn_tui.tui.widgets.runs_screen import RunsScreen

    class RunsApp(App):
        def on_mount(self) -> None:
            self.push_screen(RunsScreen(bad_runs))

    app = RunsApp()
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        table = screen.query_one(DataTable)
        shown = [table.render_line(y).text for y in range(table.size.height)]
        row = {name: next(line for line in shown if f" {name} " in line) for name in ("[draft] notes.txt", "[red]x")}
        assert " [/x] " in row["[draft] notes.txt"] and " [b]lstm " in row["[red]x"]
        assert any(" step-nan " in line and " unreadable " in line and "step is not a whole number" in line
                   for line in shown)
        table.move_cursor(row=[e.name for e in screen.entries].index("step-nan"))
        await pilot.press("enter")  # not live: says why, stays
        assert app.screen is screen


def test_compared_runs_skip_bad_metrics_lines(tmp_path, fifos):
    from charrnn_tui.tui.compared_runs import ComparedRun

    folder = tmp_path / "other"
    folder.mkdir()
    lines = [
        {"step": 10, "elapsed_s": 1.0, "val_loss": 2.0},
        "[" * 60_000 + '"val_loss"',  # nested: json recurses once a bracket
        '{"step": 1' + "0" * 400 + ', "val_loss": 1.0}',  # a step of 401 digits
        '{"step": 11, "val_loss": NaN}', '{"step": 12, "val_loss": 1e400}', '{"step": 13, "val_loss": "1.5"}',
        '{"step": 14, "val_loss": 1' + "0" * 400 + "}", '{"step": 15, "val_loss": 1.0, "elapsed_s": Infinity}',
        '["val_loss", 1]', '{"step": true, "val_loss": 1.0}', '{"step": -1, "val_loss": 1.0}',
        {"step": 20, "elapsed_s": 2.0, "val_loss": 1.5},
    ]
    (folder / "metrics.jsonl").write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    run = ComparedRun("other", folder)
    assert returns(run.refresh) is True
    assert run.points == [(10, 2.0, 1.0, None), (20, 1.5, 2.0, None)]

    for kind in ("fifo", "dev-zero"):
        (folder / "metrics.jsonl").unlink()
        if kind == "fifo":
            fifos(folder / "metrics.jsonl")
        else:
            (folder / "metrics.jsonl").symlink_to("/dev/zero")
        assert returns(ComparedRun(kind, folder).refresh) is False


# ---- step copies -------------------------------------------------------------------------------------
def test_step_copies_past_ten_million_are_kept_as_the_newest(run_folder):
    from charrnn_tui.engine.runs import keep_step_copy

    latest = run_folder / LATEST
    latest.write_bytes(b"weights")
    for step in (9_999_998, 9_999_999, 10_000_000, 10_000_001):
        keep_step_copy(latest, step, keep=3)
    assert sorted(p.name for p in run_folder.glob("step-*.pt")) == [
        "step-10000000.pt", "step-10000001.pt", "step-9999999.pt"]
