"""Live samples, each streaming in under a header with the step it came from; older ones scroll back."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from ..run_view import Sample


def render_sample(sample: Sample) -> Text:
    """Header and text. Model output is plain Text, never parsed as markup."""
    if sample.source == "earlier":
        header = f"step {sample.step:,} · earlier session"
    else:
        header = f"step {sample.step:,} · T {sample.temperature:.2f}" + ("" if sample.done else " · ...")
    text = Text()
    text.append(header + "\n", style="dim")
    if sample.prompt:
        text.append(sample.prompt, style="bold")
    text.append(sample.text)
    return text


class SampleView(Static):
    def __init__(self, sample: Sample) -> None:
        super().__init__(render_sample(sample), markup=False, classes="sample")
        self.sample = sample
        self.shown = (len(sample.text), sample.done)

    def sync(self) -> bool:
        state = (len(self.sample.text), self.sample.done)
        if state == self.shown:
            return False
        self.shown = state
        self.update(render_sample(self.sample))
        return True


class SamplesPanel(VerticalScroll):
    can_focus = False

    def on_mount(self) -> None:
        self.border_title = "Samples"
        self.views: dict[int, SampleView] = {}

    def show(self, samples: dict[int, Sample]) -> None:
        at_end = self.is_vertical_scroll_end or not self.views
        changed = False
        for sample_id in [k for k in self.views if k not in samples]:
            self.views.pop(sample_id).remove()
        new = [SampleView(s) for k, s in samples.items() if k not in self.views and s.source != "prompt"]
        if new:
            self.mount_all(new)
            self.views.update({v.sample.sample_id: v for v in new})
            changed = True
        for view in self.views.values():
            changed = view.sync() or changed
        if self.views:
            latest = next(reversed(self.views.values())).sample
            self.border_subtitle = f"latest: step {latest.step:,}, T {latest.temperature:.2f}"
        if changed and at_end:
            self.call_after_refresh(self.scroll_end, animate=False)
