"""The app's view of a sweep (`tune` without --headless): the leaderboard read from a sweep.json as
`tune` writes it (states, order, the trials charted), a hostile sweep.json read as one line, the
trial followed and attached, and the continuation of the winner (`tune --continue`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sweep_fixtures import make_sweep

from charrnn_tui.engine.runs import SWEEP, SWEEP_LIMIT, RunLock
from charrnn_tui.tui.app import CharRNNApp
from charrnn_tui.tui.sweep_board import read_board
from charrnn_tui.tui.widgets.help_screen import HelpScreen
from charrnn_tui.tui.widgets.leaderboard import Leaderboard
from charrnn_tui.tui.widgets.loss_chart import LossChart
from charrnn_tui.tui.widgets.sweep_screen import SweepScreen


def sweep_app(folder: Path) -> CharRNNApp:
    return CharRNNApp(autostart=False, runs_dir=folder.parent, sweep=folder)


def row_while_training(folder: Path, trial: str, *, run: str, step: int):
    """`trial`'s row on the board while an engine holds `run`'s folder (the trial's own, or its
    finale's) and its status says `step`."""
    lock = RunLock(folder / run).acquire()
    try:
        (folder / run / "status.json").write_text(json.dumps({"step": step}))
        return read_board(folder).row(trial)
    finally:
        lock.release()


def cells(table: Leaderboard) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def test_the_board_is_in_tunes_order_with_each_trials_state(tmp_path):
    folder = tmp_path / "runs" / "tune-abc"
    state = make_sweep(folder)
    board = read_board(folder)
    assert board.problem is None and board.winner == "trial-02" and board.planned == 6
    assert [(r.name, r.state) for r in board.rows] == [
        ("trial-02", "finished"),  # the highest rung first
        ("trial-01", "waiting"), ("trial-03", "pruned"),  # then by loss
        ("trial-04", "diverged"), ("trial-06", "failed"),  # a diverged or failed trial last
        ("trial-05", "stopped"),  # meant to train, and no engine does: `tune --resume` resumes it
    ]
    settings = state.trials[1].settings
    row = board.rows[0]
    assert (row.model, row.dropout, row.lr, row.seq_len) == (f"lstm {settings.layers}x{settings.hidden}",
                                                            settings.dropout, settings.lr, settings.seq_len)
    assert row.tokens == state.trials[1].steps * settings.step_tokens and row.val == 1.87


def test_the_winner_training_on_shows_as_training_and_then_with_its_loss_after(tmp_path):
    """The finale: the plan done, the winner (trial-02, "finished" in sweep.json) trains on: the board
    probes its folder (training, its engine's tokens), and once it is done shows its best loss."""
    folder = tmp_path / "runs" / "tune-abc"
    state = make_sweep(folder)
    data = json.loads((folder / "sweep.json").read_text())
    (folder / "sweep.json").write_text(json.dumps({**data, "finale": {"trial": 1, "seconds": 60.0, "done": False}}))
    row = row_while_training(folder, "trial-02", run="trial-02", step=900)
    assert row is not None and row.live and row.state == "training" and row.val == 1.87
    assert row.tokens == 900 * state.trials[1].settings.step_tokens
    finale = {"trial": 1, "seconds": 60.0, "done": True, "loss": 1.52, "steps": 900}
    (folder / "sweep.json").write_text(json.dumps({**data, "finale": finale}))
    row = read_board(folder).row("trial-02")
    assert row is not None and row.state == "finished" and row.val == 1.52


def test_a_trial_whose_engine_runs_is_training_with_its_engines_tokens(tmp_path):
    folder = tmp_path / "runs" / "tune-abc"
    state = make_sweep(folder, ended=False)
    row = row_while_training(folder, "trial-05", run="trial-05", step=7)
    assert row is not None and row.live and row.state == "training"
    assert row.tokens == 7 * state.trials[4].settings.step_tokens
    lock = RunLock(folder).acquire()  # the sweep's loop runs: a trial it means to train is starting
    try:
        assert read_board(folder).row("trial-05").state == "starting"  # type: ignore[union-attr]
    finally:
        lock.release()


async def test_the_leaderboard_shows_the_board_and_charts_the_leading_trials_and_the_highlighted_one(tmp_path):
    folder = tmp_path / "runs" / "tune-abc"
    make_sweep(folder)
    app = sweep_app(folder)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SweepScreen)
        table = screen.query_one(Leaderboard)
        rows = cells(table)
        assert [r[1] for r in rows] == ["trial-02", "trial-01", "trial-03", "trial-04", "trial-06", "trial-05"]
        assert [r[-1] for r in rows][:3] == ["finished", "waiting", "pruned"]
        assert rows[3][-2] == "diverged" and rows[4][-2] == "-"
        chart = screen.query_one("#sweep-chart", LossChart)
        assert [r.name for r in chart.compared] == ["trial-02", "trial-01", "trial-03", "trial-04"]
        assert chart.view.x_unit == "tokens" and all(r.points for r in chart.compared)
        assert all("●" in r[0] for r in rows[:4]) and "●" not in rows[5][0]
        await pilot.press("down", "down", "down", "down", "down")  # trial-05: its curve takes the last colour
        await pilot.pause()
        assert [r.name for r in chart.compared] == ["trial-02", "trial-01", "trial-03", "trial-05"]
        title = str(screen.query_one("#sweep-title").render())
        assert title.startswith("tune-abc · ended: trial-02 won · 05:12/10:00 · 6/6 trials")
        await pilot.press("question_mark")  # the help lists the sweep's keys, and not the trial's
        assert isinstance(app.screen, HelpScreen)
        listed = {row.keys: row.text for section in app.screen.sections for row in section.rows}
        assert listed["⏎"].startswith("Attach to the highlighted trial") and "space" not in listed, listed


