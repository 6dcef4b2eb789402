"""Small corpora bundled with charrnn-tui, so the app runs with no download."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class BundledCorpus:
    name: str
    filename: str
    description: str
    csv_column: str | None = None


BUNDLED: dict[str, BundledCorpus] = {
    c.name: c
    for c in (
        BundledCorpus("shakespeare", "shakespeare.txt", "tiny-shakespeare (Karpathy's char-rnn), 1.1 MB"),
        BundledCorpus("timemachine", "timemachine.txt", "The Time Machine, H. G. Wells (d2l.ai), 179 kB"),
        BundledCorpus("jokes", "jokes.csv", "reddit clean jokes (CSV, column Joke), 142 kB", "Joke"),
    )
}

DEFAULT = "shakespeare"


def bundled_path(name: str) -> Path:
    """Path of a bundled corpus file; works from a checkout, an editable install and a wheel."""
    ref = resources.files(__name__).joinpath(BUNDLED[name].filename)
    return Path(str(ref))
