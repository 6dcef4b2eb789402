"""What a run keeps of its text: a fingerprint of the corpus it trains on, to tell when the file
has changed, and its validation ids (RUN/validation.pt), so that `eval RUN` needs no corpus file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch

from charrnn_tui.engine import config as cfg
from charrnn_tui.engine.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, os_reason, save_atomically
from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.errors import CharRNNError, CheckpointError

VALIDATION = "validation.pt"
_HASH_CHUNK = 1 << 22  # characters hashed at a time: a 1 GB text is never encoded all at once
# Token ids in any of the compact dtypes the vocabulary encodes to (engine/text/vocab.py compact_dtype).
_ID_DTYPES = (torch.uint8, torch.int16, torch.int32, torch.int64)


@dataclass(frozen=True)
class TextFingerprint:
    """The text a run trained on, as loaded (after --ascii folding): its length and SHA-256."""

    chars: int
    sha256: str

    @classmethod
    def of(cls, text: str) -> TextFingerprint:
        digest = hashlib.sha256()
        for start in range(0, len(text), _HASH_CHUNK):
            # surrogatepass: a text with lone surrogates hashes too; UTF-8 of slices concatenates
            digest.update(text[start : start + _HASH_CHUNK].encode("utf-8", "surrogatepass"))
        return cls(len(text), digest.hexdigest())

    def to_dict(self) -> dict[str, Any]:
        return {"chars": self.chars, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: Any) -> TextFingerprint | None:
        """The fingerprint in `data`, or None where it holds none (a checkpoint from before them)."""
        if not isinstance(data, dict):
            return None
        chars, sha = data.get("chars"), data.get("sha256")
        if type(chars) is not int or not isinstance(sha, str):
            return None
        return cls(chars, sha)


def describe_change(stored: TextFingerprint, text: str) -> str | None:
    """How `text` differs from the text `stored` was taken of, in a few words; None if it does not."""
    now = TextFingerprint.of(text)
    if now == stored:
        return None
    if now.chars > stored.chars:
        added = now.chars - stored.chars
        if TextFingerprint.of(text[: stored.chars]) == stored:
            return f"grew by {plural(added, 'character')} at the end"
        return f"changed and grew by {plural(added, 'character')}"
    if now.chars < stored.chars:
        return f"shrank by {plural(stored.chars - now.chars, 'character')}"
    return f"changed (the same length, {plural(now.chars, 'character')})"


def corpus_change(config: cfg.TrainConfig, stored: TextFingerprint) -> str | None:
    """How the run's corpus file differs now from the text `stored` describes; None when it is the
    same, or gone or unreadable (nothing to tell then: the caller works without it)."""
    from charrnn_tui.engine.text.corpus import load_corpus

    try:
        corpus = load_corpus(config.corpus, csv_column=config.csv_column, ascii_only=config.ascii,
                             encoding=config.encoding)
    except (CharRNNError, MemoryError):
        return None
    return describe_change(stored, corpus.text)


@dataclass(frozen=True)
class KeptValidation:
    """A run's validation split as training cut it, and the text it was cut from."""

    ids: torch.Tensor  # the whole split: `eval` with --eval-tokens all reads every token
    source: str  # the corpus as people know it (Corpus.source)
    fingerprint: TextFingerprint


def save_validation(run_dir: Path, ids: torch.Tensor, source: str, fingerprint: TextFingerprint) -> Path:
    """Write RUN/validation.pt atomically and user-only, like a checkpoint. The ids keep the
    vocabulary's compact dtype (1 byte a token for up to 256 tokens): the split is val_fraction of
    the corpus, so the file is about that share of the text's size."""
    path = Path(run_dir) / VALIDATION
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "validation",
               "ids": ids.detach().cpu().clone(),  # a clone: a slice would save the whole corpus's storage
               "source": source, "corpus": fingerprint.to_dict()}
    try:
        save_atomically(payload, path)
    except OSError as e:
        raise CheckpointError(f"cannot keep the validation text in {path} ({os_reason(e)})") from None
    return path


def load_validation(run_dir: Path, vocab_size: int) -> KeptValidation | None:
    """The validation split a run kept, checked against its vocabulary; None if the run has none
    (it predates them, or its checkpoint was copied out of the run folder)."""
    path = Path(run_dir) / VALIDATION
    if not path.exists():
        return None
    fix = "delete it to score the run's corpus file instead"
    try:
        data = load_checkpoint(path)  # as data only (weights_only=True), with its one-line refusals
    except CheckpointError as e:
        raise CheckpointError(f"{e}; {fix}") from None
    ids, source = data.get("ids"), data.get("source")
    fingerprint = TextFingerprint.from_dict(data.get("corpus"))

    def refuse(why: str) -> NoReturn:
        raise CheckpointError(f"{path}: {why}; {fix}")

    if data.get("kind") != "validation" or not isinstance(source, str) or fingerprint is None:
        refuse("not a run's validation text")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype not in _ID_DTYPES:
        refuse("its ids are not a 1-D tensor of integers")
    if len(ids) < 2:
        refuse(f"{plural(len(ids), 'id')}, too few to score (at least 2)")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        refuse(f"ids outside the run's vocabulary of {vocab_size} tokens")
    return KeptValidation(ids, source, fingerprint)
