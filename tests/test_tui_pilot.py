"""The app driven by Textual's pilot, with a real (tiny) engine and its server training behind it.

The app is always a client of the run's server; here the engine runs in a thread of the test
process (tests/helpers.py LocalRun) rather than a process of its own, which starts faster.

Pilot.press waits for the process to go idle (CPU time not advancing), at most 2 s a key; a
training thread never lets it, so tests that type many keys pause training first. Prompts and
temperature changes work while paused, which those tests check as well.
"""

from __future__ import annotations

import threading
import time

import pytest
from helpers import LocalRun, tiny_config

from charrnn_tui.engine.checkpoint import load_checkpoint
from charrnn_tui.engine.model.inference import load_model
from charrnn_tui.engine.protocol import Pause, Stop
from charrnn_tui.engine.run.trainer import Trainer
from charrnn_tui.engine.runs import LATEST
from charrnn_tui.tui.app import CharRNNApp
from charrnn_tui.tui.widgets.loss_chart import LossChart
from charrnn_tui.tui.widgets.prompt_panel import PromptPanel
from charrnn_tui.tui.widgets.quit_screen import QuitScreen


async def wait_for(pilot, condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def save_and_quit(pilot) -> None:
    """ctrl+c: the engine saves and stops, then the app exits."""
    await pilot.press("ctrl+c")
    await wait_for(pilot, lambda: pilot.app.trainer.state == "stopped", what="stop")


def make_app(corpus, runs_dir, name: str = "pilot", trainer_kwargs: dict | None = None, **overrides) -> CharRNNApp:
    settings = dict(report_interval=0.05, sample_interval=2.0, sample_length=40, eval_interval=40,
                    checkpoint_interval=0)
    settings.update(overrides)
    run = LocalRun(tiny_config(corpus, **settings), runs_dir, name, **(trainer_kwargs or {}))
    return app_for(run, runs_dir)


def app_for(run: LocalRun, runs_dir) -> CharRNNApp:
    app = CharRNNApp(run.connect, runs_dir=runs_dir)
    app.local_run = run
    return app


async def test_training_shows_loss_samples_and_status(repetitive_text, runs_dir):
    app = make_app(repetitive_text, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(app.view.val_losses) >= 1 and app.view.samples, what="an evaluation")
        chart = app.query_one(LossChart)
        await wait_for(pilot, lambda: len(chart.history) > 10 and len(chart.val) >= 1, what="the chart's data")
        rendered = "".join(chart.render_line(y).text for y in range(chart.size.height))
        assert any("\u2800" < c <= "\u28ff" for c in rendered) and "┤" in rendered  # braille dots and y ticks
        first = next(iter(app.view.samples.values()))
        assert first.step <= 1 and first.done  # the first sample comes at once: noise
        status = str(app.query_one("#status").render())
        assert "TRAINING" in status and "pilot" in status and "lstm 1x32" in status
        await save_and_quit(pilot)


async def test_space_pauses_and_resumes(repetitive_text, runs_dir):
    app = make_app(repetitive_text, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.step > 5, what="training")
        await pilot.press("space")
        await wait_for(pilot, lambda: app.view.state == "paused", what="paused")
        step = app.trainer.step
        await wait_for(pilot, lambda: "PAUSED" in str(app.query_one("#status").render()), what="PAUSED shown")
        await pilot.press("s")  # sampling still works while paused
        await wait_for(pilot, lambda: len(app.view.samples) >= 2, what="a sample while paused")
        assert app.trainer.step == step  # the loop went round (it served the sample) and made no step
        await pilot.press("space")
        await wait_for(pilot, lambda: app.trainer.step > step + 5, what="training again")
        assert app.view.state == "training"
        await save_and_quit(pilot)


async def test_c_writes_a_checkpoint_that_loads(repetitive_text, runs_dir):
    app = make_app(repetitive_text, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.step > 10, what="training")
        await pilot.press("c")
        await wait_for(pilot, lambda: app.view.saved_at is not None, what="checkpoint")
        loaded = load_model(runs_dir / "pilot" / LATEST, "cpu")
        assert loaded.step == app.view.saved_step > 10
        assert "saved  step" in str(app.query_one("#status").render())
        await save_and_quit(pilot)


async def test_temperature_keys_change_what_the_engine_uses(repetitive_text, runs_dir):
    app = make_app(repetitive_text, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        # A step first: paused at step 0, the sample would be of step 0, which the check below skips.
        await wait_for(pilot, lambda: app.view.state == "training" and app.view.step > 0, what="a step")
        await pilot.press("space")
        await wait_for(pilot, lambda: app.view.state == "paused", what="paused")
        await pilot.press("plus", "plus")
        await wait_for(pilot, lambda: app.trainer.temperature == pytest.approx(1.0), what="temperature 1.0")
        await pilot.press("minus", "left_square_bracket", "left_square_bracket")
        await wait_for(pilot, lambda: app.trainer.temperature == pytest.approx(0.7), what="temperature 0.7")
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: app.trainer.temperature == pytest.approx(0.8), what="temperature 0.8")
        await pilot.press("s")
        await wait_for(pilot, lambda: any(s.temperature == pytest.approx(0.8) and s.step > 0
                                          for s in app.view.samples.values()), what="a sample at 0.8")
        await save_and_quit(pilot)


@pytest.mark.parametrize(("size", "stacked"), [((80, 24), True), ((160, 45), False)])
async def test_t_continues_the_prompt_at_three_temperatures(size, stacked, repetitive_text, runs_dir):
    from charrnn_tui.tui.widgets.temperatures_screen import TemperaturesScreen

    app = make_app(repetitive_text, runs_dir)
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.view.step > 5, what="training")
        await pilot.press("p", *"abc", "escape")
        await pilot.press("t")
        screen = app.screen
        assert isinstance(screen, TemperaturesScreen) and screen.prefix == "abc"
        assert screen.has_class("-stacked") == stacked
        await wait_for(pilot, lambda: sorted(screen.shown) == [0.5, 1.0, 1.5]
                       and all(s.done for s in screen.shown.values()), what="three continuations")
        for temperature, sample in screen.shown.items():
            assert sample.prompt == "abc" and sample.temperature == temperature and sample.text
            assert sample.source == "temperatures" and len(sample.probs) == len(sample.text)
        assert app.trainer.temperature == pytest.approx(0.8)  # the run's own is unchanged
        from charrnn_tui.tui.widgets.samples_panel import SampleView

        assert all(view.sample.source != "temperatures" for view in app.query(SampleView))  # this viewer's only
        first = {t: s.sample_id for t, s in screen.shown.items()}
        await pilot.press("t")
        await wait_for(pilot, lambda: len(screen.shown) == 3 and all(
            s.sample_id != first[t] and s.done for t, s in screen.shown.items()), what="three new continuations")
        await pilot.press("escape")
        assert not isinstance(app.screen, TemperaturesScreen)
        await save_and_quit(pilot)


