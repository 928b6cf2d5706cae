"""The application builder a Serve config names as ``import_path``.

``app_builder(args)`` validates ``args`` (:mod:`~soberana.serving.runtime.args`) and binds the
runtime of the model's engine, as one deployment named :data:`DEPLOYMENT_NAME`, which the
``deployments`` overrides of a Serve config address (replicas, resources, autoscaling):
``llamacpp`` (GGUF files, :mod:`~.llamacpp_model`), ``transformers`` (the fallback for models
llama.cpp and vLLM cannot load, :mod:`~.language_model`) or ``torch`` (TorchScript,
:mod:`~.tensor_model`).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from soberana.serving.runtime.args import LlamaCppArgs, TorchScriptArgs, parse_runtime_args

DEPLOYMENT_NAME = "Model"


def app_builder(args: dict[str, Any]) -> Application:
    """The Serve application that serves the model ``args`` describe."""
    runtime_args = parse_runtime_args(args)
    if isinstance(runtime_args, TorchScriptArgs):
        from soberana.serving.runtime.tensor_model import TensorModel

        return serve.deployment(name=DEPLOYMENT_NAME)(TensorModel).bind(runtime_args)
    if isinstance(runtime_args, LlamaCppArgs):
        from soberana.serving.runtime.llamacpp_model import MAX_ONGOING_REQUESTS, LlamaCppModel

        deployment = serve.deployment(
            name=DEPLOYMENT_NAME, max_ongoing_requests=MAX_ONGOING_REQUESTS
        )(LlamaCppModel)
        return deployment.bind(runtime_args)
    from soberana.serving.runtime.language_model import LanguageModel

    return serve.deployment(name=DEPLOYMENT_NAME)(LanguageModel).bind(runtime_args)
