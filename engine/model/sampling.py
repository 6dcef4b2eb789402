"""Stateful, streaming generation: warm the state on a prompt, then one network step per token."""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass, field

import torch

from charrnn_tui.engine.counts import plural
from charrnn_tui.engine.errors import ConfigError
from charrnn_tui.engine.model.model import CharRNN, State, Stepper
from charrnn_tui.engine.text.vocab import CharVocab, WordVocab

# Tokens of a prompt that warm the state: a longer one is read from its last PROMPT_WINDOW tokens, so
# that what a request costs (time, and memory: the recurrent outputs of the window, the head on one
# position) is bounded by the model and this, not by the text. An RNN's state after this many
# tokens has long forgotten what came before them.
PROMPT_WINDOW = 2048


@dataclass
class SampleSettings:
    length: int = 200
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    seed: int | None = None
    chunk: int = 16  # tokens per yielded piece of text
    allow_unk: bool = False  # a word model may write <unk> (its logit is masked otherwise)

    def validate(self, vocab_size: int) -> None:
        if self.length < 0:
            raise ConfigError(f"length must be 0 or more, not {self.length}")
        if not (self.temperature > 0 and self.temperature < float("inf")):
            raise ConfigError(f"temperature must be a positive number, not {self.temperature}")
        if self.top_k is not None and not 1 <= self.top_k <= vocab_size:
            raise ConfigError(f"top-k must be between 1 and the vocabulary size ({vocab_size}), not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top-p must be in (0, 1], not {self.top_p}")
        if self.chunk < 1:
            raise ConfigError("chunk must be at least 1")


@dataclass
class Continuation:
    """What `generate` produced; `notes` say how unknown prompt characters were handled."""

    prompt: str
    notes: list[str] = field(default_factory=list)
    text: str = ""
    # The model's own probability (at temperature 1) of each token it produced: how sure it was.
    probs: list[float] = field(default_factory=list)
    token_lengths: list[int] = field(default_factory=list)  # characters of each token of `text`


