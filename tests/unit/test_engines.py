"""Engine argument checks: unknown keys named with close matches, reserved keys with their field."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from soberana.operator.core import engines
from soberana.operator.core.api import ModelDeploymentSpec
from soberana.operator.core.engines import check_args, engine_args_spec, llamacpp, vllm
from soberana.operator.core.engines.vllm_args import VLLM_ENGINE_ARGS, VLLM_VERSION

ENGINES = Path(engines.__file__).parent


def test_vllm_accepts_its_documented_arguments() -> None:
    args = {
        "max_model_len": 2048,
        "enable_prefix_caching": True,
        "gpu_memory_utilization": 0.9,
        "quantization": "awq",
        "max_num_seqs": 64,
        "max_num_batched_tokens": 4096,
        "dtype": "bfloat16",
        "enforce_eager": True,
        "kv_cache_dtype": "fp8",
    }
    assert check_args("vllm", args) == []


def test_a_misspelled_vllm_argument_is_named_with_the_closest_one() -> None:
    (message,) = check_args("vllm", {"max_model_lenn": 2048})
    assert message.startswith("spec.engine.args.max_model_lenn: unknown argument")
    assert f"vLLM {VLLM_VERSION}" in message
    assert "did you mean max_model_len" in message


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("tensor_parallel_size", "spec.resources.gpus"),
        ("model", "spec.model.uri"),
        ("served_model_name", "metadata.namespace/metadata.name"),
    ],
)
def test_reserved_vllm_arguments_name_the_field_soberana_sets_them_from(
    key: str, field: str
) -> None:
    (message,) = check_args("vllm", {key: 1})
    assert message == (
        f"spec.engine.args.{key}: soberana sets {key!r} itself from {field}; remove it"
    )


def test_reserved_arguments_are_real_vllm_arguments_and_never_accepted() -> None:
    assert set(vllm.RESERVED_ARGS) <= VLLM_ENGINE_ARGS
    assert not set(vllm.RESERVED_ARGS) & vllm.ENGINE_ARGS
    assert not set(llamacpp.RESERVED_ARGS) & llamacpp.ENGINE_ARGS


def test_the_vllm_list_is_the_whole_generated_one() -> None:
    assert len(VLLM_ENGINE_ARGS) > 200
    assert not any(name.startswith("_") for name in VLLM_ENGINE_ARGS)
    assert VLLM_ENGINE_ARGS - set(vllm.RESERVED_ARGS) == vllm.ENGINE_ARGS
    assert engine_args_spec("vllm").version == f"vLLM {VLLM_VERSION}"


@pytest.mark.parametrize("engine", ["transformers", "torch"])
def test_engines_without_args_refuse_every_key(engine: str) -> None:
    assert check_args(engine, {}) == []
    (message,) = check_args(engine, {"max_model_len": 1})
    assert message == (
        f"spec.engine.args.max_model_len: unknown argument 'max_model_len': "
        f"engine {engine} accepts no args"
    )


def test_llamacpp_names_its_unknown_and_reserved_keys() -> None:
    assert check_args("llamacpp", {"n_ctx": 4096}) == []
    unknown, reserved = check_args("llamacpp", {"n_ctxx": 1, "n_threads": 2})
    assert "spec.engine.args.n_ctxx" in unknown
    assert "n_ctx" in unknown.replace("n_ctxx", "")
    assert reserved.startswith("spec.engine.args.n_threads: soberana sets")


def test_a_key_far_from_every_argument_lists_the_valid_ones_when_few() -> None:
    small = engines.EngineArgs(frozenset({"alpha", "beta"}), {}, "demo 1")
    engines._ENGINES["demo"] = small
    try:
        (message,) = check_args("demo", {"zzz": 1})
    finally:
        del engines._ENGINES["demo"]
    assert message.endswith("valid: alpha, beta")


def test_an_unknown_engine_is_named() -> None:
    (message,) = check_args("tensorrt", {})
    assert message.startswith("spec.engine.name: unknown engine 'tensorrt'")


def test_the_api_refuses_bad_engine_args_naming_the_key() -> None:
    body = {
        "model": {"uri": "file:///models/m"},
        "engine": {"name": "vllm", "args": {"max_model_lenn": 2048}},
        "traffic": [{"region": "r1"}],
    }
    with pytest.raises(ValidationError, match=r"spec\.engine\.args\.max_model_lenn"):
        ModelDeploymentSpec.model_validate(body)


def test_the_engines_package_does_not_import_the_api() -> None:
    for module in ENGINES.glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = [
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        ] + [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        ]
        assert not [name for name in imported if ".api" in name], module
