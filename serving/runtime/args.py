"""The runtime's builder arguments: the ``args`` of its application in a Serve config.

They are validated before anything is loaded, and unknown keys are refused, so a config written
for another version of the runtime fails to deploy with a message that names the key. The
``engine`` key picks the runtime (``llamacpp``, ``transformers`` or ``torch``; without it, the
default engine of ``format``); ``engine_args`` are that engine's own settings, checked against
the list soberana accepts (:mod:`soberana.operator.core.engines`) here too, and ``cpus`` is the
replica's share of cores, which the engine's threads follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, field_validator

from soberana.operator.core.engines import check_args
from soberana.operator.core.engines.llamacpp import ARG_TYPES as LLAMACPP_ARG_TYPES

_DEFAULT_ENGINE = {"torchscript": "torch", "transformers": "transformers", "gguf": "llamacpp"}


class _ModelArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_uri: str = Field(
        min_length=1,
        description="file:///<path>, pvc://<claim>/<path> or s3://<bucket>/<path>; see storage.",
    )
    served_model_name: str = Field(
        min_length=1,
        description="The model's name in responses and in GET /v1/models, such as ml/qwen-chat.",
    )
    site: str | None = Field(None, description="The InferenceSite the replicas run on.")
    cpus: float = Field(1.0, gt=0, description="Cores of one replica; the engine's threads.")
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="The engine's own settings (spec.engine.args)."
    )

    @property
    def threads(self) -> int:
        """Threads the engine computes with: the replica's whole cores, at least one."""
        return max(1, int(self.cpus))


def _check_engine_args(engine: str, args: Mapping[str, Any]) -> dict[str, Any]:
    problems = check_args(engine, args)
    if problems:
        raise ValueError("; ".join(problems))
    return dict(args)


class TorchScriptArgs(_ModelArgs):
    """A scripted torch module behind ``POST /predict``, with dynamic batching."""

    format: Literal["torchscript"]
    engine: Literal["torch"] = "torch"
    max_batch_size: int = Field(8, ge=1, le=1024, description="Most requests in one batch.")
    batch_wait_timeout_s: float = Field(
        0.01, ge=0, le=10, description="Longest a request waits for its batch to fill."
    )

    @field_validator("engine_args")
    @classmethod
    def _known(cls, args: dict[str, Any]) -> dict[str, Any]:
        return _check_engine_args("torch", args)


class TransformersArgs(_ModelArgs):
    """A causal language model behind an OpenAI-compatible API, generating one sequence at a
    time: the fallback for models llama.cpp and vLLM cannot load."""

    format: Literal["transformers"]
    engine: Literal["transformers"] = "transformers"

    @field_validator("engine_args")
    @classmethod
    def _known(cls, args: dict[str, Any]) -> dict[str, Any]:
        return _check_engine_args("transformers", args)


class LlamaCppArgs(_ModelArgs):
    """A GGUF model served by llama.cpp behind an OpenAI-compatible API, concurrent requests
    batched in its parallel slots."""

    format: Literal["gguf"]
    engine: Literal["llamacpp"] = "llamacpp"

    @field_validator("engine_args")
    @classmethod
    def _known(cls, args: dict[str, Any]) -> dict[str, Any]:
        checked = _check_engine_args("llamacpp", args)
        problems = []
        for key, value in checked.items():
            kind = LLAMACPP_ARG_TYPES[key]
            valid = (
                isinstance(value, bool)
                if kind is bool
                else isinstance(value, (int, float)) and not isinstance(value, bool)
                if kind is float
                else isinstance(value, kind) and not isinstance(value, bool)
            )
            if not valid:
                problems.append(
                    f"spec.engine.args.{key}: must be {kind.__name__}, not {type(value).__name__}"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return checked


RuntimeArgs = TorchScriptArgs | TransformersArgs | LlamaCppArgs


def _engine_of(args: Any) -> str | None:
    """The engine ``args`` name, or the default engine of their format."""
    if not isinstance(args, Mapping):
        return None
    engine = args.get("engine")
    if engine is None:
        return _DEFAULT_ENGINE.get(str(args.get("format")))
    return str(engine)


_RUNTIME_ARGS: TypeAdapter[RuntimeArgs] = TypeAdapter(
    Annotated[
        Annotated[TorchScriptArgs, Tag("torch")]
        | Annotated[TransformersArgs, Tag("transformers")]
        | Annotated[LlamaCppArgs, Tag("llamacpp")],
        Discriminator(
            _engine_of,
            custom_error_type="unknown_engine",
            custom_error_message=(
                "engine must be one of llamacpp, transformers, torch (or format one of gguf, "
                "transformers, torchscript)"
            ),
        ),
    ]
)


def parse_runtime_args(args: Mapping[str, Any]) -> RuntimeArgs:
    """Validate a Serve config's ``args``; raise pydantic's ValidationError when they are wrong."""
    return _RUNTIME_ARGS.validate_python(dict(args))
