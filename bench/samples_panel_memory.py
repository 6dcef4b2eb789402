"""Memory the samples panel holds as a long run's samples stream in: the app's warm-up, in minutes.

    python bench/samples_panel_memory.py [--samples 1800] [--every 120] [--height 6]

An app attached for hours grows for its first hour or two, then stays flat (`bench/soak.py`). Most
of that is the samples panel: it keeps MAX_SAMPLES views, and each view's Textual caches (its
lines, their crops, its box models by layout) fill as views are reused for new samples. This shows
N samples (a live run makes one every 15 s by default, so 240 an hour) to the panel alone in a
headless app, scrolling each into sight so that it renders as on screen, and prints the Python
memory it holds (tracemalloc) every --every samples. Headless, nothing is written to a terminal,
so the escape codes' cache (`Strip.render_ansi`) is not filled here: `bench/textual_caches.py`
measures that one.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import tracemalloc
from pathlib import Path

from textual.app import App, ComposeResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charrnn_tui.tui.run_view import MAX_SAMPLES, Sample  # noqa: E402
from charrnn_tui.tui.textual_caches import bound_textual_caches  # noqa: E402
from charrnn_tui.tui.widgets.samples_panel import SamplesPanel  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "corpora" / "timemachine.txt"


def sample_text(text: str, rng: random.Random) -> str:
    """A sample's length and shape: 200 to 400 characters of the bundled corpus, line breaks and all."""
    start = rng.randrange(len(text) - 400)
    return text[start:start + rng.randint(200, 400)]


class PanelApp(App):
    def __init__(self, height: int) -> None:
        super().__init__()
        self.panel_height = height

    def compose(self) -> ComposeResult:
        panel = SamplesPanel()
        panel.styles.height = self.panel_height
        yield panel


async def run(count: int, every: int, height: int) -> None:
    bound_textual_caches()  # as the app does
    rng, text = random.Random(0), CORPUS.read_text(encoding="utf-8")
    app = PanelApp(height)
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.query_one(SamplesPanel)
        samples: dict[int, Sample] = {}
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        print(f"{'samples':>8} {'views':>6} {'held':>9}")
        for i in range(count):
            samples[i] = Sample(i, i * 100, "", 0.8, "live", sample_text(text, rng), done=True)
            while len(samples) > MAX_SAMPLES:  # as the app's RunView keeps them
                samples.pop(next(iter(samples)))
            panel.show(samples)
            await pilot.pause()
            panel.scroll_end(animate=False)
            await pilot.pause()
            if (i + 1) % every == 0:
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - base
                print(f"{i + 1:>8,} {len(panel.views):>6} {held / 2**20:>7.2f}MB", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1800, help="samples shown in all")
    parser.add_argument("--every", type=int, default=120, help="print the memory held every so many samples")
    parser.add_argument("--height", type=int, default=6, help="the panel's height in lines, borders included")
    args = parser.parse_args()
    asyncio.run(run(args.samples, args.every, args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