@pytest.mark.parametrize("content", [
    b"x" * (SWEEP_LIMIT + 1),  # huge
    b"{\"trials\": [" * 100_000,  # garbled, and nested past json's recursion
    b"[" * 100_000,
    b"\xff\xfe not json",
])
async def test_a_hostile_sweep_json_is_one_unreadable_line(tmp_path, content):
    folder = tmp_path / "runs" / "tune-abc"
    make_sweep(folder)
    (folder / SWEEP).write_bytes(content)
    app = sweep_app(folder)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        title = str(app.screen.query_one("#sweep-title").render())
        assert "unreadable" in title and "\n" not in title.strip()
        assert app.screen.query_one(Leaderboard).row_count == 0


@pytest.mark.parametrize("change", [
    lambda s: s["trials"][2].update(steps="12"),  # a field of the wrong type
    lambda s: s["trials"][2].update(name="../../etc"),  # a name that is no folder of the sweep
    lambda s: s["trials"][2].update(name=s["trials"][1]["name"]),  # two rows of one key
    lambda s: s["trials"][2]["settings"].update(lr=float("inf")),
    lambda s: s["reports"][0].update({"9" * 5000: 1.0}),  # int() of 5000 digits raises ValueError
    lambda s: s.update(trials=[s["trials"][0]] * 5000),
    lambda s: s.update(spent_s=-1),
    lambda s: s.pop("plan"),
])
def test_every_field_is_checked(tmp_path, change):
    folder = tmp_path / "runs" / "tune-abc"
    make_sweep(folder)
    data = json.loads((folder / SWEEP).read_text())
    change(data)
    (folder / SWEEP).write_text(json.dumps(data))
    board = read_board(folder)
    assert board.problem is not None and board.rows == [], board


def test_a_fifo_for_sweep_json_is_never_opened(tmp_path):
    folder = tmp_path / "runs" / "tune-abc"
    make_sweep(folder)
    os.unlink(folder / SWEEP)
    os.mkfifo(folder / SWEEP)
    board = read_board(folder)
    assert board.problem is not None and "FIFO" in board.problem


async def test_the_best_trial_training_is_attached_and_enter_attaches_the_highlighted_one(tmp_path):
    folder = tmp_path / "runs" / "tune-abc"
    make_sweep(folder, ended=False)
    data = json.loads((folder / SWEEP).read_text())
    data["trials"][1]["state"] = "running"  # trial-02, the best of rung 1, on its way to rung 2
    (folder / SWEEP).write_text(json.dumps(data))
    asked: list[str] = []
    app = sweep_app(folder)
    app.attach_run = asked.append  # type: ignore[method-assign]  # no engine here: what it was asked
    # trial-03 is pruned: an engine in its folder is none of the sweep's, and is never attached
    locks = [RunLock(folder / name).acquire() for name in ("trial-02", "trial-03", "trial-05")]
    try:
        (folder / "trial-05" / "status.json").write_text(json.dumps({"step": 7}))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert asked == [str(folder / "trial-02")]  # the best of those training (trial-05: no loss yet)
            screen = app.screen
            await pilot.press("down")  # trial-01: not training
            await pilot.press("enter")
            assert app.screen is screen and len(asked) == 1  # a toast says why, nothing attached
            table = screen.query_one(Leaderboard)
            table.move_cursor(row=[r.name for r in table.rows_shown].index("trial-05"))
            await pilot.press("enter")
            await pilot.pause()
            assert asked[-1] == str(folder / "trial-05") and not isinstance(app.screen, SweepScreen)
            await pilot.press("v")  # the sweep again
            await pilot.pause()
            assert isinstance(app.screen, SweepScreen)
    finally:
        for lock in locks:
            lock.release()


async def test_the_winner_training_on_is_followed(tmp_path):
    folder = tmp_path / "runs" / "tune-abc"
    state = make_sweep(folder)
    assert state.winner is not None
    data = json.loads((folder / SWEEP).read_text())
    data["winner"]["continued"] = True  # trial-02, finished in the sweep, trains on
    (folder / SWEEP).write_text(json.dumps(data))
    asked: list[str] = []
    app = sweep_app(folder)
    app.attach_run = asked.append  # type: ignore[method-assign]
    locks = [RunLock(folder / name).acquire() for name in ("trial-02",)]
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert asked == [str(folder / "trial-02")]
            assert "trial-02 won, trains on" in str(app.screen.query_one("#sweep-title").render())
            assert cells(app.screen.query_one(Leaderboard))[0][-1] == "training"
    finally:
        for lock in locks:
            lock.release()