async def test_t_again_on_the_temperatures_screen_reaches_the_app_as_a_message(monkeypatch):
    """The screen asks the app (TemperaturesScreen.Again), and the app asks the run: no engine here,
    a client that notes what it is asked."""
    from charrnn_tui.engine import events as ev
    from charrnn_tui.engine.protocol import Prompt
    from charrnn_tui.tui.widgets.temperatures_screen import TEMPERATURES, TemperaturesScreen

    class Client:
        def __init__(self):
            self.prompts, self.detached = [], False

        def request(self, request):
            if isinstance(request, Prompt):  # not the next tokens, asked as the prompt is typed
                self.prompts.append((request.text, request.temperature))

        def detach(self):
            self.detached = True

    heard = []
    handler = CharRNNApp.on_temperatures_screen_again
    monkeypatch.setattr(CharRNNApp, "on_temperatures_screen_again",
                        lambda app, message: (heard.append(message.prefix), handler(app, message)))
    app = CharRNNApp(autostart=False)
    async with app.run_test(size=(80, 24)) as pilot:
        app.trainer = client = Client()
        app.post_engine_event(ev.StateChanged("training"))
        await pilot.press("p", *"abc", "escape", "t")
        assert isinstance(app.screen, TemperaturesScreen)
        asked = [("abc", t) for t in TEMPERATURES]
        assert client.prompts == asked
        await pilot.press("t")  # the screen's own key: it tells the app, which asks again
        assert heard == ["abc"] and client.prompts == asked * 2
    assert client.detached  # leaving, the app leaves the run as it is


