"""Live samples, each streaming in under a header with the step it came from; older ones scroll back."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from ..run_view import Sample
from ..sample_text import confidence_legend, copy_note, sample_body


def render_sample(sample: Sample, confidence: bool = False) -> Text:
    """Header and text. Model output is plain Text, never parsed as markup."""
    if sample.source == "earlier":
        header = f"step {sample.step:,} · earlier session"
    else:
        header = f"step {sample.step:,} · T {sample.temperature:.2f}" + ("" if sample.done else " · ...")
    text = Text()
    text.append(header, style="dim")
    note, style = copy_note(sample)
    if note:
        text.append(" · ", style="dim")
        text.append(note, style=style)
    text.append("\n")
    if sample.prompt:
        text.append(sample.prompt, style="bold")
    text.append_text(sample_body(sample, confidence))
    return text


class SampleView(Static):
    def __init__(self, sample: Sample, confidence: bool = False) -> None:
        super().__init__(render_sample(sample, confidence), markup=False, classes="sample")
        self.sample = sample
        self.shown = (len(sample.text), sample.done, confidence)

    def reuse(self, sample: Sample, confidence: bool) -> None:
        """Show another sample in this view (the oldest view takes the newest sample)."""
        self.sample = sample
        self.shown = (len(sample.text), sample.done, confidence)
        self.update(render_sample(sample, confidence))

    def sync(self, confidence: bool) -> bool:
        state = (len(self.sample.text), self.sample.done, confidence)
        if state == self.shown:
            return False
        self.shown = state
        self.update(render_sample(self.sample, confidence))
        return True


class SamplesPanel(VerticalScroll):
    can_focus = False

    def on_mount(self) -> None:
        self.border_title = "Samples"
        self.views: dict[int, SampleView] = {}
        self.confidence = False  # `o`: shade each token by the model's probability of it

    def show(self, samples: dict[int, Sample]) -> None:
        at_end = self.is_vertical_scroll_end or not self.views
        changed = False
        dropped = [k for k in self.views if k not in samples]
        arriving = [s for k, s in samples.items() if k not in self.views and s.source not in ("prompt", "temperatures")]
        # Views of samples that aged out show the new ones, moved to the end: a long run replaces a
        # sample every few seconds, and removing and mounting widgets that often left memory behind.
        for sample in arriving[: len(dropped)]:
            view = self.views.pop(dropped.pop(0))
            view.reuse(sample, self.confidence)
            self.move_child(view, after=self.children[-1])
            self.views[sample.sample_id] = view
            changed = True
        for sample_id in dropped:
            self.views.pop(sample_id).remove()
        new = [SampleView(s, self.confidence) for s in arriving if s.sample_id not in self.views]
        if new:
            self.mount_all(new)
            self.views.update({v.sample.sample_id: v for v in new})
            changed = True
        for view in self.views.values():
            changed = view.sync(self.confidence) or changed
        if self.confidence:
            self.border_subtitle = confidence_legend()
        elif self.views:
            latest = next(reversed(self.views.values())).sample
            self.border_subtitle = f"latest: step {latest.step:,}, T {latest.temperature:.2f}"
        if changed and at_end:
            self.call_after_refresh(self.scroll_end, animate=False)
