"""Is a sample the model's own, or a line it memorised? The spans it copied verbatim from the corpus.

A suffix array of the corpus (built with torch's sort by prefix doubling: about a second for the
1.1 MB tiny-shakespeare on 2 cores) answers "does this string occur in the corpus?" by binary
search. From it come the matching statistics of a sample (for each position, the longest string
starting there that the corpus holds), hence its longest copied span and every span of at least
MIN_SPAN characters.
"""

from __future__ import annotations

import os
import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

MIN_SPAN = 20  # characters: a copied span this long is marked
MAX_CORPUS_CHARS = 64 << 20  # past this the index is not built
# What building the index takes at its peak: several int64 tensors of the corpus's length, then the
# order as Python ints on its way into the array (measured: 176 bytes a character for 4M).
BUILD_BYTES_PER_CHAR = 180


@dataclass(frozen=True)
class Novelty:
    longest_copy: int  # characters of the longest substring of the text that occurs in the corpus
    spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) copied spans >= min_span, merged
    min_span: int = MIN_SPAN

    def to_dict(self) -> dict:
        return {"longest_copy": self.longest_copy, "spans": [list(s) for s in self.spans], "min_span": self.min_span}


class Cancelled(Exception):
    """The index was no longer wanted (its run ended) before it was built."""


def suffix_array(text: str, cancelled: Callable[[], bool] = lambda: False) -> array:
    """Start positions of the suffixes of `text` in sorted order (by code point). `cancelled` is
    asked between rounds (each a sort of the whole text): True stops the build with Cancelled."""
    n = len(text)
    if n == 0:
        return array("q")
    if text.isascii():
        codes = torch.frombuffer(bytearray(text.encode("ascii")), dtype=torch.uint8).to(torch.int64)
    else:
        codes = torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32).to(torch.int64)
    rank = torch.unique(codes, return_inverse=True)[1]
    k = 1
    while True:
        if cancelled():
            raise Cancelled
        # Sort by (rank of the first k characters, rank of the next k); -1 past the end sorts first.
        following = torch.full((n,), -1, dtype=torch.int64)
        if k < n:
            following[: n - k] = rank[k:]
        key = rank * (n + 1) + (following + 1)
        order = torch.argsort(key, stable=True)
        ordered = key[order]
        new_rank = torch.empty(n, dtype=torch.int64)
        new_rank[order] = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(ordered[1:] != ordered[:-1], 0)])
        rank = new_rank
        if int(rank.max()) == n - 1 or k >= n:
            return array("q", order.tolist())
        k *= 2


def _available_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None


class NoveltyIndex:
    def __init__(self, corpus: str, cancelled: Callable[[], bool] = lambda: False):
        if len(corpus) > MAX_CORPUS_CHARS:
            raise MemoryError(f"the corpus has {len(corpus):,} characters; the copy index stops at "
                              f"{MAX_CORPUS_CHARS:,}")
        available = _available_memory()
        if available is not None and len(corpus) * BUILD_BYTES_PER_CHAR > available // 2:
            raise MemoryError(f"indexing {len(corpus):,} characters needs about "
                              f"{len(corpus) * BUILD_BYTES_PER_CHAR >> 20:,} MB; {available >> 20:,} MB are free")
        self.corpus = corpus
        self.sa = suffix_array(corpus, cancelled)

    def occurs(self, pattern: str) -> bool:
        """Whether `pattern` is a substring of the corpus (binary search over the suffixes)."""
        if not pattern:
            return True
        corpus, sa, length = self.corpus, self.sa, len(pattern)
        lo, hi = 0, len(sa)
        while lo < hi:
            mid = (lo + hi) // 2
            start = sa[mid]
            if corpus[start : start + length] < pattern:
                lo = mid + 1
            else:
                hi = mid
        return lo < len(sa) and corpus[sa[lo] : sa[lo] + length] == pattern

    def matches(self, text: str) -> list[int]:
        """For each position of `text`, the length of the longest string starting there that occurs
        in the corpus. A match's suffix is a match, so each position starts one shorter than the last."""
        out: list[int] = []
        length = 0
        for i in range(len(text)):
            length = max(length - 1, 0)
            while i + length < len(text) and self.occurs(text[i : i + length + 1]):
                length += 1
            out.append(length)
        return out

    def novelty(self, text: str, min_span: int = MIN_SPAN) -> Novelty:
        lengths = self.matches(text)
        spans: list[tuple[int, int]] = []
        for i, n in enumerate(lengths):
            if n >= min_span:
                if spans and i <= spans[-1][1]:
                    spans[-1] = (spans[-1][0], max(spans[-1][1], i + n))
                else:
                    spans.append((i, i + n))
        return Novelty(max(lengths, default=0), spans, min_span)


class BackgroundIndex:
    """A NoveltyIndex built on a thread of its own, so that a run's first sample never waits for it.
    `index` is None until it is ready; `skipped` says why it never will be. `close` stops a build
    still under way (the thread is not a daemon: a process that exited in the middle of one of
    torch's sorts would abort)."""

    def __init__(self, corpus: str):
        self.index: NoveltyIndex | None = None
        self.skipped: str | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._build, args=(corpus,), name="novelty-index")
        self._thread.start()

    def _build(self, corpus: str) -> None:
        try:
            self.index = NoveltyIndex(corpus, self._closed.is_set)
        except Cancelled:
            pass
        except MemoryError as e:
            self.skipped = f"samples are not checked for copied text: {str(e) or 'out of memory'}"
        except Exception as e:  # noqa: BLE001 - torch's allocator raises RuntimeError; the run goes on without it
            self.skipped = f"samples are not checked for copied text: {str(e).splitlines()[0][:200]}"

    @property
    def building(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()

    def wait(self, timeout: float | None = None) -> NoveltyIndex | None:
        self._thread.join(timeout)
        return self.index