async def test_the_palette_sets_how_often_the_run_samples():
    from charrnn_tui.engine import events as ev
    from charrnn_tui.engine.protocol import SetSampleInterval

    class Client:
        def __init__(self):
            self.asked = []

        def request(self, request):
            self.asked.append(request)

        def detach(self):
            pass

    app = CharRNNApp(autostart=False)
    async with app.run_test(size=(80, 24)):
        app.trainer = client = Client()
        app.post_engine_event(ev.StateChanged("training"))
        commands = {c.title: c.callback for c in app.get_system_commands(app.screen)}
        commands["Live samples every minute"]()
        commands["Live samples off"]()
    assert client.asked == [SetSampleInterval(60), SetSampleInterval(0)]


async def test_e_steps_early_stop_through_its_settings_and_the_status_shows_it(repetitive_text, runs_dir):
    from charrnn_tui.tui.widgets.status_panel import render_status

    app = make_app(repetitive_text, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.state == "training", what="training")
        assert app.view.early_stop is None and "early stop" not in render_status(app.view).plain
        for expected in (10, 5, 3, None, 10):  # the most lenient first: stepping never ends a run by the way
            await pilot.press("e")
            await wait_for(pilot, lambda expected=expected: app.view.early_stop == expected,
                           what=f"early stop {expected}")
        assert "early stop 10" in render_status(app.view).plain
        await save_and_quit(pilot)


async def test_typed_prompt_streams_a_continuation_and_history_recalls_it(repetitive_text, runs_dir):
    app = make_app(repetitive_text, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.step > 5, what="training")
        await pilot.press("space")
        await wait_for(pilot, lambda: app.view.state == "paused", what="paused")
        await pilot.press("p")
        assert app.prompt_focused
        await pilot.press(*"the quick ", "c", "+")  # letters, space and + are text here, not keys
        assert app.query_one("#prompt-input").value == "the quick c+"
        await pilot.press("backspace", "backspace", "enter")
        await wait_for(pilot, lambda: any(s.source == "prompt" and s.done for s in app.view.samples.values()),
                       what="a continuation")
        await wait_for(pilot, lambda: len(str(app.query_one("#prompt-output").render())) > len("the quick ") + 10,
                       what="the continuation shown")
        output = str(app.query_one("#prompt-output").render())
        assert output.startswith("the quick ")
        assert app.trainer.temperature == pytest.approx(0.8)  # "+" was typed, not pressed
        await pilot.press("z", "up")
        assert app.query_one("#prompt-input").value == "the quick "
        await pilot.press("down")  # past the latest prompt: what was being typed
        assert app.query_one("#prompt-input").value == "z"
        await pilot.press("escape")
        assert not app.prompt_focused
        await save_and_quit(pilot)


async def test_q_asks_then_saves_and_exits(repetitive_text, runs_dir):
    app = make_app(repetitive_text, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.step > 10, what="training")
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), what="the quit question")
        await pilot.press("y")
        await wait_for(pilot, lambda: app.trainer.state == "stopped", what="stop")
        await wait_for(pilot, lambda: app.return_value is not None, what="the app to exit")
    assert app.return_value == 0
    checkpoint = load_checkpoint(runs_dir / "pilot" / LATEST)
    assert checkpoint["step"] == app.trainer.step


async def test_q_then_escape_keeps_training(repetitive_text, runs_dir):
    app = make_app(repetitive_text, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.step > 5, what="training")
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), what="the quit question")
        await pilot.press("escape")
        step = app.trainer.step
        await wait_for(pilot, lambda: app.trainer.step > step, what="training to go on")
        assert not app.quitting
        await save_and_quit(pilot)


async def test_unreadable_corpus_shows_an_error_not_a_crash(tmp_path, runs_dir):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 latin-1 text")
    app = make_app(bad, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.state == "error", what="the error state")
        await wait_for(pilot, lambda: "ERROR" in str(app.query_one("#status").render()), what="ERROR shown")
        status = str(app.query_one("#status").render())
        assert "ERROR" in status and "byte offset 3" in status
        assert any("byte offset 3" in n.message for n in app._notifications)
        await pilot.press("q")
    assert app.return_value == 1
    assert not (runs_dir / "pilot").exists()