async def test_the_winners_settings_training_afresh_are_followed_in_their_own_folder(tmp_path):
    """The finale trains trial-02's settings afresh in trial-02-final: the app attaches that engine
    (not trial-02's folder, where none runs), marks the winner's row attached and charts that run."""
    folder = tmp_path / "runs" / "tune-abc"
    make_sweep(folder)
    data = json.loads((folder / SWEEP).read_text())
    data["finale"] = {"trial": 1, "seconds": 60.0, "run": "trial-02-final", "done": False}
    (folder / SWEEP).write_text(json.dumps(data))
    (folder / "trial-02-final").mkdir()
    asked: list[str] = []
    app = sweep_app(folder)
    app.attach_run = asked.append  # type: ignore[method-assign]
    lock = RunLock(folder / "trial-02-final").acquire()
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert asked == [str(folder / "trial-02-final")]
            screen = app.screen
            assert isinstance(screen, SweepScreen) and screen.charted(None)[0] == "trial-02-final"
            assert cells(screen.query_one(Leaderboard))[0][1:2] == ["trial-02"]
            await pilot.press("enter")  # the winner's row, highlighted: its finale's engine
            await pilot.pause()
            assert asked[-1] == str(folder / "trial-02-final")
    finally:
        lock.release()


def test_the_continuation_resumes_the_winner_with_no_stop_condition_on_the_whole_machine(tmp_path):
    from charrnn_tui.engine.cli.arguments import resume_overrides
    from charrnn_tui.engine.cli.main import parse
    from charrnn_tui.engine.tune.sweep import continuation_argv

    folder = tmp_path / "runs" / "tune-abc"
    argv = continuation_argv(folder, "trial-02", ["--threads", "1", "--device", "cpu"], cores=8)
    args = parse(["train", *argv, "--headless"])
    assert Path(args.resume) == folder / "trial-02" and Path(args.runs_dir) == folder.parent
    assert resume_overrides(args) == {"max_time": 0.0, "threads": 8, "device": "cpu"}


def test_the_message_after_the_app_says_where_the_sweep_and_its_winner_are(tmp_path):
    from charrnn_tui.tui.sweep_app import sweep_exit_message

    folder = tmp_path / "runs" / "tune-abc"
    make_sweep(folder)
    assert "tune-abc ended: trial-02 won (its best.pt: " in sweep_exit_message(folder)
    data = json.loads((folder / SWEEP).read_text())
    data["winner"]["continued"] = True
    (folder / SWEEP).write_text(json.dumps(data))
    lock = RunLock(folder / "trial-02").acquire()
    try:
        message = sweep_exit_message(folder)
    finally:
        lock.release()
    assert "trial-02 won and trains on" in message and "attach tune-abc/trial-02" in message, message
    lock = RunLock(folder).acquire()  # the sweep's loop runs
    try:
        assert "goes on in the background" in sweep_exit_message(folder)
    finally:
        lock.release()


def test_a_winner_trained_afresh_is_probed_in_its_finales_folder_and_shows_its_tokens(tmp_path):
    """A finale that trains the winner's settings afresh (TRIAL-final): the board probes that folder
    for the winner's row while it trains, then shows its loss and its tokens; a run that is not a
    folder's name is refused in one line."""
    folder = tmp_path / "runs" / "tune-abc"
    state = make_sweep(folder)
    data = json.loads((folder / "sweep.json").read_text())
    running = {"trial": 1, "seconds": 60.0, "run": "trial-02-final", "done": False}
    (folder / "sweep.json").write_text(json.dumps({**data, "finale": running}))
    (folder / "trial-02-final").mkdir()
    row = row_while_training(folder, "trial-02", run="trial-02-final", step=40)
    step_tokens = state.trials[1].settings.step_tokens
    assert row is not None and row.live and row.state == "training" and row.tokens == 40 * step_tokens
    assert row.folder == "trial-02-final"  # what the app attaches, charts and samples
    done = {**running, "done": True, "loss": 1.52, "steps": 5000}
    (folder / "sweep.json").write_text(json.dumps({**data, "finale": done}))
    row = read_board(folder).row("trial-02")
    assert row is not None and row.state == "finished" and row.val == 1.52 and row.tokens == 5000 * step_tokens
    assert row.folder == "trial-02-final"
    worse = {**done, "loss": 1.99}  # it did not beat the trial's own: the trial's tokens and loss stand
    (folder / "sweep.json").write_text(json.dumps({**data, "finale": worse}))
    row = read_board(folder).row("trial-02")
    assert row is not None and row.val == 1.87 and row.tokens == state.trials[1].steps * step_tokens
    assert row.folder == "trial-02"
    for bad in ("../elsewhere", "a/b", "..", ""):
        (folder / "sweep.json").write_text(json.dumps({**data, "finale": {**done, "run": bad}}))
        assert read_board(folder).problem == f"{SWEEP}: the finale's run is not a folder's name: {bad!r}"
