"""The loss panel: current, best and starting values, and the whole run as a chart."""

from __future__ import annotations

import math

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from charrnn_tui.engine.printable import printable_line

from ..compared_runs import ComparedRun
from ..run_view import RunView
from .loss_chart import COMPARE_COLOURS, LossChart


def _fmt(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"


def mean(values) -> float:
    return sum(values) / len(values)


class LossPanel(Vertical):
    def compose(self) -> ComposeResult:
        yield Static(id="train-label", markup=False)
        yield Static(id="val-label", markup=False)
        yield LossChart(id="loss-chart")

    def on_mount(self) -> None:
        self.unit = "char"
        self.show_title()

    def show_compared(self, runs: list[ComparedRun]) -> None:
        self.chart.set_compared(runs)
        self.show_title()

    def show_title(self) -> None:
        """The loss's unit, the runs compared (each in its colour), then the y axis's view."""
        title = Text(f"Loss (nats/{self.unit})")
        if self.chart.compared:
            title.append(" vs")
            for run, colour in zip(self.chart.compared, COMPARE_COLOURS, strict=False):
                title.append(f" {printable_line(run.name)}", style=colour)  # a folder's name: any characters
        title.append(f" · {self.chart.view.y_label()}", style="dim")
        self.border_title = title

    @property
    def chart(self) -> LossChart:
        return self.query_one(LossChart)

    def show(self, view: RunView) -> None:
        unit = "char" if view.unit == "chars" else "token"
        if unit != self.unit:
            self.unit = unit
            self.show_title()
        recent = list(view.train_losses)[-20:]
        last_val = view.val_losses[-1][1] if view.val_losses else None
        first_val = view.val_losses[0][1] if view.val_losses else None
        # One line each, whatever they say: no layout pass (it was most of the app's cost while training).
        self.query_one("#train-label", Static).update(
            _numbers("train", mean(recent) if recent else None, view.best_train_loss, view.first_train_loss),
            layout=False,
        )
        self.query_one("#val-label", Static).update(_numbers("val", last_val, view.best_val, first_val), layout=False)
        if view.last_val_bits is not None and last_val is not None:
            perplexity = math.exp(min(last_val, 50))
            self.border_subtitle = f"{view.last_val_bits:.3f} bits/{unit} · perplexity {perplexity:.2f}"
        # The batch is global (its streams split over the processes of a multi-process run).
        tokens_per_step = view.info.batch_size * view.info.seq_len if view.info is not None else None
        self.chart.set_data(view.history, list(view.val_losses), list(view.timeline), tokens_per_step)


def _numbers(name: str, now: float | None, best: float | None, start: float | None) -> Text:
    return Text.assemble(
        (f"{name:<5} ", "bold"), (_fmt(now), "bold"), (" best ", "dim"), _fmt(best), (" start ", "dim"), _fmt(start)
    )
