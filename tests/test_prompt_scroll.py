"""The prompt panel at 80x24, where its output has a few rows: after Enter, the prompt stays in view
while a long continuation streams in under it. No engine: its events are injected."""

from __future__ import annotations

from charrnn_tui.engine import events as ev
from charrnn_tui.tui.app import CharRNNApp
from charrnn_tui.tui.widgets.prompt_panel import PromptPanel

LINE = "and the rest is silence, so much more to say "


def screen_lines(app: CharRNNApp) -> list[str]:
    return [strip.text for strip in app.screen._compositor.render_strips()]


def panel_lines(app: CharRNNApp) -> list[str]:
    """The rows of the screen inside the prompt panel."""
    region = app.query_one(PromptPanel).region
    return [line[region.x:region.right] for line in screen_lines(app)[region.y:region.bottom]]


async def test_the_prompt_stays_in_view_while_its_continuation_streams():
    app = CharRNNApp(autostart=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("p", *"JULIET:", "enter")
        app.post_engine_event(ev.SampleStarted(7, 100, "JULIET:", 0.8, "prompt"))
        for chunk in range(12):  # some 600 characters: many more rows than the panel has
            app.post_engine_event(ev.SampleText(7, ("\n" if chunk == 0 else "") + f"<{chunk:02d}> {LINE}"))
            await pilot.pause()
            shown = "\n".join(panel_lines(app))
            assert "JULIET:" in shown, shown
            assert f"<{chunk:02d}>" in shown, shown  # the newest text, at the bottom
        app.post_engine_event(ev.SampleFinished(7, "\nThe end."))
        await pilot.pause()
        shown = "\n".join(panel_lines(app))
        assert "JULIET:" in shown and "The end." in shown, shown
        await pilot.press("escape")  # the panel shrinks as it loses focus: still both
        await pilot.pause()
        shown = "\n".join(panel_lines(app))
        assert "JULIET:" in shown and "The end." in shown, shown


def test_a_long_prompt_is_titled_by_its_end_on_one_line():
    from charrnn_tui.tui.widgets.prompt_panel import TITLE_PROMPT_CHARS, prompt_title

    title = prompt_title("It was the best of times,\nit was the worst of times, it was the age of wisdom").plain
    assert title.startswith("Prompt \u00b7 \u2026") and title.endswith("the age of wisdom")
    assert len(title) == len("Prompt \u00b7 ") + TITLE_PROMPT_CHARS and "\n" not in title
    assert prompt_title("JULIET:").plain == "Prompt \u00b7 JULIET:"