async def test_the_screen_adapts_to_resizing(repetitive_text, runs_dir):
    app = make_app(repetitive_text, runs_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.view.step > 5, what="training")
        assert app.screen.has_class("-wide")
        await pilot.resize_terminal(60, 30)
        await wait_for(pilot, lambda: app.screen.has_class("-narrow"), what="the narrow layout")
        assert app.query_one("#status").region.width == 60
        await save_and_quit(pilot)


async def test_resume_reopens_the_run_with_its_history_and_samples(repetitive_text, runs_dir):
    first = Trainer(tiny_config(repetitive_text, max_steps=60, eval_interval=20, sample_interval=0.001,
                                sample_length=20, report_interval=0.05), runs_dir=runs_dir, run_name="again")
    assert first.run() == "finished"
    run = LocalRun(None, runs_dir, None, resume=runs_dir / "again" / LATEST, overrides={"max_steps": 20})
    app = app_for(run, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.info is not None, what="start")
        assert app.view.info.resumed_step == 60
        assert len(app.view.val_losses) >= 3 and app.view.first_train_loss > 2.5
        assert any(s.source == "earlier" for s in app.view.samples.values())
        await wait_for(pilot, lambda: app.view.state == "finished", what="the run to finish")
        assert app.trainer.step == 80
        await wait_for(pilot, lambda: "FINISHED" in str(app.query_one("#status").render()), what="FINISHED shown")
        await pilot.press("q")
    assert app.return_value == 0


async def test_the_app_starts_a_detached_engine_and_leaves_it_training_on_d(repetitive_text, runs_dir):
    """The path `charrnn-tui CORPUS` takes: the engine in a process of its own, the app its client."""
    import functools

    from charrnn_tui.engine.serve.client import EngineClient
    from charrnn_tui.tui.app import _launch_and_attach

    argv = [str(repetitive_text), "--preset", "tiny", "--hidden", "32", "--seq-len", "16", "--batch-size", "4",
            "--device", "cpu", "--threads", "1", "--sample-interval", "0", "--runs-dir", str(runs_dir),
            "--name", "child"]
    app = CharRNNApp(functools.partial(_launch_and_attach, argv), runs_dir=runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.step > 20, timeout=60, what="training in the engine process")
        await pilot.press("space")
        await wait_for(pilot, lambda: app.view.state == "paused", what="paused")
        app.on_prompt_panel_submitted(PromptPanel.Submitted("the quick"))
        await wait_for(pilot, lambda: any(s.source == "prompt" and s.done for s in app.view.samples.values()),
                       what="a continuation from the engine")
        await pilot.press("plus")
        await wait_for(pilot, lambda: app.trainer.temperature == pytest.approx(0.9), what="temperature")
        await pilot.press("space")
        await pilot.press("d")
    assert app.return_value == 0
    watcher = EngineClient(runs_dir / "child", viewer=False)
    watcher.connect()  # the run outlived the app
    first = watcher.status()["step"]
    deadline = time.monotonic() + 30
    while watcher.status()["step"] <= first:  # and trains on
        assert time.monotonic() < deadline, "the run stopped training when the app left"
        time.sleep(0.05)
    watcher.request(Stop(save=True))
    assert watcher.run() == "stopped"
    assert load_checkpoint(runs_dir / "child" / LATEST)["step"] > first


async def test_a_failed_checkpoint_pauses_training_and_keeps_the_old_one(repetitive_text, runs_dir, monkeypatch):
    import errno

    import charrnn_tui.engine.checkpoint as checkpoint_module

    app = make_app(repetitive_text, runs_dir, "full", trainer_kwargs={"pause_on_save_error": True},
                   sample_interval=0, eval_interval=10_000)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.step > 5, what="training")
        await pilot.press("c")
        await wait_for(pilot, lambda: app.view.saved_at is not None, what="a first checkpoint")
        good_step = app.view.saved_step
        real_torch_save = checkpoint_module.torch.save

        def disk_full(obj, f):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
        await wait_for(pilot, lambda: app.view.step > good_step + 5, what="more training")
        await pilot.press("c")
        await wait_for(pilot, lambda: app.view.state == "paused", what="a pause after the failed save")
        assert any("no space left on device" in n.message for n in app._notifications)
        assert load_checkpoint(runs_dir / "full" / LATEST)["step"] == good_step  # the old one, intact
        monkeypatch.setattr(checkpoint_module.torch, "save", real_torch_save)  # space freed
        await pilot.press("c")
        await wait_for(pilot, lambda: app.view.saved_step > good_step, what="a save after freeing space")
        await save_and_quit(pilot)


