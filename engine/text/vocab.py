"""Vocabularies: characters (default) or words, with fast encoding of large texts to compact tensors."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Protocol

import torch

from charrnn_tui.engine.errors import CheckpointError, ConfigError

UNK = "<unk>"
_ENCODE_CHUNK = 1 << 23
# How word-level text is cut into tokens; joining the tokens gives the text back exactly, either way.
# Scheme 2 (now): a word carries the one space before it (" cat"), contractions stay whole
# ("don't", "Who's"), a punctuation mark is a token of its own (with the space before it, if any:
# " ("), and other whitespace (newlines, the first spaces of a run) is left on its own. So a model
# writes "there?" and "what's", not "there ?" and "what ' s". Case is kept.
# Scheme 1 (checkpoints from before it): words, single punctuation marks and whitespace runs.
WORD_PATTERNS = {
    1: re.compile(r"\w+|[^\w\s]|\s+"),
    2: re.compile(r" ?\w+(?:['\u2019]\w+)*| ?[^\w\s]|\s+(?!\S)|\s+"),
}
WORD_SCHEME = 2
WORD_PATTERN = WORD_PATTERNS[WORD_SCHEME]


class Vocab(Protocol):
    kind: str
    tokens: list[str]

    def __len__(self) -> int: ...
    def encode(self, text: str) -> torch.Tensor: ...
    def encode_prompt(self, text: str) -> tuple[list[int], list[str]]: ...
    def decode(self, ids: list[int]) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...


def compact_dtype(vocab_size: int) -> torch.dtype:
    """Smallest integer dtype that holds every id: a 100 MB corpus stays 100 MB in memory."""
    if vocab_size <= 256:
        return torch.uint8
    if vocab_size <= 32767:
        return torch.int16
    return torch.int32


class CharVocab:
    kind = "char"

    def __init__(self, tokens: list[str]):
        if not tokens or any(len(t) != 1 for t in tokens) or len(set(tokens)) != len(tokens):
            raise CheckpointError("character vocabulary must hold distinct single characters")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}
        self._codepoints = torch.tensor([ord(t) for t in tokens], dtype=torch.int64)

    @classmethod
    def build(cls, text: str) -> CharVocab:
        # Slice by slice: a 100 MB text never needs its code points all at once.
        seen = [torch.unique(_codepoints(text[i : i + _ENCODE_CHUNK])) for i in range(0, len(text), _ENCODE_CHUNK)]
        codepoints = torch.unique(torch.cat(seen)) if seen else torch.empty(0, dtype=torch.int64)
        return cls([chr(c) for c in codepoints.tolist()])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> torch.Tensor:
        """Ids of every character of `text`, all of which must be in the vocabulary."""
        out = torch.empty(len(text), dtype=compact_dtype(len(self)))
        # Slice by slice, so a 100 MB text never needs its code points (or int64 ids) all at once.
        for start in range(0, len(text), _ENCODE_CHUNK):
            chunk = _codepoints(text[start : start + _ENCODE_CHUNK]).to(torch.int64)
            ids = torch.searchsorted(self._codepoints, chunk).clamp_(max=len(self.tokens) - 1)
            unknown = self._codepoints[ids] != chunk
            if bool(unknown.any()):
                offset = start + int(unknown.nonzero()[0])
                raise ConfigError(f"character {text[offset]!r} at offset {offset} is not in the vocabulary")
            out[start : start + len(chunk)] = ids
        return out

    def encode_prompt(self, text: str) -> tuple[list[int], list[str]]:
        """Ids for a user's prompt; unknown characters are folded with unidecode or dropped, and reported."""
        ids: list[int] = []
        notes: list[str] = []
        for ch in text:
            if ch in self.index:
                ids.append(self.index[ch])
                continue
            folded = _unidecode(ch)
            if folded and all(c in self.index for c in folded):
                ids.extend(self.index[c] for c in folded)
                notes.append(f"{ch!r} -> {folded!r}")
            else:
                notes.append(f"{ch!r} dropped (not in vocabulary)")
        return ids, notes

    def decode(self, ids: list[int]) -> str:
        return "".join(self.tokens[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokens": list(self.tokens)}


class WordVocab:
    """Words, punctuation and whitespace runs; tokens seen fewer than `min_freq` times become <unk>."""

    kind = "word"

    def __init__(self, tokens: list[str], scheme: int = WORD_SCHEME):
        if not tokens or tokens[0] != UNK or len(set(tokens)) != len(tokens):
            raise CheckpointError("word vocabulary must start with <unk> and hold distinct tokens")
        if scheme not in WORD_PATTERNS:
            raise CheckpointError(f"word vocabulary of an unknown scheme {scheme!r}")
        self.tokens = tokens
        self.scheme = scheme
        self.index = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, text: str, min_freq: int = 2) -> WordVocab:
        return cls.from_counts(Counter(tokenize_words(text)), min_freq)

    @classmethod
    def from_counts(cls, counts: Counter[str], min_freq: int = 2) -> WordVocab:
        kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        return cls([UNK, *(t for t in kept if t != UNK)])

    def split(self, text: str) -> list[str]:
        return tokenize_words(text, self.scheme)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> torch.Tensor:
        index = self.index
        ids = [index.get(t, 0) for t in self.split(text)]
        return torch.tensor(ids, dtype=compact_dtype(len(self)))

    def encode_prompt(self, text: str) -> tuple[list[int], list[str]]:
        """Ids for a user's prompt: a word not in the vocabulary is folded with unidecode if that
        finds it, else it becomes <unk> (keeping the space before it when the vocabulary has one),
        each reported once."""
        ids: list[int] = []
        notes: list[str] = []
        for token in self.split(text):
            if token in self.index:
                ids.append(self.index[token])
                continue
            folded = _unidecode(token)
            if folded in self.index:
                ids.append(self.index[folded])
                notes.append(f"{token.strip() or token!r} -> {folded.strip() or folded!r}")
                continue
            if token.startswith(" ") and token.strip() and " " in self.index:
                ids.append(self.index[" "])
            ids.append(0)
            notes.append(f"{token.strip() or token!r} -> {UNK}")
        return ids, notes

    def decode(self, ids: list[int]) -> str:
        return "".join(self.tokens[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokens": list(self.tokens), "scheme": self.scheme}


def tokenize_words(text: str, scheme: int = WORD_SCHEME) -> list[str]:
    return WORD_PATTERNS[scheme].findall(text)


# A word model whose text is mostly <unk> learns where the rare words are, not the text.
MOST_UNK = 0.5


def build_vocab(text: str, kind: str = "char", min_freq: int = 2) -> CharVocab | WordVocab:
    """A new run's vocabulary; one with nothing to learn (a single symbol, or a word vocabulary
    that leaves most of the text <unk>) is refused, saying what it kept."""
    if kind == "char":
        chars = CharVocab.build(text)
        if len(chars) < 2:
            raise ConfigError(f"the corpus holds a single distinct character ({chars.tokens[0]!r}): nothing to learn")
        return chars
    if kind == "word":
        counts = Counter(tokenize_words(text))
        vocab = WordVocab.from_counts(counts, min_freq)
        total = sum(counts.values())
        unk = sum(n for t, n in counts.items() if t not in vocab.index)
        if len(vocab) < 3 or unk > MOST_UNK * total:
            kept = len(vocab) - 1
            common = sorted(counts.values(), reverse=True)
            # The largest min-freq that keeps half the text: the n-th most common token's count
            covered, enough = 0, 1
            for n in common:
                covered += n
                enough = n
                if covered >= MOST_UNK * total:
                    break
            raise ConfigError(f"--min-freq {min_freq} keeps {kept:,} of the corpus's {len(counts):,} distinct tokens "
                              f"and leaves {unk / max(total, 1):.0%} of its tokens <unk>: nothing much to learn; "
                              f"lower it (--min-freq {max(1, min(enough, min_freq - 1))} or less)")
        return vocab
    raise ConfigError(f"unknown token kind {kind!r} (choose char or word)")


def vocab_from_dict(data: Any) -> CharVocab | WordVocab:
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise CheckpointError("checkpoint vocabulary is malformed")
    tokens = data["tokens"]
    if not all(isinstance(t, str) for t in tokens):
        raise CheckpointError("checkpoint vocabulary holds non-text tokens")
    kind = data.get("kind")
    if kind == "char":
        return CharVocab(tokens)
    if kind == "word":
        return WordVocab(tokens, data.get("scheme", 1))  # no scheme: a checkpoint from before scheme 2
    raise CheckpointError(f"checkpoint vocabulary has unknown kind {kind!r}")


def _codepoints(text: str) -> torch.Tensor:
    """Unicode code points of `text` as a tensor, without a Python list per character."""
    if text.isascii():
        return torch.frombuffer(bytearray(text.encode("ascii")), dtype=torch.uint8)
    return torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32)


def _unidecode(text: str) -> str:
    from unidecode import unidecode

    return unidecode(text)
