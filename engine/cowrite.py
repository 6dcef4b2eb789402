"""Writing with the model: while someone types, what it expects next and how surprised it was by
each token typed, with the state carried from keystroke to keystroke.

The state after every token of the text so far is kept, so a keystroke that adds characters feeds
only those, and one that deletes goes back to a state already computed. The states were computed
with the weights of the moment (training goes on between keystrokes); text replaced beyond what is
kept is fed again with the current ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import CharRNN, Stepper
from .sampling import top_next
from .vocab import CharVocab, WordVocab

MAX_TOP = 50


@dataclass(frozen=True)
class Expectation:
    text: str
    top: list[tuple[str, float]]  # the likeliest next tokens and their probabilities, most likely first
    probs: list[float]  # the probability the model gave each typed token after the first, given those before
    token_lengths: list[int]  # characters of each typed token (after folding), the first included
    notes: list[str]  # how characters or words outside the vocabulary were handled


class TypingState:
    def __init__(self, model: CharRNN, vocab: CharVocab | WordVocab):
        self.model = model
        self.vocab = vocab
        self.stepper = Stepper(model)
        self.ids: list[int] = []
        self.layers: list[list] = []  # the state after each token of `ids`
        self.logits: list[torch.Tensor] = []  # (vocab,) after each token: what the next one may be
        self.probs: list[torch.Tensor] = []  # () the probability of token i + 1 given tokens 0..i
        self.fed = 0  # tokens fed through the model so far (for tests and benchmarks)

    def expect(self, text: str, top: int = 5, allow_unk: bool = False) -> Expectation:
        ids, notes = self.vocab.encode_prompt(text)
        if not ids:  # nothing typed yet: what the model writes after a new line
            ids = [self.vocab.index.get("\n", 0)]
        kept = 0
        while kept < min(len(ids), len(self.ids)) and ids[kept] == self.ids[kept]:
            kept += 1
        del self.ids[kept:], self.layers[kept:], self.logits[kept:], self.probs[max(0, kept - 1):]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                device = self.model.head.weight.device
                for token in ids[kept:]:
                    previous = self.layers[-1] if self.layers else self.stepper.unstack(self.model.initial_state(1))
                    if self.logits:  # how likely this token was, before it was fed
                        self.probs.append(torch.softmax(self.logits[-1].float(), dim=-1)[token])
                    logits, layers = self.stepper.step_layers(torch.tensor([token], device=device), previous)
                    self.ids.append(token)
                    self.layers.append(layers)
                    self.logits.append(logits[0])
                    self.fed += 1
                masked = isinstance(self.vocab, WordVocab) and not allow_unk  # as sampling: <unk> never suggested
                values, order = top_next(self.logits[-1], min(max(1, top), MAX_TOP), masked)
                # One copy back per keystroke: the suggestions and the typed tokens' probabilities together.
                probs = torch.stack(self.probs).nan_to_num(0.0).tolist() if self.probs else []
                ranked = list(zip(order.tolist(), values.tolist(), strict=True))
        finally:
            if was_training:
                self.model.train()
        top_tokens = [(self.vocab.tokens[i], p) for i, p in ranked]
        return Expectation(text, top_tokens, probs, [len(self.vocab.tokens[i]) for i in self.ids], notes)
