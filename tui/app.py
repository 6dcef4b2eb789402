"""The charrnn-tui app: watch a model learn, steer it, talk to it.

The app is a client of the run's engine (engine/serve/server.py), which trains in a process of its own:
the app starts one, or attaches to one already running, and talks to it the same way either way
(engine/serve/client.py). A worker thread relays its events, which arrive here as messages. They are
folded into a RunView at once (cheap) and drawn on a timer, so a fast GPU never floods the screen
and the screen never holds training up. Leaving the app (`d`, a closed terminal) leaves the run
training; `q` stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input
from textual.worker import Worker, WorkerState

from charrnn_tui.engine import events as ev
from charrnn_tui.engine.printable import printable, printable_line
from charrnn_tui.engine.protocol import (
    AskNextTokens,
    Pause,
    Prompt,
    Resume,
    SampleNow,
    SaveNow,
    SetEarlyStop,
    SetSampleInterval,
    SetTemperature,
    Stop,
    TogglePause,
)
from charrnn_tui.engine.runs import RunEntry

from .chart_view import ChartView
from .compared_runs import MAX_COMPARED, ComparedRun
from .engine_inbox import CONNECTED, EngineInbox
from .key_help import key_sections
from .run_view import RunView, step_temperature
from .textual_caches import bound_textual_caches
from .widgets.help_screen import HelpScreen
from .widgets.loss_panel import LossPanel
from .widgets.prompt_panel import PromptInput, PromptPanel
from .widgets.quit_screen import QuitScreen
from .widgets.runs_screen import RunsChoice
from .widgets.samples_panel import SamplesPanel
from .widgets.status_panel import StatusPanel
from .widgets.sweep_screen import SweepScreen
from .widgets.temperatures_screen import TEMPERATURES, TemperaturesScreen

if TYPE_CHECKING:  # imported where a run is connected to: the app opens without the client's imports
    from charrnn_tui.engine.serve.client import EngineClient

# Connects to the run's engine with the given event callback; called in the worker thread, since
# starting an engine takes seconds.
EngineFactory = Callable[[Callable[[ev.Event], None]], "EngineClient"]
# Seconds between screen updates from training (keys and state changes redraw at once). Each
# redraw costs the app CPU that training, on a busy machine, does not get: at 4 a second an
# attached app took 5.5% of a core on 2 cores; at 1 a second (with the engine sending progress
# once a second, engine/serve/server.py) 1.3%.
REDRAW_INTERVAL = 1.0
TYPING_INTERVAL = 0.06  # seconds between next-token requests while a key repeats (the run takes 20/s)
COMPARE_REFRESH = 5.0  # seconds between reads of the compared runs' metrics
# What `e` steps through: the most lenient first, so that stepping never ends a run by the way.
EARLY_STOP_CHOICES = (None, 10, 5, 3)
IMMEDIATE_EVENTS = (ev.StateChanged, ev.SettingsChanged, ev.CheckpointSaved, ev.Started)
TEMPERATURE_KEYS = Binding.Group("Temp")  # one footer entry for both temperature keys
# Bound to plain keys, which the prompt takes as text while it has focus.
SINGLE_KEY_ACTIONS = {"pause", "resume", "checkpoint", "temperature", "sample", "focus_prompt", "quit_asking",
                      "detach", "runs", "chart_log", "chart_fit", "chart_x_unit", "chart_window", "chart_smoothing",
                      "chart_maximise", "sweep"}


class EngineEvents(Message):
    """Events wait in the app's inbox (tui/engine_inbox.py): one wake-up for all that arrived."""


class CharRNNApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "charrnn-tui"
    AUTO_FOCUS = None  # the prompt takes focus only when asked, so single-key bindings work
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (70, "-wide")]
    BINDING_GROUP_TITLE = "The app"  # the help's title for these keys (tui/key_help.py)
    # The help (`?`) lists these as they are: a description short enough for the footer, a tooltip
    # where it needs more words; show=False ones are in the help alone.
    BINDINGS = [
        Binding("space", "pause", "Pause", tooltip="Pause training (samples and prompts still work)"),
        Binding("space", "resume", "Resume", tooltip="Resume training"),
        Binding("ctrl+t", "toggle_pause", "Pause/resume", priority=True,
                tooltip="Pause or resume training (works while typing)"),
        Binding("c", "checkpoint", "Save", tooltip="Save a checkpoint now"),
        Binding("plus,equals_sign,right_square_bracket", "temperature(1)",
                "Raise the temperature of the next samples and prompts", group=TEMPERATURE_KEYS),
        Binding("minus,left_square_bracket", "temperature(-1)",
                "Lower the temperature of the next samples and prompts", group=TEMPERATURE_KEYS),
        Binding("s", "sample", "Sample", tooltip="Write a live sample now"),
        Binding("p,slash", "focus_prompt", "Prompt", tooltip="Type a prompt for the model to continue"),
        Binding("escape", "leave_prompt", "Leave prompt", tooltip="Leave the prompt: letters are keys again"),
        Binding("r", "runs", "Runs", tooltip="The runs in the runs folder: attach to one, or compare their curves"),
        Binding("v", "sweep", "Sweep", tooltip="The sweep's leaderboard and curves (an app opened by `tune`)"),
        Binding("l", "chart_log", "Chart: log scale, or not", show=False),
        Binding("f", "chart_fit", "Chart: loss range fitted to the run, or full", show=False),
        Binding("x", "chart_x_unit", "Chart: by steps, training time or tokens", show=False),
        Binding("w", "chart_window", "Chart: the last steps only, or the whole run", show=False),
        Binding("comma", "chart_smoothing(-1)", "Chart: less smoothing", show=False),
        Binding("full_stop", "chart_smoothing(1)", "Chart: more smoothing", show=False),
        Binding("z", "chart_maximise", "Chart: fill the screen, or not", show=False),
        Binding("o", "confidence", "Shade sampled tokens by the model's confidence, or not", show=False),
        Binding("t", "temperatures", "The prompt continued at temperatures 0.5, 1 and 1.5", show=False),
        Binding("e", "early_stop", "Early stop: off, or after 10, 5 or 3 evaluations without a new best",
                show=False),
        Binding("d", "detach", "Detach", tooltip="Close the app and leave the run training"),
        Binding("q", "quit_asking", "Quit", tooltip="Stop the run and quit (asks whether to save)"),
        Binding("ctrl+q", "quit_asking", "Quit", show=False, priority=True,
                tooltip="Stop the run and quit (asks whether to save)"),
        Binding("ctrl+c", "save_and_quit", "Save and quit", show=False, priority=True,
                tooltip="Save a checkpoint, stop the run and quit, without asking"),
        # Priority, so that it works on the other screens (runs, temperatures) too; the prompt takes `?`
        # as text (Textual drops a key that the focused input types), F1 works there.
        Binding("question_mark,f1", "help", "Keys", priority=True,
                tooltip="Every key that works here, and what it does"),
        # Textual's own, named here for the help's text; "palette" is what the footer shows.
        Binding("ctrl+p", "command_palette", "palette", show=False, priority=True,
                tooltip="The command palette: every action by name, and how often the run samples"),
    ]

    def __init__(self, engine_factory: EngineFactory | None = None, *, autostart: bool = True,
                 runs_dir: Path | None = None, sweep: Path | None = None) -> None:
        super().__init__()
        self.sweep = sweep  # the sweep's folder, for an app opened by `tune`: its screen comes first
        bound_textual_caches()  # attached for days, Textual's own caches would grow for hours (textual_caches.py)
        self.engine_factory = engine_factory
        self.trainer: EngineClient | None = None  # the run's client once connected (named for the requests it takes)
        self.autostart = autostart
        self.runs_dir = runs_dir
        self.detaching = False
        self.view = RunView()
        self.drawn_version = -1
        self.clock_drawn_at = 0.0
        self.quitting = False
        self.exit_code = 0
        self.training_done = threading.Event()
        self.inbox = EngineInbox(lambda: self.post_message(EngineEvents()))
        self.saves_asked = 0  # saves asked for with `s` and not yet confirmed
        self.typed_text = ""
        self.typed_sent_at = -1.0
        self.typing_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="top"):
            yield LossPanel(id="loss")
            yield StatusPanel(id="status")
        yield SamplesPanel(id="samples")
        yield PromptPanel(id="prompt")
        yield Footer(compact=True, show_command_palette=False)  # no room at 80 columns: `?` lists ctrl+p

    def on_mount(self) -> None:
        self.set_interval(REDRAW_INTERVAL, self.redraw)
        self.set_interval(COMPARE_REFRESH, self.refresh_compared)
        self._handle_signals()
        self.redraw()
        if self.autostart:
            self.start_training()
        if self.sweep is not None:
            self.action_sweep()

    def _handle_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (some tests run elsewhere)
        # SIGTERM: the terminal is still there, so detach the normal way and restore it.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.action_detach)
        # SIGHUP (a dropped SSH session) is a detach too; the run lives in its own process. Textual
        # does not handle it, and its shutdown blocks for ever writing to the vanished terminal, so
        # a plain handler (it runs even while the UI loop is blocked) leaves without drawing.
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_hangup)

    def _on_hangup(self, signum: int, frame: object) -> None:
        self.detaching = True
        if self.trainer is not None:
            self.trainer.detach()
        os._exit(0)

    # ---- the engine --------------------------------------------------------------------------
    def start_training(self) -> None:
        self.run_training()

    @work(thread=True, exclusive=True, group="train", exit_on_error=False, name="trainer")
    def run_training(self) -> str:
        try:
            assert self.engine_factory is not None, "an app that trains or attaches has its factory"
            self.trainer = self.engine_factory(self.post_engine_event)
            if self.quitting and not self.detaching:  # asked to quit while the engine was starting
                self.trainer.request(Stop(save=True))
            client = self.trainer
            while True:
                self.inbox.put(CONNECTED)
                state = client.run()
                if state != "detached" or self.detaching or self.trainer is not client:
                    return state
                # Dropped without the run ending (this app fell behind, say): attach again.
                from charrnn_tui.engine.serve.client import EngineClient

                client = EngineClient(client.run_dir, self.post_engine_event)
                try:
                    client.connect()
                except Exception:
                    return state
                self.trainer = client
        finally:
            self.training_done.set()

    def post_engine_event(self, event: ev.Event) -> None:
        """From the client's reader thread (waits while the app is far behind)."""
        self.inbox.put(event)

    def on_engine_events(self, message: EngineEvents) -> None:
        for item in self.inbox.drain():
            if item is CONNECTED:
                self.view = RunView()  # the welcome that follows tells the whole story again
                self.drawn_version = -1
            else:
                self._apply_engine_event(item)

    def _apply_engine_event(self, event: ev.Event) -> None:
        if not self.screen_stack:
            return  # the app is closing: nothing left to draw on
        sample = self.view.apply(event)
        if isinstance(event, ev.Notice):
            levels: dict[str, SeverityLevel] = {"error": "error", "warning": "warning"}
            severity = levels.get(event.level, "information")
            self.notify(printable_line(event.message), severity=severity, markup=False,
                        timeout=10 if severity == "error" else 5)
        elif isinstance(event, ev.CheckpointSaved) and event.kind == "latest" and self.saves_asked:
            # Only the saves this viewer asked for: the status shows the periodic ones, and a toast
            # at every checkpoint (every few seconds on a fast run) cost Textual 8.2.8 about 11 kB
            # each that it never gave back (1,200 toasts: +13.7 MB, bench/toast_memory.py).
            self.saves_asked = 0
            self.notify(printable_line(f"checkpoint saved: {event.path}"), markup=False, timeout=3)
        elif isinstance(event, ev.SampleStarted) and event.notes:
            self.notify(printable_line("prompt: " + "; ".join(map(str, event.notes))), severity="warning",
                        markup=False)
        if isinstance(event, ev.NextTokens):
            self.query_one(PromptPanel).show_expectation(event)
        if sample is not None and sample.source == "prompt":
            self.query_one(PromptPanel).show(sample, self.query_one(SamplesPanel).confidence)
        top = self.screen_stack[-1] if self.screen_stack else None  # none while the app closes
        if sample is not None and isinstance(top, TemperaturesScreen):
            top.show(sample)
        if isinstance(event, ev.StateChanged) and event.reason == "checkpoint failed" and self.quitting:
            self.quitting = False  # the final save failed: stay, paused, so nothing is lost
        if isinstance(event, IMMEDIATE_EVENTS):
            self.redraw()  # answers to a key (paused, temperature, saved) show at once

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "train":
            return
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            message = printable_line(str(error) or type(error).__name__)  # may quote the run's words
            if self.view.state != "error":  # the engine has not reported it itself
                self.view.apply(ev.StateChanged("error", message))
                self.notify(message, severity="error", markup=False, timeout=15)
                self.redraw()
            self.exit_code = 1
        if event.state == WorkerState.SUCCESS and event.worker.result == "detached" and not self.detaching:
            self.view.apply(ev.StateChanged("detached", f"lost the run's engine; `{self._hint('attach')}` reconnects"))
            self.redraw()
        if event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED) and self.quitting:
            self.exit(self.exit_code)

    def redraw(self) -> None:
        view = self.view
        if view.version == self.drawn_version:
            now = time.monotonic()
            if now - self.clock_drawn_at >= 1.0:  # the "saved ... ago" clock still moves
                self.clock_drawn_at = now
                self.query_one(StatusPanel).show(view)
            return
        self.clock_drawn_at = time.monotonic()
        self.drawn_version = view.version
        self.query_one(LossPanel).show(view)
        self.query_one(StatusPanel).show(view)
        self.query_one(SamplesPanel).show(view.samples)
        self.check_bindings_changed()

    def check_bindings_changed(self) -> None:
        state = (self.view.state,)
        if getattr(self, "_binding_state", None) != state:
            self._binding_state = state
            self.refresh_bindings()

    # ---- actions ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.trainer is not None and self.view.state in ("training", "paused")

    @property
    def prompt_focused(self) -> bool:
        return isinstance(self.focused, PromptInput)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """False hides a binding from the footer (and disables it), None greys it out."""
        if action == "help":
            return not isinstance(self.screen, HelpScreen)  # there `?` closes it (its own binding)
        if action == "sweep" and self.sweep is None:
            return False
        if action in SINGLE_KEY_ACTIONS and isinstance(self.screen, SweepScreen):
            return False  # the sweep's screen has keys of its own; the trial's come with its view (escape)
        typing = self.prompt_focused
        if action in ("toggle_pause", "leave_prompt"):
            return typing  # ctrl+t is shown while typing; space does the job otherwise
        if typing and action in SINGLE_KEY_ACTIONS:
            return False  # the prompt takes these keys as text
        paused = self.view.state == "paused"
        if action == "pause":
            return not paused
        if action == "resume":
            return paused
        return True

    def action_pause(self) -> None:
        if (trainer := self._need_trainer()) is not None:
            trainer.request(Pause())

    def action_resume(self) -> None:
        if (trainer := self._need_trainer()) is not None:
            trainer.request(Resume())

    def action_toggle_pause(self) -> None:
        if (trainer := self._need_trainer()) is not None:
            trainer.request(TogglePause())

    def action_checkpoint(self) -> None:
        if (trainer := self._need_trainer()) is not None:
            self.saves_asked += 1
            trainer.request(SaveNow())

    def action_sample(self) -> None:
        if (trainer := self._need_trainer()) is not None:
            trainer.request(SampleNow())

    def action_sample_interval(self, seconds: float) -> None:
        if (trainer := self._need_trainer()) is not None:
            trainer.request(SetSampleInterval(seconds))

    def action_early_stop(self) -> None:
        """Off, then after 10, 5 or 3 evaluations without a new best, then off again."""
        trainer = self._need_trainer()
        if trainer is None:
            return
        choices = EARLY_STOP_CHOICES
        current = self.view.early_stop
        following = choices[(choices.index(current) + 1) % len(choices)] if current in choices else None
        trainer.request(SetEarlyStop(following))

    def action_temperature(self, direction: int) -> None:
        value = step_temperature(self.view.temperature, direction)
        self.view.temperature = value  # shown at once; the engine confirms with SettingsChanged
        self.view.version += 1
        if self.trainer is not None:
            self.trainer.request(SetTemperature(value))
        self.redraw()

    def action_help(self) -> None:
        """The keys of the screen it is pressed on, with what that screen has focused."""
        self.push_screen(HelpScreen(key_sections(self.screen)))

    def action_focus_prompt(self) -> None:
        self.query_one(PromptInput).focus()

    def action_leave_prompt(self) -> None:
        self.set_focus(None)

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()  # the footer shows other keys while typing

    def on_descendant_blur(self) -> None:
        self.refresh_bindings()

    def on_prompt_panel_typed(self, message: PromptPanel.Typed) -> None:
        """Every keystroke asks what comes next; the engine answers the latest one (NextTokens).
        A held key repeats faster than the run's request limit, so requests go at most every
        TYPING_INTERVAL, the last text always sent."""
        self.typed_text = message.text
        if self.typing_timer is None:
            wait = self.typed_sent_at + TYPING_INTERVAL - time.monotonic()
            if wait <= 0:
                self._send_typed()
            else:
                self.typing_timer = self.set_timer(wait, self._send_typed)

    def _send_typed(self) -> None:
        self.typing_timer = None
        self.typed_sent_at = time.monotonic()
        if self.trainer is not None and self.view.state in ("training", "paused"):
            self.trainer.request(AskNextTokens(self.typed_text))

    def on_prompt_panel_submitted(self, message: PromptPanel.Submitted) -> None:
        if (trainer := self._need_trainer()) is not None:
            trainer.request(Prompt(message.text))

    def action_temperatures(self) -> None:
        """The prompt being typed (or the last one sent) continued at three temperatures."""
        if self._need_trainer() is None:
            return
        prompt_input = self.query_one(PromptInput)
        prefix = prompt_input.value or (prompt_input.history[-1] if prompt_input.history else "")
        self.push_screen(TemperaturesScreen(prefix, self.query_one(SamplesPanel).confidence))
        self.ask_for_temperatures(prefix)

    def on_temperatures_screen_again(self, message: TemperaturesScreen.Again) -> None:
        self.ask_for_temperatures(message.prefix)

    def ask_for_temperatures(self, prefix: str) -> None:
        if (trainer := self._need_trainer()) is not None:
            for temperature in TEMPERATURES:
                trainer.request(Prompt(prefix, None, temperature))

    def action_quit_asking(self) -> None:
        if self.quitting:
            return
        if self.running and self.view.unsaved_steps > 0:
            self.push_screen(QuitScreen(self.view.unsaved_steps), self._quit_choice)
        else:
            self._stop(save=False)

    def _quit_choice(self, choice: str | None) -> None:
        if choice in ("save", "discard"):
            self._stop(save=choice == "save")

    def action_save_and_quit(self) -> None:
        if not self.quitting:
            self._stop(save=True)

    def _stop(self, save: bool) -> None:
        self.quitting = True
        if self.trainer is not None and self.view.state in ("training", "paused", "starting"):
            if save:
                self.notify("saving a checkpoint and stopping...", timeout=30)
            self.trainer.request(Stop(save=save))
            # The worker ends once the engine has saved; on_worker_state_changed then exits.
            workers = [w for w in self.workers if w.group == "train" and w.is_running]
            if workers:
                return
        self.exit(self.exit_code)

    # ---- views: shown at once, nothing to ask the engine ----------------------------------------
    def action_confidence(self) -> None:
        """Shade every sampled token by the probability the model gave it, or stop."""
        samples = self.query_one(SamplesPanel)
        samples.confidence = not samples.confidence
        samples.show(self.view.samples)
        prompt = self.query_one(PromptPanel)
        shown = self.view.samples.get(prompt.sample_id) if prompt.sample_id is not None else None
        if shown is not None:
            prompt.show(shown, samples.confidence)

    def action_chart_log(self) -> None:
        self._chart_view().toggle_log()
        self._chart_changed()

    def action_chart_fit(self) -> None:
        self._chart_view().toggle_fit()
        self._chart_changed()

    def action_chart_x_unit(self) -> None:
        self._chart_view().next_x_unit()
        self._chart_changed()

    def action_chart_window(self) -> None:
        chart = self.query_one(LossPanel).chart
        chart.view.next_window(len(chart.history))
        self._chart_changed()

    def action_chart_smoothing(self, direction: int) -> None:
        self._chart_view().step_smoothing(direction)
        self._chart_changed()

    def action_chart_maximise(self) -> None:
        self.screen.toggle_class("-chart-max")

    def _chart_view(self) -> ChartView:
        return self.query_one(LossPanel).chart.view

    def _chart_changed(self) -> None:
        panel = self.query_one(LossPanel)
        panel.chart.changed()
        panel.show_title()  # the title says the y axis's view
        self.notify(f"chart: {panel.chart.view.describe()}", timeout=2)

    def action_detach(self) -> None:
        """Leave the run training and close the app."""
        self.detaching = self.quitting = True
        if self.trainer is not None:
            self.trainer.detach()
        self.exit(0)

    def action_runs(self) -> None:
        from .widgets.runs_screen import RunsScreen

        marked = {str(run.folder) for run in self.query_one(LossPanel).chart.compared}
        self.push_screen(RunsScreen(self.runs_dir, current=self.view.info.run_dir if self.view.info else None,
                                    marked=marked), self._runs_chosen)

    def _runs_chosen(self, choice: RunsChoice | None) -> None:
        if choice is None:
            return
        if choice.compare is not None:
            self.compare_runs(choice.compare)
        elif choice.attach:
            self._attach_chosen(choice.attach)

    def compare_runs(self, entries: Iterable[RunEntry]) -> None:
        """Overlay other runs' validation curves on the chart: runs of this run's corpus only (another
        corpus's losses are not comparable)."""
        info = self.view.info
        corpus, tokens = (info.corpus_name, info.token_kind) if info else (None, None)
        chosen = [e for e in entries if corpus is None or (e.corpus in (corpus, None) and e.tokens in (tokens, None))]
        skipped = [e.name for e in entries if e not in chosen]
        if skipped:
            self.notify(printable_line(f"not compared (not {corpus} at {tokens} level): {', '.join(skipped)}"),
                        severity="warning", markup=False)
        runs = [ComparedRun(e.name, Path(e.path)) for e in chosen[:MAX_COMPARED]]
        for run in runs:
            run.refresh()
        self.query_one(LossPanel).show_compared(runs)
        if len(chosen) > MAX_COMPARED:
            self.notify(f"{MAX_COMPARED} runs at most are compared", severity="warning")

    def refresh_compared(self) -> None:
        panel = self.query_one(LossPanel)
        if any([run.refresh() for run in panel.chart.compared]):
            panel.show_compared(panel.chart.compared)

    def action_sweep(self) -> None:
        if self.sweep is not None and not isinstance(self.screen, SweepScreen):
            self.push_screen(SweepScreen(self.sweep))

    def attach_run(self, run_dir: str) -> None:
        """Watch the live run in `run_dir` instead of this one (the same one again if it has ended)."""
        self._attach_chosen(run_dir)

    def _attach_chosen(self, run_dir: str | None) -> None:
        if not run_dir or (self.view.info is not None and run_dir == self.view.info.run_dir and self.running):
            return
        from charrnn_tui.engine.serve.client import EngineClient

        old = self.trainer
        self.detaching = True  # the old connection's worker ends quietly
        if old is not None:
            old.detach()
        self.trainer = None
        self.engine_factory = lambda on_event: EngineClient(Path(run_dir), on_event)
        self.call_after_refresh(self._start_attached)

    def _start_attached(self) -> None:
        self.detaching = False
        self.training_done.clear()
        self.start_training()

    def _hint(self, verb: str) -> str:
        """A command for this run as it must be typed (with --runs-dir where it is not the default)."""
        from charrnn_tui.engine.runs import command_hint, default_runs_dir, run_hint

        info = self.view.info
        if info is not None:
            return run_hint(verb, Path(info.run_dir))
        return command_hint(verb, self.runs_dir or default_runs_dir())  # an app made without runs_dir: the default

    def _need_trainer(self) -> EngineClient | None:
        """The run's client, where it takes requests now; else None, and the user told why."""
        if self.trainer is None or self.view.state == "starting":
            self.notify("still starting: loading the corpus and building the model", timeout=2)
            return self.trainer
        if self.view.state in ("error", "finished", "stopped", "detached"):
            self.notify(printable_line(f"training has {self.view.state}; `{self._hint('train --resume')}` "
                                       "continues the run"), severity="warning", timeout=4, markup=False)
            return None
        return self.trainer

    def on_unmount(self) -> None:
        # However the app ends (an error in a handler too), it leaves the run as it is: a stop was
        # asked for already if the user quit; otherwise the run goes on training without us.
        self.inbox.close()
        if self.trainer is not None and not self.training_done.is_set():
            self.detaching = True
            self.trainer.detach()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Pause / resume training", "Toggle training (space)", self.action_toggle_pause)
        yield SystemCommand("Save a checkpoint now", "Write latest.pt (c)", self.action_checkpoint)
        yield SystemCommand("Sample now", "Generate a live sample (s)", self.action_sample)
        for seconds, when in ((5, "every 5 s"), (15, "every 15 s"), (60, "every minute"), (0, "off")):
            yield SystemCommand(f"Live samples {when}", "How often the run writes a sample from now on",
                                lambda seconds=seconds: self.action_sample_interval(seconds))
        yield SystemCommand("Raise temperature", "More adventurous samples (+)", lambda: self.action_temperature(1))
        yield SystemCommand("Lower temperature", "Safer samples (-)", lambda: self.action_temperature(-1))
        yield SystemCommand("Type a prompt", "Focus the prompt (p)", self.action_focus_prompt)
        yield SystemCommand("Runs", "List the runs and attach to one (r)", self.action_runs)
        yield SystemCommand("Chart: log scale", "Toggle a log loss axis (l)", self.action_chart_log)
        yield SystemCommand("Chart: fitted or full loss range",
                            "The loss axis fits the run after its start, or holds everything (f)",
                            self.action_chart_fit)
        yield SystemCommand("Chart: steps, time or tokens", "The x axis's unit (x)", self.action_chart_x_unit)
        yield SystemCommand("Chart: last steps or whole run",
                            "The last 1M, 100k, 10k, 1k or 100 steps, then the whole run (w)",
                            self.action_chart_window)
        yield SystemCommand("Chart: more smoothing", "Heavier moving average (.)",
                            lambda: self.action_chart_smoothing(1))
        yield SystemCommand("Chart: less smoothing", "Lighter moving average (,)",
                            lambda: self.action_chart_smoothing(-1))
        yield SystemCommand("Chart: maximise", "The chart fills the screen, or not (z)", self.action_chart_maximise)
        yield SystemCommand("Confidence", "Shade sampled tokens by the model's probability of them (o)",
                            self.action_confidence)
        yield SystemCommand("Three temperatures", "The prompt continued at 0.5, 1 and 1.5 (t)",
                            self.action_temperatures)
        yield SystemCommand("Early stop", "Off, or after 10, 5 or 3 evaluations without a new best (e)",
                            self.action_early_stop)
        yield SystemCommand("Detach", "Leave the run training and close the app (d)", self.action_detach)
        yield SystemCommand("Save and quit", "Checkpoint, stop the run, then quit (ctrl+c)", self.action_save_and_quit)


