"""Snapshots of the sweep's screen (`tune`): a sweep.json with trials in every state and their
validation curves, nothing training, no clock on screen."""

from __future__ import annotations

import pytest
from sweep_fixtures import make_sweep

from charrnn_tui.tui.app import CharRNNApp


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
def test_sweep_screen(snap_compare, tmp_path, size):
    folder = tmp_path / "runs" / "tune-abc"
    make_sweep(folder)

    async def run_before(pilot):
        await pilot.pause()
        pilot.app.clear_notifications()
        await pilot.pause()

    app = CharRNNApp(autostart=False, runs_dir=folder.parent, sweep=folder)
    assert snap_compare(app, terminal_size=size, run_before=run_before)
