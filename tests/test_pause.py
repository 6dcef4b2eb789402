"""Pause, resume and their toggle (the app's space and ctrl+t) as the loop applies them."""

import threading

from helpers import tiny_config, wait_until

from charrnn_tui.engine.events import StateChanged
from charrnn_tui.engine.protocol import Pause, Resume, Stop, TogglePause
from charrnn_tui.engine.run.trainer import Trainer


def test_a_toggle_pauses_a_training_run_and_resumes_a_paused_one(repetitive_text, runs_dir):
    states: list[str] = []
    trainer = Trainer(tiny_config(repetitive_text, max_steps=100_000, eval_interval=100_000), runs_dir=runs_dir,
                      on_event=lambda e: states.append(e.state) if isinstance(e, StateChanged) else None)
    thread = threading.Thread(target=trainer.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: trainer.trained.step > 3, "training")
        trainer.request(TogglePause())
        wait_until(lambda: trainer.controls.paused, "the toggle to pause")
        assert states[-1] == "paused"
        step = trainer.trained.step
        trainer.request(TogglePause())
        wait_until(lambda: trainer.trained.step > step + 3, "the toggle to resume")
        assert not trainer.controls.paused and states[-1] == "training"
        trainer.request(Pause())
        wait_until(lambda: trainer.controls.paused, "pause")
        trainer.request(Pause())  # pausing a paused run keeps it paused
        trainer.request(Resume())
        step = trainer.trained.step
        wait_until(lambda: trainer.trained.step > step + 3, "resume")
        trainer.request(Resume())  # resuming a training run changes nothing
        assert states.count("paused") == 2
    finally:
        trainer.request(Stop())
        thread.join(60)
    assert not thread.is_alive() and trainer.state == "stopped"