def run_app(args: argparse.Namespace) -> int:
    """Open the app for parsed `train` or `attach` arguments; returns the exit status.

    For `train`, the run's engine starts first, detached, in a process of its own (engine/serve/launch.py):
    on a CPU a training thread runs 2-3x slower than a process's main thread, and the run must
    outlive the app. Then the app attaches to it, exactly as `attach` does.
    """
    from charrnn_tui.engine.errors import CharRNNError
    from charrnn_tui.engine.runs import (
        check_new_run_name,
        command_hint,
        default_runs_dir,
        not_live_message,
        resolve_run,
        run_hint,
    )
    from charrnn_tui.engine.serve.client import EngineClient, RunNotLive

    runs_dir = args.runs_dir or default_runs_dir()
    if args.command == "attach":
        run_dir = resolve_run(args.run, runs_dir, live=True)
        client = EngineClient(run_dir)
        try:
            client.connect()  # a run that is not live is a one-line error before any screen
        except RunNotLive:
            raise CharRNNError(not_live_message(run_dir)) from None
        if not has_terminal():
            client.close()
            raise CharRNNError(f"attach opens the app, which needs a terminal (stdin and stdout here are not one); "
                               f"`{command_hint('runs', runs_dir)}` lists the runs, "
                               f"`{run_hint('stop', run_dir)}` ends this one")
        app = CharRNNApp(lambda on_event: _with_sink(client, on_event), runs_dir=runs_dir)
    else:
        if getattr(args, "resume", None) is None:
            check_new_run_name(getattr(args, "name", None), runs_dir)  # before any screen, not in it
        if not has_terminal():  # else escape codes go to a file, and an engine trains with no one watching
            raise CharRNNError("the app needs a terminal (stdin and stdout here are not one): use `charrnn-tui "
                               "train --headless ...` for a progress line, or `--detach` to train in the background")
        app = CharRNNApp(functools.partial(_launch_and_attach, args.train_argv), runs_dir=runs_dir)
    result = app.run()
    message = after_exit_message(app)
    if message:  # the screen has gone: say where the run is
        (sys.stderr if message.startswith("charrnn-tui: error:") else sys.stdout).write(message)
    return result if isinstance(result, int) else 0