async def test_attaching_shows_the_history_at_once(repetitive_text, runs_dir):
    run = LocalRun(tiny_config(repetitive_text, report_interval=0.05, eval_interval=20, sample_interval=0.2,
                               sample_length=20), runs_dir, "history").start()
    try:
        deadline = time.monotonic() + 60
        while run.trainer.trained.step < 70:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        run.trainer.request(Pause())
        app = app_for(run, runs_dir)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.view.info is not None and app.view.samples and app.view.step >= 70,
                           what="the welcome")
            assert len(app.view.val_losses) >= 3 and app.view.first_train_loss > 2.5
            assert len(app.view.train_losses) >= 60 and app.view.step >= 70
            assert any(s.done for s in app.view.samples.values())
            assert app.view.last_val_bits is not None  # the last validation's figures too, not at the next one
            await wait_for(pilot, lambda: "PAUSED" in str(app.query_one("#status").render()), what="PAUSED shown")
            assert "history" in str(app.query_one("#status").render())
            await pilot.press("d")
        assert app.return_value == 0
        assert run.thread.is_alive()  # detaching left the run as it was
    finally:
        run.stop()


async def test_two_apps_on_one_run_see_each_others_pause(repetitive_text, runs_dir):
    run = LocalRun(tiny_config(repetitive_text, report_interval=0.05, sample_interval=0), runs_dir, "shared").start()
    first, second = app_for(run, runs_dir), app_for(run, runs_dir)
    try:
        async with first.run_test(size=(80, 24)) as one, second.run_test(size=(80, 24)) as two:
            await wait_for(one, lambda: first.view.state == "training", what="first attached")
            await wait_for(two, lambda: second.view.state == "training", what="second attached")
            await one.press("space")
            await wait_for(two, lambda: second.view.state == "paused", what="the second app to see the pause")
            await two.press("plus")
            await wait_for(one, lambda: first.view.temperature == pytest.approx(0.9), what="the temperature")
            await two.press("space")
            await wait_for(one, lambda: first.view.state == "training", what="the first app to see the resume")
            await one.press("d")
            step = second.view.step
            await wait_for(two, lambda: second.view.step > step + 5, what="training on after one detached")
            await two.press("d")
    finally:
        run.stop()


async def test_the_runs_screen_lists_runs_and_attaches_to_another(repetitive_text, runs_dir):
    from charrnn_tui.tui.widgets.runs_screen import RunsScreen

    Trainer(tiny_config(repetitive_text, max_steps=20), runs_dir=runs_dir, run_name="old").run()
    first = LocalRun(tiny_config(repetitive_text, report_interval=0.05, sample_interval=0), runs_dir, "first").start()
    second = LocalRun(tiny_config(repetitive_text, report_interval=0.05, sample_interval=0), runs_dir, "second").start()
    try:
        app = app_for(first, runs_dir)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.view.info is not None and app.view.info.run_name == "first",
                           what="the first run")
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="the runs screen")
            screen = app.screen
            await wait_for(pilot, lambda: {e.name for e in screen.entries} == {"old", "first", "second"},
                           what="three runs listed")
            states = {e.name: e.state for e in screen.entries}
            assert states["old"] == "finished" and states["first"] in ("training", "starting")
            screen.query_one("DataTable").move_cursor(row=[e.name for e in screen.entries].index("old"))
            await pilot.press("enter")  # not live: it says so and stays
            assert isinstance(app.screen, RunsScreen)
            screen.query_one("DataTable").move_cursor(row=[e.name for e in screen.entries].index("second"))
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.view.info is not None and app.view.info.run_name == "second",
                           what="attached to the second run")
            step = app.view.step
            await wait_for(pilot, lambda: app.view.step > step, what="the second run streaming")
            assert first.thread.is_alive()  # the first was left training
            await pilot.press("d")
    finally:
        first.stop()
        second.stop()


