"""A sample as styled text: copied spans underlined, and, in the confidence view, each token shaded
by the probability the model gave it (as GLTR does with ranks). Plain Rich Text: never markup."""

from __future__ import annotations

from rich.text import Text

from charrnn_tui.engine.counts import plural

from .run_view import Sample

# (lowest probability, style, legend). Background shades from the 8 basic colours, so that they stay
# distinct in a 16-colour terminal, with a foreground that reads on each.
CONFIDENCE_SHADES: tuple[tuple[float, str, str], ...] = (
    (0.5, "black on green", ">50%"),
    (0.1, "black on yellow", "10-50%"),
    (0.01, "white on red", "1-10%"),
    (0.0, "white on magenta", "<1%"),
)
COPIED = "underline"


def confidence_style(prob: float) -> str:
    """The shade for a probability; the lowest for anything that is not a number (NaN weights)."""
    return next((style for low, style, _ in CONFIDENCE_SHADES if prob >= low), CONFIDENCE_SHADES[-1][1])


def confidence_legend() -> Text:
    legend = Text("confidence ")
    for _, style, label in CONFIDENCE_SHADES:
        legend.append(f" {label} ", style=style)
    return legend


def sample_body(sample: Sample, confidence: bool) -> Text:
    """The continuation's text, styled (without prompt or header)."""
    text = Text(sample.text)
    if confidence and sample.probs:
        lengths = sample.token_lengths or (1,) * len(sample.probs)
        start, run_start, run_style = 0, 0, None
        for prob, length in zip(sample.probs, lengths, strict=False):
            if start >= len(sample.text):
                break  # a view that joined part-way may hold fewer characters than tokens
            style = confidence_style(prob)
            if style != run_style:  # one span per run of tokens in the same shade
                if run_style is not None:
                    text.stylize(run_style, run_start, start)
                run_start, run_style = start, style
            start += length
        if run_style is not None:
            text.stylize(run_style, run_start, min(start, len(sample.text)))
    for start, end in sample.copies:
        text.stylize(COPIED, start, end)
    return text


def copy_note(sample: Sample) -> tuple[str, str]:
    """What the header says about copying, and its style: "" until the sample was checked."""
    if sample.longest_copy is None:
        return "", ""
    if sample.copies:
        return f"copied {plural(sample.longest_copy, 'char')}", "yellow"
    return f"longest copy {sample.longest_copy}", "dim"
