"""Tiny models made on the spot, for the demo, tests and benchmarks: nothing is downloaded.

- :func:`make_scripted_model`: an MLP, scripted with ``torch.jit.script`` (format
  ``torchscript``), that takes rows of :data:`SCRIPTED_FEATURES` numbers; small by default,
  wide enough to cost real compute per call when benchmarks ask.
- :func:`make_language_model`: a randomly initialised GPT-2 of a few thousand parameters with a
  byte-level BPE tokenizer trained on a few sentences and a ChatML chat template, saved with
  ``save_pretrained`` (format ``transformers``).

Both are seeded: the same call writes the same weights, so greedy generation is repeatable.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

SCRIPTED_FEATURES = 4
SCRIPTED_OUTPUTS = 2
LANGUAGE_CONTEXT = 128  # tokens

END_OF_TEXT = "<|endoftext|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_SPECIAL_TOKENS = [END_OF_TEXT, "<|im_start|>", "<|im_end|>"]
_SENTENCES = [
    "soberana places models on GPU sites where the law allows the data to be processed.",
    "Ray Serve runs each model as an application with replicas on a site.",
    "A request from Sao Paulo is served in Brazil, one from Santiago in Chile.",
    "The quick brown fox jumps over the lazy dog, and the dog sleeps on.",
    "Latency, cost and jurisdiction decide where every replica runs.",
]


def make_scripted_model(directory: Path, hidden: int = 16, seed: int = 0) -> Path:
    """A scripted MLP from SCRIPTED_FEATURES to SCRIPTED_OUTPUTS numbers through two hidden
    layers of ``hidden`` units, saved as model.pt."""
    torch.manual_seed(seed)
    module = torch.nn.Sequential(
        torch.nn.Linear(SCRIPTED_FEATURES, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, SCRIPTED_OUTPUTS),
    ).eval()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.pt"
    torch.jit.script(module).save(str(path))  # type: ignore[no-untyped-call]
    return path


def make_language_model(directory: Path, seed: int = 0) -> Path:
    """A tiny GPT-2 with its tokenizer and chat template, saved in ``directory``."""
    tokenizer = _train_tokenizer()
    end = tokenizer.eos_token_id
    assert isinstance(end, int)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=LANGUAGE_CONTEXT,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=end,
        eos_token_id=end,
    )
    model = GPT2LMHeadModel(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _train_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_SENTENCES, trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        chat_template=CHAT_TEMPLATE,
        model_max_length=LANGUAGE_CONTEXT,
    )