async def test_marked_runs_of_the_same_corpus_are_overlaid_on_the_chart(repetitive_text, runs_dir, tmp_path):
    from charrnn_tui.tui.chart import OTHER
    from charrnn_tui.tui.widgets.loss_chart import LossChart
    from charrnn_tui.tui.widgets.runs_screen import RunsScreen

    other_corpus = tmp_path / "other.txt"
    other_corpus.write_text("zyxwvut " * 400)
    Trainer(tiny_config(repetitive_text, max_steps=60, eval_interval=20), runs_dir=runs_dir, run_name="before").run()
    Trainer(tiny_config(other_corpus, max_steps=40, eval_interval=20), runs_dir=runs_dir, run_name="elsewhere").run()
    run = LocalRun(tiny_config(repetitive_text, report_interval=0.05, sample_interval=0), runs_dir, "now").start()
    try:
        app = app_for(run, runs_dir)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.view.step > 5, what="training")
            chart = app.query_one(LossChart)
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and len(app.screen.entries) == 3,
                           what="the runs screen")
            screen = app.screen
            for name in ("before", "elsewhere"):
                screen.query_one("DataTable").move_cursor(row=[e.name for e in screen.entries].index(name))
                await pilot.press("space")
            assert len(screen.marked) == 2
            await pilot.press("c")
            await wait_for(pilot, lambda: not isinstance(app.screen, RunsScreen), what="the chart")
            assert [r.name for r in chart.compared] == ["before"]  # another corpus is not comparable
            assert [p[0] for p in chart.compared[0].points] == [20, 40, 60]
            title = str(app.query_one("#loss").border_title)
            assert title.startswith("Loss (nats/char) vs") and " before" in title
            assert OTHER in {v for row in _chart_layers(chart) for v in row}
            await pilot.press("x")  # by time: the other run's curve by its own training time
            assert OTHER in {v for row in _chart_layers(chart) for v in row}
            await pilot.press("x")  # by tokens: the other run's as its metrics count them, this run's by its batch
            assert chart.view.x_unit == "tokens" and OTHER in {v for row in _chart_layers(chart) for v in row}
            # Its metrics' count: a step's 4 streams of 16 tokens, fewer where an epoch ended mid-batch.
            other_tokens = [x for x, _ in chart._series().others[0]]
            assert other_tokens == [float(p[3]) for p in chart.compared[0].points]
            assert other_tokens[0] == 20 * 4 * 16 and other_tokens[-1] <= 60 * 4 * 16
            assert chart._x_of_step()(1.0) == 4 * 16  # this run's: a step is its batch's 4 streams of 16
            await pilot.press("r")  # reopened, the compared run is still marked; c with none marked clears
            await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="the runs screen again")
            assert app.screen.marked == {str(runs_dir / "before")}
            screen = app.screen
            screen.query_one("DataTable").move_cursor(row=[e.name for e in screen.entries].index("before"))
            await pilot.press("space", "c")
            await wait_for(pilot, lambda: not chart.compared, what="the overlay gone")
            await pilot.press("d")
    finally:
        run.stop()


def _chart_layers(chart) -> list[list[int]]:
    from charrnn_tui.tui.chart import plot

    canvas, _, _ = plot(chart._series(), 40, 8, log_scale=False, smoothing=0.6, fitted=True)
    return canvas.layer


