"""Counts with their nouns: "1 step", never "1 steps", wherever a count is shown."""

from __future__ import annotations

from charrnn_tui.engine.config import TrainConfig
from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.run import schedule
from charrnn_tui.engine.run.schedule import Position
from charrnn_tui.engine.text.run_text import TextFingerprint, describe_change
from charrnn_tui.tui.widgets.quit_screen import QuitScreen


def test_one_is_singular_and_any_other_count_plural():
    assert plural(1, "step") == "1 step"
    assert [plural(n, "step") for n in (0, 2, 1200)] == ["0 steps", "2 steps", "1,200 steps"]
    assert plural(2, "process") == "2 processes" and plural(1, "process") == "1 process"
    assert plural(2, "epoch") == "2 epochs" and plural(2, "child", "children") == "2 children"


def test_the_number_shown_decides():
    assert plural(1.0004, "epoch", spec=".3g") == "1 epoch"  # shown as 1
    assert plural(1.5, "epoch", spec=".3g") == "1.5 epochs"
    assert plural(0.9999, "step", spec=",.0f") == "1 step"


async def test_the_quit_screen_says_1_step():
    from textual.app import App
    from textual.widgets import Static

    app: App[None] = App()
    async with app.run_test(size=(80, 24)) as pilot:
        await app.push_screen(QuitScreen(1))
        await pilot.pause()
        texts = [str(static.render()) for static in app.screen.query(Static)]
        assert any("1 step since the last checkpoint" in text for text in texts), texts


def test_messages_built_from_counts_of_one():
    stored = TextFingerprint.of("abc")
    assert describe_change(stored, "abcd") == "grew by 1 character at the end"
    config = TrainConfig(max_steps=501, max_epochs=2.0)
    assert schedule.describe_limits(config, Position(step=500, epoch=1.0, seconds=0.0)) == (
        "1 step more, to max-steps 501, 1 epoch more, to max-epochs 2")
