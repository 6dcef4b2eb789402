"""The help (`?`, F1): the keys of the context it was opened from, read from the bindings. No engine
runs here: the app is made with autostart=False, and keys that need a run are only listed."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from textual import actions
from textual.binding import Binding
from textual.screen import Screen

from charrnn_tui.tui import app as app_module
from charrnn_tui.tui.app import CharRNNApp
from charrnn_tui.tui.key_help import KeySection
from charrnn_tui.tui.widgets.help_screen import HelpScreen, keys_table
from charrnn_tui.tui.widgets.prompt_panel import PromptInput
from charrnn_tui.tui.widgets.runs_screen import RunsScreen


def rows(screen: Screen) -> dict[str, str]:
    """The help's rows, keys -> text."""
    assert isinstance(screen, HelpScreen)
    return {row.keys: row.text for section in screen.sections for row in section.rows}


def titles(screen: Screen) -> list[str | None]:
    assert isinstance(screen, HelpScreen)
    return [section.title for section in screen.sections]


def shown_text(sections: list[KeySection]) -> str:
    console = Console(width=100, record=True)
    console.print(keys_table(sections))
    return console.export_text()


async def test_question_mark_lists_the_main_screens_keys_shown_or_not_and_escape_closes():
    app = CharRNNApp(autostart=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        help_screen = app.screen
        listed = rows(help_screen)
        assert listed["o"] == "Shade sampled tokens by the model's confidence, or not"  # show=False
        assert listed["p /"] == "Type a prompt for the model to continue"  # one row for the keys of one action
        assert listed["q ^q"] == "Stop the run and quit (asks whether to save)"
        assert titles(help_screen)[0] == "The app"
        assert "Shade sampled tokens by the model's confidence" in shown_text(help_screen.sections)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_question_mark_and_f1_open_and_close_it():
    app = CharRNNApp(autostart=False)
    async with app.run_test(size=(80, 24)) as pilot:
        for key in ("question_mark", "f1"):
            await pilot.press(key)
            assert isinstance(app.screen, HelpScreen)
            await pilot.press(key)
            assert not isinstance(app.screen, HelpScreen)
            assert len(app.screen_stack) == 1


async def test_every_binding_that_works_on_the_main_screen_is_listed():
    app = CharRNNApp(autostart=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        listed_keys = {key for keys in rows(app.screen) for key in keys.split(" ")}
        for binding in Binding.make_bindings(CharRNNApp.BINDINGS):
            _, action, parameters = actions.parse(binding.action)
            if app.check_action(action, parameters) is False:  # space resumes only while paused
                continue
            assert app.get_key_display(binding) in listed_keys, binding


async def test_a_key_added_to_the_bindings_is_listed_with_no_change_to_the_help():
    class MoreKeys(CharRNNApp):
        CSS_PATH = str(Path(app_module.__file__).with_name("app.tcss"))  # else read beside this file
        BINDINGS = [Binding("k", "bell", "Ring the terminal's bell", show=False)]

    app = MoreKeys(autostart=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert rows(app.screen)["k"] == "Ring the terminal's bell"


async def test_in_the_prompt_question_mark_is_text_and_f1_lists_the_prompts_keys():
    app = CharRNNApp(autostart=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("p", "question_mark")
        assert app.query_one(PromptInput).value == "?" and not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        listed = rows(app.screen)
        assert titles(app.screen)[:3] == ["The prompt", "Input", "The app"]
        assert listed["tab"] == "Add the highlighted next token to the prompt"
        assert listed["^t"] == "Pause or resume training (works while typing)"
        assert "space" not in listed and "c" not in listed  # letters and space are text there
        await pilot.press("escape")
        assert isinstance(app.focused, PromptInput)  # back in the prompt, as it was


async def test_on_the_runs_screen_it_lists_the_runs_keys_and_the_apps_that_still_work(tmp_path):
    app = CharRNNApp(autostart=False, runs_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("r")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("question_mark")
        listed = rows(app.screen)
        assert titles(app.screen)[:2] == ["Runs", "The app"]
        assert listed["space"].startswith("Mark the highlighted run")
        assert listed["^c"] == "Save a checkpoint, stop the run and quit, without asking"  # the app's, not a copy
        assert "p /" not in listed and "o" not in listed  # the main screen's keys do not reach there
        await pilot.press("question_mark")
        assert isinstance(app.screen, RunsScreen)