async def test_typing_shows_what_the_model_expects_next_and_tab_takes_it(repetitive_text, runs_dir):
    from charrnn_tui.tui.widgets.prompt_panel import PromptInput, PromptPanel

    app = make_app(repetitive_text, runs_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.step > 5, what="training")
        panel = app.query_one(PromptPanel)
        await pilot.press("p", *"ab")
        await wait_for(pilot, lambda: panel.expectation is not None and panel.expectation.text == "ab",
                       what="suggestions for 'ab'")
        line = str(app.query_one("#suggestions").render())
        assert "next:" in line and "%" in line
        top = panel.expectation.top[0][0]
        assert len(panel.expectation.probs) == 1  # how likely "b" was after "a"
        await pilot.press("tab")
        prompt_input = app.query_one(PromptInput)
        assert prompt_input.value == "ab" + top and app.focused is prompt_input
        await wait_for(pilot, lambda: panel.expectation.text == "ab" + top, what="suggestions after the tab")
        await pilot.press("ctrl+n", "ctrl+n", "shift+tab")
        assert panel.highlight == 1
        second = panel.expectation.top[1][0]
        await pilot.press("tab")
        assert prompt_input.value == "ab" + top + second
        await pilot.press("backspace")
        await wait_for(pilot, lambda: panel.expectation.text == "ab" + top, what="suggestions after a backspace")
        # the arrows, then enter: a completion menu
        await pilot.press("down", "down", "up")
        assert panel.choosing and panel.highlight == 1
        assert "enter takes:" in str(app.query_one("#suggestions").render())
        assert app.screen.active_bindings["escape"].binding.action == "let_go"  # the footer says what escape does
        second = panel.expectation.top[1][0]
        await pilot.press("enter")
        assert prompt_input.value == "ab" + top + second and not panel.choosing
        assert not any(s.source == "prompt" for s in app.view.samples.values())  # taken, not sent
        await wait_for(pilot, lambda: panel.expectation.text == "ab" + top + second, what="suggestions after enter")
        await pilot.press("down", "up", "up")  # up from the first suggestion lets the choice go
        assert not panel.choosing and panel.highlight == 0
        await pilot.press("down", "escape")  # escape lets the choice go and stays in the prompt
        assert not panel.choosing and app.focused is prompt_input
        assert "next:" in str(app.query_one("#suggestions").render())
        assert app.screen.active_bindings["escape"].binding.action == "leave_prompt"
        await pilot.press(*["backspace"] * len(second))
        await wait_for(pilot, lambda: panel.expectation.text == "ab" + top, what="suggestions after a backspace")
        second = panel.expectation.top[1][0]
        await pilot.press("down", "left", "enter")  # taken at the end, where the model expects it
        assert prompt_input.value == "ab" + top + second
        await wait_for(pilot, lambda: panel.expectation.text == "ab" + top + second, what="suggestions")
        await pilot.press("down", "x")  # typing lets the choice go: enter sends the prompt
        assert not panel.choosing
        await pilot.press("enter")
        assert prompt_input.value == "" and prompt_input.history[-1] == "ab" + top + second + "x"
        await pilot.press("ctrl+t")  # paused (from the prompt): it still answers
        await wait_for(pilot, lambda: app.view.state == "paused", what="paused")
        await pilot.press(*"xyz", "backspace")  # faster than the run's request limit: the last text is answered
        await wait_for(pilot, lambda: panel.expectation.text == "xy", what="suggestions while paused")
        await pilot.press("down")
        assert panel.choosing
        app.screen.set_focus(None)  # a click elsewhere lets the choice go: after p, enter sends again
        await pilot.pause()
        assert not panel.choosing
        await save_and_quit(pilot)


async def test_an_app_that_falls_behind_keeps_at_most_its_inbox_and_catches_up(repetitive_text, runs_dir):
    app = make_app(repetitive_text, runs_dir, report_interval=0.01)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.step > 5, what="training")
        room = app.inbox._room
        waiting, room_wait = threading.Event(), room.wait
        room.wait = lambda timeout=None: (waiting.set(), room_wait(timeout))[1]
        app.inbox.limit = 20
        assert waiting.wait(30)  # the app's own thread busy: nothing drains the inbox, and the reader waits
        assert len(app.inbox) == 20  # rather than queue more
        step = app.view.step
        await wait_for(pilot, lambda: app.view.step > step + 20, what="catching up")
        assert app.view.history.steps >= app.view.step - 1  # and the chart's history has no hole
        await save_and_quit(pilot)


async def test_only_a_save_the_user_asked_for_is_toasted(repetitive_text, runs_dir):
    app = make_app(repetitive_text, runs_dir, checkpoint_interval=10)
    toasts: list[str] = []
    async with app.run_test(size=(80, 24)) as pilot:
        real_notify = app.notify
        app.notify = lambda message, **kw: (toasts.append(message), real_notify(message, **kw))[1]
        await wait_for(pilot, lambda: app.view.saved_step >= 30, what="periodic checkpoints")
        assert not [t for t in toasts if t.startswith("checkpoint saved")]  # the status says so, quietly
        await pilot.press("c")  # save now
        await wait_for(pilot, lambda: any(t.startswith("checkpoint saved") for t in toasts), what="the toast")
        await save_and_quit(pilot)
    assert len([t for t in toasts if t.startswith("checkpoint saved")]) == 1