class TextGenerator:
    def __init__(self, model: CharRNN, vocab: CharVocab | WordVocab):
        self.model = model
        self.vocab = vocab
        self.stepper = Stepper(model)

    @property
    def device(self) -> torch.device:
        return self.model.head.weight.device

    def prepare(self, prompt: str) -> tuple[list[int], list[str]]:
        """Prompt ids (unknown characters folded or dropped, with notes), at most the last
        PROMPT_WINDOW of them (said in a note); never empty."""
        ids, notes = self.vocab.encode_prompt(prompt)
        if not ids:
            # Start from a newline when there is one: the model has seen text start after it.
            ids = [self.vocab.index.get("\n", 0)]
        if len(ids) > PROMPT_WINDOW:
            notes = [*notes, window_note(len(ids), PROMPT_WINDOW)]
            ids = ids[-PROMPT_WINDOW:]
        return ids, notes

    def stream(self, prompt: str, settings: SampleSettings,
               result: Continuation | None = None) -> Generator[str, None, None]:
        """Yield the continuation of `prompt` in pieces of `settings.chunk` tokens, as produced.

        Inference mode and eval mode are entered for each piece's work and left before it is
        yielded, so the caller never runs in them: a run trains between the pieces of a client's
        prompt (and mutation testing, which skips decorated functions, sees this)."""
        settings.validate(len(self.vocab))
        ids, notes = self.prepare(prompt)
        if result is not None:
            result.notes.extend(notes)
        with self.model.evaluating(), torch.inference_mode():
            seed = settings.seed if settings.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
            generator = torch.Generator(device=self.device).manual_seed(seed)
            logits, state = self._warm_up(ids)
            layers = self.stepper.unstack(state)
            out = torch.empty(settings.length, dtype=torch.long, device=self.device)
            picker = _Picker(settings, generator, logits.size(-1), self.device, self._masks_unk(settings))
        done = 0
        while done < settings.length:
            # One chunk: tokens stay on the device, drawn without a host sync (_Picker); one copy
            # back per chunk, not per token.
            n = min(settings.chunk, settings.length - done)
            with self.model.evaluating(), torch.inference_mode():
                picker.draw_noise(n)
                seen = []  # the logits each token was drawn from (each step makes new ones: no copy)
                for j in range(n):
                    seen.append(logits[0])
                    token = picker.pick(logits, j)
                    out[done + j : done + j + 1] = token
                    if done + j + 1 < settings.length:
                        logits, layers = self.stepper.step_layers(token, layers)
                tokens = out[done : done + n]
                # One softmax for the chunk, off the per-token path.
                probs = torch.softmax(torch.stack(seen).float(), dim=-1).gather(1, tokens.unsqueeze(1)).squeeze(1)
                probs = probs.nan_to_num(0.0)  # weights gone non-finite: "no confidence", not NaN on the wire
                # Tokens and probabilities in one tensor, copied back once: float64 holds every id exactly
                # (below 2**53) and every float32 probability as it is.
                drawn, confidence = to_host(torch.stack([tokens.double(), probs.double()])).tolist()
                ids = [int(i) for i in drawn]
                piece = self.vocab.decode(ids)
            done += n
            if result is not None:
                result.text += piece
                result.probs += confidence
                result.token_lengths += [len(self.vocab.tokens[i]) for i in ids]
            yield piece

    def _masks_unk(self, settings: SampleSettings) -> bool:
        return isinstance(self.vocab, WordVocab) and not settings.allow_unk

    def next_tokens(self, prompt: str, top: int, allow_unk: bool = False) -> tuple[list[tuple[str, float]], list[str]]:
        """The `top` likeliest tokens to follow `prompt`, with their probabilities at temperature 1,
        most likely first (the first is what greedy sampling writes), and the prompt's notes. With
        <unk> masked, as when sampling, the probabilities are over the other tokens."""
        if top < 1:
            raise ConfigError(f"top must be at least 1, not {top}")
        ids, notes = self.prepare(prompt)
        with self.model.evaluating(), torch.inference_mode():
            logits, _ = self._warm_up(ids)
            values, order = top_next(logits[0], top, mask_unk=self._masks_unk(SampleSettings(allow_unk=allow_unk)))
            back = to_host(torch.cat([order.double(), values.double()])).tolist()  # one copy back
            ranked = list(zip((int(i) for i in back[: len(order)]), back[len(order) :], strict=True))
        return [(self.vocab.tokens[i], p) for i, p in ranked], notes

    def generate(self, prompt: str, settings: SampleSettings) -> Continuation:
        result = Continuation(prompt)
        for _ in self.stream(prompt, settings, result):
            pass
        return result

    def _warm_up(self, ids: list[int]) -> tuple[torch.Tensor, State]:
        """Logits (1, vocab) after the prompt and the state there. One call over the whole prompt
        (the state is then carried, never recomputed), with the head on its last position only: on
        every position it would make (len(ids), vocab) logits to keep one row."""
        x = to_device(ids, self.device).unsqueeze(0)
        logits, state = self.model(x, None, True)  # last_only (positional: tests wrap forward as *args)
        return logits[:, -1], state


def window_note(tokens: int, window: int) -> str:
    return f"the text is {plural(tokens, 'token')}: the model read the last {window:,} (its state starts there)"