def has_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def after_exit_message(app: CharRNNApp) -> str:
    """What the terminal says once the app has closed: a run left training (`d`) and the commands
    that reach it; a run stopped (`q`) and where it was saved; or why it failed. Printable: it
    quotes the run's folder, its engine's error and its checkpoint's path."""
    return printable(_exit_message(app))


def _exit_message(app: CharRNNApp) -> str:
    from charrnn_tui.engine.runs import background_message, run_hint

    client, view = app.trainer, app.view
    run_dir = getattr(client, "run_dir", None) or (view.info.run_dir if view.info is not None else None)
    state = getattr(client, "state", None) or view.state
    if view.state == "error" or state == "error":
        reason = (getattr(client, "error", "") or view.reason or "training failed").strip().splitlines()
        where = f"run {Path(run_dir).name}: " if run_dir else ""
        return f"charrnn-tui: error: {where}{reason[0] if reason else 'training failed'}\n"
    if run_dir is None:
        return ""  # no run was started
    run_dir = Path(run_dir)
    step = max(int(getattr(client, "step", 0) or 0), view.step)
    if state in ("training", "paused", "starting"):
        return background_message(run_dir, state, still=True)
    if state in ("stopped", "finished"):
        if view.saved_path and view.saved_step >= step:
            saved = f"saved to {view.saved_path}"
        elif view.saved_path:
            saved = f"the steps after {view.saved_step:,} were not saved (the last checkpoint is {view.saved_path})"
        else:
            saved = "nothing was saved"
        resumable = state == "stopped" and view.saved_path
        more = f"; `{run_hint('train --resume', run_dir)}` continues it" if resumable else ""
        return f"run {run_dir.name} {state} at step {step:,}; {saved}{more}\n"
    # The connection dropped and the app closed before it could attach again.
    return f"lost the connection to run {run_dir.name}; `{run_hint('attach', run_dir)}` reconnects if it still runs\n"


def _with_sink(client: EngineClient, on_event: Callable[[ev.Event], None]) -> EngineClient:
    client.on_event = on_event
    return client


def _launch_and_attach(train_argv: list[str], on_event: Callable[[ev.Event], None]) -> EngineClient:
    from charrnn_tui.engine.serve.client import EngineClient
    from charrnn_tui.engine.serve.launch import launch_engine

    run_dir = launch_engine(train_argv, for_app=True)
    client = EngineClient(run_dir, on_event)
    client.connect()
    return client
