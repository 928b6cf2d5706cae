"""The model runtime's parts that need no Ray: model locations, builder args, text generation."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from soberana.operator.devenv.tinymodels import LANGUAGE_CONTEXT, make_language_model
from soberana.serving.runtime.args import (
    LlamaCppArgs,
    TorchScriptArgs,
    TransformersArgs,
    parse_runtime_args,
)
from soberana.serving.runtime.generation import Sampling, TextDelta, TextGenerator
from soberana.serving.runtime.llamacpp_model import DEFAULT_ENGINE_ARGS, engine_params
from soberana.serving.runtime.storage import (
    MODEL_ROOT_ENV,
    ModelNotFoundError,
    local_model_path,
)


@pytest.fixture
def mounted(tmp_path: Path) -> Path:
    for folder in ("pvc/fraud-models", "s3/models-latam/qwen"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "pvc/fraud-models/scorer.pt").touch()
    return tmp_path


def test_a_file_uri_is_its_path(tmp_path: Path) -> None:
    assert local_model_path(tmp_path.as_uri()) == tmp_path


def test_pvc_and_s3_uris_are_under_the_model_root(mounted: Path) -> None:
    assert local_model_path("pvc://fraud-models/scorer.pt", mounted) == (
        mounted / "pvc/fraud-models/scorer.pt"
    )
    assert local_model_path("s3://models-latam/qwen", mounted) == mounted / "s3/models-latam/qwen"


def test_the_model_root_comes_from_the_environment(
    mounted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MODEL_ROOT_ENV, str(mounted))
    assert local_model_path("s3://models-latam/qwen") == mounted / "s3/models-latam/qwen"


def test_a_missing_model_says_where_it_was_looked_for(mounted: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=f"models-latam/llama is not at {mounted}/s3/"):
        local_model_path("s3://models-latam/llama", mounted)
    with pytest.raises(ModelNotFoundError, match="is not at"):
        local_model_path((mounted / "nothing").as_uri())


@pytest.mark.parametrize(
    "uri", ["hf://Qwen/Qwen2.5", "file://relative/path", "s3://bucket-only", "/no/scheme"]
)
def test_a_uri_that_names_no_local_files_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="unsupported model URI"):
        local_model_path(uri)


def test_args_choose_the_runtime_by_format() -> None:
    common = {"model_uri": "file:///m", "served_model_name": "ml/m"}
    assert isinstance(parse_runtime_args({**common, "format": "torchscript"}), TorchScriptArgs)
    assert isinstance(parse_runtime_args({**common, "format": "transformers"}), TransformersArgs)
    assert isinstance(parse_runtime_args({**common, "format": "gguf"}), LlamaCppArgs)


def test_args_choose_the_runtime_by_engine_and_carry_its_args_and_cpus() -> None:
    args = parse_runtime_args(
        {
            "model_uri": "file:///m.gguf",
            "served_model_name": "ml/m",
            "format": "gguf",
            "engine": "llamacpp",
            "engine_args": {"n_ctx": 1024, "n_parallel": 2, "flash_attn_type": "off"},
            "cpus": 3.0,
        }
    )
    assert isinstance(args, LlamaCppArgs)
    assert args.engine_args == {"n_ctx": 1024, "n_parallel": 2, "flash_attn_type": "off"}
    assert args.threads == 3


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"format": "transformers", "max_batch_size": 8}, "max_batch_size"),
        ({"format": "onnx"}, "format"),
        ({"format": "torchscript", "max_batch_size": 0}, "max_batch_size"),
        ({"format": "gguf", "engine": "vllm"}, "engine must be one of llamacpp"),
        ({"format": "transformers", "engine": "llamacpp"}, "format"),
        (
            {"format": "gguf", "engine_args": {"n_paralel": 4}},
            "spec.engine.args.n_paralel: unknown argument .* did you mean n_parallel",
        ),
        (
            {"format": "gguf", "engine_args": {"n_threads": 4}},
            "spec.engine.args.n_threads: .* spec.resources.cpus",
        ),
        ({"format": "gguf", "engine_args": {"n_ctx": "big"}}, "n_ctx: must be int, not str"),
        ({"format": "gguf", "engine_args": {"kv_unified": 1}}, "kv_unified: must be bool"),
        ({"format": "transformers", "engine_args": {"n_ctx": 4}}, "accepts no args"),
        ({"format": "gguf", "cpus": 0}, "cpus"),
    ],
)
def test_wrong_args_are_refused_naming_the_key(args: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        parse_runtime_args({"model_uri": "file:///m", "served_model_name": "ml/m", **args})


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> TextGenerator:
    path = make_language_model(tmp_path_factory.mktemp("language-model"))
    return TextGenerator.load(path, torch.device("cpu"))


def text_of(deltas: Iterable[TextDelta]) -> str:
    return "".join(delta.text for delta in deltas)


def test_generation_reports_its_context_and_stops_at_max_tokens(generator: TextGenerator) -> None:
    assert generator.context_length == LANGUAGE_CONTEXT
    deltas = list(generator.generate(generator.encode("Ray Serve"), Sampling(5, temperature=0)))
    assert deltas[-1].completion_tokens <= 5
    assert deltas[-1].finish_reason in ("stop", "length")
    assert all(delta.finish_reason is None for delta in deltas[:-1])


def test_a_stop_sequence_is_never_released_even_in_part(generator: TextGenerator) -> None:
    prompt = generator.encode("The quick brown fox")
    full = text_of(generator.generate(prompt, Sampling(16, temperature=0)))
    for start in range(1, len(full) - 2):
        stop = full[start : start + 3]
        deltas = list(generator.generate(prompt, Sampling(16, temperature=0, stop=(stop,))))
        assert text_of(deltas) == full[: full.index(stop)]
        assert deltas[-1].finish_reason == "stop"


def test_the_same_seed_samples_the_same_text(generator: TextGenerator) -> None:
    prompt = generator.encode("Latency")
    sampling = Sampling(12, temperature=1.2, top_p=0.8, seed=42)
    assert text_of(generator.generate(prompt, sampling)) == text_of(
        generator.generate(prompt, sampling)
    )


def test_a_conversation_is_rendered_with_the_chat_template(generator: TextGenerator) -> None:
    plain = generator.encode("hello")
    chat = generator.encode_chat([{"role": "user", "content": "hello"}])
    assert len(chat) > len(plain)


def llamacpp_args(**engine_args: object) -> LlamaCppArgs:
    args = parse_runtime_args(
        {
            "model_uri": "file:///m.gguf",
            "served_model_name": "ml/m",
            "format": "gguf",
            "engine_args": engine_args,
            "cpus": 2,
        }
    )
    assert isinstance(args, LlamaCppArgs)
    return args


def test_llamacpp_params_take_the_threads_from_cpus_and_the_engine_args() -> None:
    params = engine_params(
        llamacpp_args(n_ctx=1024, n_parallel=3, cache_type_k="q8_0", flash_attn_type="on"),
        Path("/models/m.gguf"),
    )
    assert params.model.path == "/models/m.gguf"
    assert params.cpuparams.n_threads == params.cpuparams_batch.n_threads == 2
    assert (params.n_ctx, params.n_parallel) == (1024, 3)
    assert params.kv_unified is DEFAULT_ENGINE_ARGS["kv_unified"]
    assert params.cache_type_k.name == "GGML_TYPE_Q8_0"
    assert params.flash_attn_type.name == "LLAMA_FLASH_ATTN_TYPE_ENABLED"
    assert params.model_alias == {"ml/m"}


def test_llamacpp_params_refuse_an_unknown_enumeration_value_naming_the_arg() -> None:
    with pytest.raises(
        ValueError, match=r"spec.engine.args.cache_type_v: 'q9' is not one of .*q8_0"
    ):
        engine_params(llamacpp_args(cache_type_v="q9"), Path("/models/m.gguf"))
