"""Writing with the model: while someone types, what it expects next and how surprised it was by
each token typed, with the state carried from keystroke to keystroke.

The state after every token of the text so far is kept, so a keystroke that adds characters feeds
only those, and one that deletes goes back to a state already computed. The states were computed
with the weights of the moment (training goes on between keystrokes); text replaced beyond what is
kept is fed again with the current ones.

What a keystroke costs is bounded by the model and a window, not by the text: the model reads at
most the last PROMPT_WINDOW tokens (a longer text is read from a point that moves in steps of half a
window, so that typing on still feeds one token a keystroke), one state per token of that window is
kept, and one logits row: the one being answered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charrnn_tui.engine.model.model import CharRNN, State, Stepper
from charrnn_tui.engine.model.sampling import PROMPT_WINDOW, to_device, to_host, top_next, window_note
from charrnn_tui.engine.text.vocab import CharVocab, WordVocab

MAX_TOP = 50
STEPPED_FEED = 16  # new tokens up to this many are fed a step at a time (a keystroke); more, in chunks (a paste)
FEED_CHUNK = 128  # tokens of a paste through the model at once: (FEED_CHUNK, vocab) logits at most


def window_start(tokens: int, window: int = PROMPT_WINDOW) -> int:
    """The first token the model reads of a text of `tokens`: 0 up to `window` tokens, then a point
    that moves in steps of half a window, so that between half a window and a window are read and
    the states kept stay usable while someone types on (a window sliding by one token would feed
    the whole window again at every keystroke)."""
    if tokens <= window:
        return 0
    half = max(1, window // 2)
    return ((tokens - window) // half + 1) * half


@dataclass(frozen=True)
class Expectation:
    text: str
    top: list[tuple[str, float]]  # the likeliest next tokens and their probabilities, most likely first
    probs: list[float]  # the probability the model gave each typed token after the first, given those before
    token_lengths: list[int]  # characters of each typed token (after folding), the first included
    notes: list[str]  # how characters or words outside the vocabulary were handled


class TypingState:
    def __init__(self, model: CharRNN, vocab: CharVocab | WordVocab, window: int = PROMPT_WINDOW):
        self.model = model
        self.vocab = vocab
        self.stepper = Stepper(model)
        self.window = window
        self.start = 0  # the text's first token read: ids, layers and probs are from there on
        self.ids: list[int] = []
        # The state after each token of `ids` (per layer: h, or (h, c)); None inside a text fed in
        # bulk, where the recurrent layers give the state at the end of each FEED_CHUNK only.
        self.layers: list[list[State] | None] = []
        self.probs: list[float] = []  # the probability of token i + 1 given tokens 0..i
        self.fed = 0  # tokens fed through the model so far (for tests and benchmarks)

    def expect(self, text: str, top: int = 5, allow_unk: bool = False) -> Expectation:
        every, notes = self.vocab.encode_prompt(text)
        if not every:  # nothing typed yet: what the model writes after a new line
            every = [self.vocab.index.get("\n", 0)]
        start = window_start(len(every), self.window)
        ids = every[start:]
        if start != self.start:  # the window moved: its states start from nothing again
            self.start = start
            del self.ids[:], self.layers[:], self.probs[:]
        kept = 0
        while kept < min(len(ids), len(self.ids)) and ids[kept] == self.ids[kept]:
            kept += 1
        while kept and self.layers[kept - 1] is None:  # back to a state that was kept
            kept -= 1
        del self.ids[kept:], self.layers[kept:], self.probs[max(0, kept - 1):]
        with self.model.evaluating(), torch.inference_mode():
            logits = self._logits(self._last_state()) if self.layers else None
            new = ids[kept:]
            feed = self._feed_steps if len(new) <= STEPPED_FEED else self._feed_chunks
            logits, new_probs = feed(new, logits)
            assert logits is not None, "a text of one token or more: its logits kept, or fed now"
            masked = isinstance(self.vocab, WordVocab) and not allow_unk  # as sampling: <unk> never suggested
            values, order = top_next(logits[0], min(max(1, top), MAX_TOP), masked)
            # One copy back per keystroke: the suggestions and the new tokens' probabilities together
            # (float64 holds every id exactly and every float32 probability as it is).
            scored = [torch.cat(new_probs).nan_to_num(0.0)] if new_probs else []
            back = to_host(torch.cat([order.double(), values.double(), *(p.double() for p in scored)])).tolist()
            k = len(order)
            self.probs += back[2 * k :]
            ranked = list(zip((int(i) for i in back[:k]), back[k : 2 * k], strict=True))
        top_tokens = [(self.vocab.tokens[i], p) for i, p in ranked]
        lengths = [len(self.vocab.tokens[i]) for i in self.ids]
        if start:
            notes = [*notes, window_note(len(every), len(ids))]
            # The text before the window joins its first token: shown, not scored (it has no context).
            lengths[0] += sum(len(self.vocab.tokens[i]) for i in every[:start])
        return Expectation(text, top_tokens, list(self.probs), lengths, notes)

    def _feed_steps(self, tokens: list[int],
                    logits: torch.Tensor | None) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """A keystroke's few tokens, one step each (cheap at batch 1), keeping the state after each:
        a backspace then costs nothing. Returns the logits (1, vocab) after the last and the
        probability of each token that had logits before it."""
        if not tokens:
            return logits, []
        # The keystroke's tokens in one tensor and one copy to the device (a view of it a step).
        typed = to_device(tokens, self.model.head.weight.device)
        probs = []
        for at, token in enumerate(tokens):
            previous = self._last_state() if self.layers else self.stepper.unstack(self.model.initial_state(1))
            if logits is not None:  # how likely this token was, before it was fed
                probs.append(torch.softmax(logits[0].float(), dim=-1)[token : token + 1])
            logits, layers = self.stepper.step_layers(typed[at : at + 1], previous)
            self.ids.append(token)
            self.layers.append(layers)
            self.fed += 1
        return logits, probs

    def _feed_chunks(self, tokens: list[int],
                     logits: torch.Tensor | None) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """A paste: the recurrent layers over FEED_CHUNK tokens at a time and the head on those
        positions together (a matrix product, not a step per token), so a window costs a fraction
        of a second and at most (FEED_CHUNK, vocab) logits at once; states kept at chunk ends."""
        model = self.model
        pasted = to_device(tokens, model.head.weight.device)  # the whole paste in one copy to the device
        probs = []
        for at in range(0, len(tokens), FEED_CHUNK):
            chunk = tokens[at : at + FEED_CHUNK]
            ids = pasted[at : at + len(chunk)]
            state = self.stepper.stack(self._last_state()) if self.layers else None
            out, state = model.rnn(model.embed(ids.unsqueeze(0)), state)
            chunk_logits = model.head(out[0])  # (len(chunk), vocab)
            before = chunk_logits[:-1] if logits is None else torch.cat([logits, chunk_logits[:-1]])
            scored = ids[1:] if logits is None else ids
            probs.append(torch.softmax(before.float(), dim=-1).gather(1, scored.unsqueeze(1)).squeeze(1))
            logits = chunk_logits[-1:]
            self.ids += chunk
            self.layers += [None] * (len(chunk) - 1) + [self.stepper.unstack(state)]
            self.fed += len(chunk)
        return logits, probs

    def _last_state(self) -> list[State]:
        """The state after the last token kept: one a step or a chunk's end left (expect trims back to one)."""
        last = self.layers[-1]
        assert last is not None, "a state inside a chunk is never the last kept"
        return last

    def _logits(self, layers: list[State]) -> torch.Tensor:
        """(1, vocab) after a kept state: the head on its last layer's output (h), as the step made it."""
        last = layers[-1]
        return self.model.head(last[0] if isinstance(last, tuple) else last)
