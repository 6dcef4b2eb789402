"""The model's answers while it trains: samples written a piece at a time with the weights of the
moment, and the likeliest next tokens after a keystroke. Functions of the Run; the loop decides
when (engine/run/trainer.py) and the controls how much (engine/run/control.py)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator

from charrnn_tui.engine.errors import CharRNNError
from charrnn_tui.engine.events import NextTokens, Notice, SampleFinished, SampleStarted, SampleText
from charrnn_tui.engine.model.cowrite import TypingState
from charrnn_tui.engine.model.sampling import Continuation, SampleSettings
from charrnn_tui.engine.run.batch_size import is_out_of_memory
from charrnn_tui.engine.run.run import EventSink, Run

MAX_SAVED_SAMPLES = 50  # the live samples a checkpoint keeps


class Answers:
    """What the model of a run says while it trains: its samples (numbered from 1) and its answers
    to keystrokes, with the typing state carried from one keystroke to the next."""

    def __init__(self, run: Run, emit: EventSink):
        self.run = run
        self.emit = emit
        self.sample_ids = 0
        self.typing: TypingState | None = None  # the prompt being typed, with its states (engine/model/cowrite.py)
        self._copy_check_noted = False

    def sample(self, step: int, prompt: str, source: str, settings: SampleSettings) -> Generator[None, None, str]:
        """A sample, one piece (SampleSettings.chunk tokens) emitted per iteration; returns its
        text. Between pieces the run may train: the pieces are written with the weights of the
        moment. One that fails or is dropped (the run stopped) half-way still finishes for its
        viewers, with what it had."""
        run = self.run
        self.sample_ids += 1
        sample_id = self.sample_ids
        result = Continuation(prompt)
        pieces = run.generator.stream(prompt, settings, result)
        first = next(pieces, None)  # prepares the prompt, so its notes are known (a failure: nothing started)
        self.emit(SampleStarted(sample_id, step, prompt, settings.temperature, source, tuple(result.notes)))
        word_level = run.vocab.kind == "word"
        sent = 0
        finished = False
        try:
            for piece in itertools.chain([first] if first is not None else [], pieces):
                probs, lengths = token_details(result, sent, word_level)
                sent = len(result.probs)
                self.emit(SampleText(sample_id, piece, probs, lengths))
                yield
            probs, lengths = token_details(result, 0, word_level)
            copies = self._copies(result.text)
            finished = True
            self.emit(SampleFinished(sample_id, result.text, probs, lengths, *copies))
        finally:
            if not finished:
                probs, lengths = token_details(result, 0, word_level)
                self.emit(SampleFinished(sample_id, result.text, probs, lengths))
        return result.text

    def expect(self, text: str, top: int) -> None:
        """Answer a keystroke: the likeliest next tokens after `text`, from the state carried since
        the last one (engine/model/cowrite.py)."""
        if self.typing is None:
            self.typing = TypingState(self.run.model, self.run.vocab)
        expectation = self.typing.expect(text, top)
        self.emit(NextTokens(text, tuple((t, round(p, 4)) for t, p in expectation.top),
                             tuple(round(p, 3) for p in expectation.probs), tuple(expectation.token_lengths),
                             tuple(expectation.notes)))

    def _copies(self, text: str) -> tuple[int | None, tuple[tuple[int, int], ...]]:
        """The longest span of `text` copied from the corpus, and the marked spans; (None, ()) until
        the index is ready."""
        copies = self.run.copy_index  # the leader's, set up before any sample
        index = copies.index if copies is not None else None
        if index is None:
            if copies is not None and copies.skipped and not self._copy_check_noted:
                self._copy_check_noted = True
                self.emit(Notice(copies.skipped, "warning"))
            return None, ()
        novelty = index.novelty(text)
        return novelty.longest_copy, tuple(novelty.spans)


def write_whole(pieces: Generator[None, None, str], between: Callable[[], None], emit: EventSink) -> str | None:
    """A sample written start to end (the run's own live samples; clients' are served a piece at a
    time, engine/run/control.py), calling `between` after each piece; its text, or None if it
    failed: that is a warning, and training goes on."""
    try:
        while True:
            next(pieces)
            between()  # a keystroke waits for one piece of a sample at most
    except StopIteration as done:
        text: str = done.value
        return text
    except Exception as e:
        if is_out_of_memory(e):
            raise  # the run's own handling (Trainer.run): it saves and ends
        message = str(e) if isinstance(e, CharRNNError) else f"{type(e).__name__}: {str(e)[:200]}"
        emit(Notice(f"a sample failed: {message}; training goes on", "warning"))
        return None


def token_details(result: Continuation, start: int, word_level: bool) -> tuple[tuple, tuple]:
    """The probabilities of the tokens from `start` on, and their lengths at word level."""
    probs = tuple(round(p, 3) for p in result.probs[start:])
    return probs, tuple(result.token_lengths[start:]) if word_level else ()


def keep_live_sample(samples: list[tuple[int, str]], step: int, text: str) -> list[tuple[int, str]]:
    """The live samples a checkpoint keeps, with this one: the last MAX_SAVED_SAMPLES."""
    return [*samples[-(MAX_SAVED_SAMPLES - 1):], (step, text)]