def top_next(logits: torch.Tensor, top: int, mask_unk: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The `top` likeliest tokens for logits (vocab,) at temperature 1, as (probabilities, ids), most
    likely first; with `mask_unk`, <unk> (id 0 of a word vocabulary) is left out, as sampling does."""
    logits = logits.float().clone()
    if mask_unk:
        logits[0] = float("-inf")
    k = min(top, logits.numel() - int(mask_unk))  # a masked <unk> is never listed, not even at 0%
    if k < 1:
        raise ConfigError("the model's vocabulary holds nothing but <unk> (--allow-unk to rank it)")
    # Weights gone non-finite mean no confidence: 0%, never "nan%".
    return torch.topk(torch.softmax(logits, dim=-1).nan_to_num(0.0), k)


def to_device(ids: list[int], device: torch.device) -> torch.Tensor:
    """Token ids as one long tensor (len(ids),) on `device`, in one host-to-device copy: on CUDA from
    pinned memory and without blocking the host (the caching host allocator keeps the pinned block
    until the copy is done), where a pageable copy would wait for it."""
    if device.type != "cuda":
        return torch.tensor(ids, dtype=torch.long, device=device)
    return torch.tensor(ids, dtype=torch.long, pin_memory=True).to(device, non_blocking=True)


def to_host(values: torch.Tensor) -> torch.Tensor:
    """`values` on the CPU, in one device-to-host copy. On CUDA: into pinned memory without blocking,
    then one wait for that copy (an event recorded after it on the stream it ran on, the current
    stream of the tensor's GPU), which is the one host sync of the piece of work it ends."""
    if values.device.type != "cuda":
        return values.cpu()
    host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
    host.copy_(values, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(values.device))
    copied.synchronize()
    return host


class _Picker:
    """Chooses the next token (batch,) from logits (batch, vocab) on the device, with no host sync.

    Every sampled mode is the Gumbel-max trick, with the noise for a whole chunk drawn at once from
    the stream's seeded generator on the device: argmax(logits / T + G), G standard Gumbel noise,
    is an exact sample from softmax(logits / T). Top-k and top-p first set the logits outside the
    kept set to -inf, so the argmax is an exact sample from the softmax renormalised over that set,
    the distribution multinomial drew from the renormalised probabilities. One add and one argmax
    per token; torch.multinomial, which draws its one sample the same way, checks its input first
    (with _assert_async: a device-side assert on CUDA, which non-finite weights would trip, ending
    the process's use of the GPU).
    """

    def __init__(self, s: SampleSettings, generator: torch.Generator, vocab: int, device: torch.device,
                 mask_unk: bool = False):
        self.s = s
        self.generator = generator
        self.vocab = vocab
        self.device = device
        # <unk> (id 0 of a word vocabulary) never chosen: -inf added to its logit (a fill on the device,
        # not a copy of a host scalar).
        self.mask = None
        if mask_unk:
            self.mask = torch.zeros(vocab, device=device)
            self.mask[:1].fill_(float("-inf"))
        self.gumbel: torch.Tensor | None = None
        # 1/T multiplies float32 logits: 1/1e-300 is inf there, and inf - inf (softmax) or 0 * inf is
        # NaN. 1e30 keeps logits up to 1e8 finite; any T that small is greedy sampling already
        # (clients are held to protocol.MIN_TEMPERATURE; the command line may ask less).
        self.inv_temperature = min(1.0 / s.temperature, 1e30)
        self.top_k = s.top_k if s.top_k is not None and s.top_k < vocab else None
        self.top_p = s.top_p if s.top_p is not None and s.top_p < 1.0 else None

    def draw_noise(self, n: int) -> None:
        """Gumbel noise for the next `n` tokens, (n, vocab), from the stream's generator."""
        if self.s.greedy:
            return
        uniform = torch.rand(n, self.vocab, generator=self.generator, device=self.device).clamp_(min=1e-10)
        self.gumbel = -torch.log(-torch.log(uniform))

    def pick(self, logits: torch.Tensor, j: int) -> torch.Tensor:
        """The token drawn from logits (batch, vocab) with the chunk's j-th noise."""
        if self.mask is not None:
            logits = logits.float() + self.mask
        if self.s.greedy:
            return logits.argmax(dim=-1)
        assert self.gumbel is not None, "draw_noise comes first"
        return (self.kept(logits) + self.gumbel[j]).argmax(dim=-1)

    def kept(self, logits: torch.Tensor) -> torch.Tensor:
        """logits / T (float32), with -inf outside the set top-k and top-p keep."""
        logits = logits.float() * self.inv_temperature
        if self.top_k is not None:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p is not None:
            sorted_probs, order = torch.sort(torch.softmax(logits, dim=-1), dim=-1, descending=True)
            # Keep the smallest set whose mass reaches top_p (the first token always stays).
            drop = sorted_probs.cumsum(dim=-1) - sorted_probs > self.top_p
            logits = logits.masked_fill(torch.empty_like(drop).scatter_(-1, order, drop), float("-inf"))
        return logits
