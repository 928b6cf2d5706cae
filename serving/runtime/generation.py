"""Text generation with a causal language model, one token at a time.

:meth:`TextGenerator.generate` is a plain iterator of :class:`TextDelta`: each ``next()`` runs
at most one forward pass (reusing the key/value cache), so a caller can stream deltas as they
come, run each step on a worker thread, and stop early by no longer asking. Text is released only
once it is final: not while it could still be the start of a stop sequence, and not while it
ends in an incomplete UTF-8 character.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from soberana.serving.runtime.protocol import FinishReason

_INCOMPLETE_CHARACTER = "\ufffd"
_UNBOUNDED_CONTEXT = 1_000_000  # tokenizers say "no limit" with a huge model_max_length


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens, and when to stop."""

    max_tokens: int
    temperature: float = 1.0  # 0: always the likeliest token
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class TextDelta:
    """New text; the last delta of a generation has ``finish_reason`` set."""

    text: str
    finish_reason: FinishReason | None
    completion_tokens: int  # generated so far


class NoChatTemplateError(ValueError):
    """The tokenizer has no chat template, so the model cannot take a conversation."""


class TextGenerator:
    """A causal language model and its tokenizer, on one device."""

    def __init__(
        self, model: Any, tokenizer: PreTrainedTokenizerBase, device: torch.device
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self.device = device
        self.context_length = _context_length(model.config, tokenizer)
        self._end_tokens = _end_tokens(model, tokenizer)

    @classmethod
    def load(cls, path: Path, device: torch.device) -> TextGenerator:
        """Load a model saved with ``save_pretrained`` from ``path``; never from a hub."""
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # on a GPU in the dtype it was saved in; CPUs compute best in float32
        dtype = "auto" if device.type == "cuda" else torch.float32
        model: Any = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
        model.requires_grad_(False)
        return cls(model.to(device).eval(), tokenizer, device)

    def encode(self, prompt: str) -> list[int]:
        """The prompt's tokens, with whatever special tokens the tokenizer adds."""
        return list(self._tokenizer(prompt)["input_ids"])

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The conversation's tokens per the chat template, ready for the assistant's reply."""
        if not self._tokenizer.chat_template:
            raise NoChatTemplateError(
                "this model has no chat template: use /v1/completions with a prompt instead"
            )
        text = self._tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
        assert isinstance(text, str)
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompt: Sequence[int], sampling: Sampling) -> Iterator[TextDelta]:
        """Deltas of the text that follows ``prompt``, the last one saying why it ended."""
        randomness = torch.Generator(device=self.device)
        if sampling.seed is None:
            randomness.seed()
        else:
            randomness.manual_seed(sampling.seed)
        tokens: list[int] = []
        released = 0  # characters of the text already yielded
        cache: Any = None
        step_input = torch.tensor([list(prompt)], device=self.device)
        while len(tokens) < sampling.max_tokens:
            token, cache = self._next_token(step_input, cache, sampling, randomness)
            if token in self._end_tokens:
                yield TextDelta(self._decode(tokens)[released:], "stop", len(tokens))
                return
            tokens.append(token)
            text = self._decode(tokens)
            stop_at = _first_stop(text, sampling.stop, released)
            if stop_at is not None:
                yield TextDelta(text[released:stop_at], "stop", len(tokens))
                return
            final = _final_length(text, sampling.stop)
            if final > released:
                yield TextDelta(text[released:final], None, len(tokens))
                released = final
            step_input = torch.tensor([[token]], device=self.device)
        yield TextDelta(self._decode(tokens)[released:], "length", len(tokens))

    def _next_token(
        self, step_input: torch.Tensor, cache: Any, sampling: Sampling, randomness: torch.Generator
    ) -> tuple[int, Any]:
        # inference mode is per thread, and every step may run on another worker thread
        with torch.inference_mode():
            output = self._model(input_ids=step_input, past_key_values=cache, use_cache=True)
            token = _sample(output.logits[0, -1], sampling, randomness)
        return token, output.past_key_values

    def _decode(self, tokens: list[int]) -> str:
        text = self._tokenizer.decode(
            tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        assert isinstance(text, str)
        return text


def _sample(logits: torch.Tensor, sampling: Sampling, randomness: torch.Generator) -> int:
    if sampling.temperature == 0:
        return int(logits.argmax())
    probabilities = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    ranked, order = probabilities.sort(descending=True)
    # keep the likeliest tokens until they hold top_p of the mass (always at least one)
    ranked[(ranked.cumsum(dim=-1) - ranked) >= sampling.top_p] = 0
    choice = torch.multinomial(ranked, 1, generator=randomness)
    return int(order[choice])


def _first_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    """Where the earliest stop sequence begins in ``text[start:]``, or None."""
    found = [index for index in (text.find(stop, start) for stop in stops) if index >= 0]
    return min(found, default=None)


def _final_length(text: str, stops: Sequence[str]) -> int:
    """How much of ``text`` no further token can change: it could still grow into a stop
    sequence at its end, and an incomplete character at the end is completed by later tokens."""
    held = max(
        (
            size
            for stop in stops
            for size in range(min(len(stop) - 1, len(text)), 0, -1)
            if text.endswith(stop[:size])
        ),
        default=0,
    )
    final = len(text) - held
    while final > 0 and text[final - 1] == _INCOMPLETE_CHARACTER:
        final -= 1
    return final


def _context_length(config: Any, tokenizer: PreTrainedTokenizerBase) -> int:
    configured = getattr(config, "max_position_embeddings", None)
    if isinstance(configured, int) and configured > 0:
        return configured
    limit = tokenizer.model_max_length
    if 0 < limit < _UNBOUNDED_CONTEXT:
        return int(limit)
    raise ValueError("the model declares no context length (config.max_position_embeddings)")


def _end_tokens(model: Any, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Tokens that end a text: the tokenizer's end of sequence and the generation config's."""
    ends: set[int] = set()
    for configured in (tokenizer.eos_token_id, model.generation_config.eos_token_id):
        if isinstance(configured, int):
            ends.add(configured)
        elif isinstance(configured, list):
            ends.update(configured)
    return frozenset(ends)
