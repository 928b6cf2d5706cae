"""The runtime's builder arguments: the ``args`` of its application in a Serve config.

They are validated before anything is loaded, and unknown keys are refused, so a config written
for another version of the runtime fails to deploy with a message that names the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


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


class TorchScriptArgs(_ModelArgs):
    """A scripted torch module behind ``POST /predict``, with dynamic batching."""

    format: Literal["torchscript"]
    max_batch_size: int = Field(8, ge=1, le=1024, description="Most requests in one batch.")
    batch_wait_timeout_s: float = Field(
        0.01, ge=0, le=10, description="Longest a request waits for its batch to fill."
    )


class TransformersArgs(_ModelArgs):
    """A causal language model behind an OpenAI-compatible API."""

    format: Literal["transformers"]


RuntimeArgs = TorchScriptArgs | TransformersArgs

_RUNTIME_ARGS: TypeAdapter[RuntimeArgs] = TypeAdapter(
    Annotated[RuntimeArgs, Field(discriminator="format")]
)


def parse_runtime_args(args: Mapping[str, Any]) -> RuntimeArgs:
    """Validate a Serve config's ``args``; raise pydantic's ValidationError when they are wrong."""
    return _RUNTIME_ARGS.validate_python(dict(args))
