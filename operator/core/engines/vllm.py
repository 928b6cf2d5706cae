"""The vLLM engine arguments soberana accepts in `spec.engine.args` (generated list follows)."""

from __future__ import annotations

from collections.abc import Mapping

VLLM_VERSION = "0.29.0"

RESERVED_ARGS: Mapping[str, str] = {
    "model": "spec.model.uri",
    "served_model_name": "metadata.namespace/metadata.name",
    "tensor_parallel_size": "spec.resources.gpus",
    "pipeline_parallel_size": "spec.resources.gpus",
    "distributed_executor_backend": "the Ray Serve LLM runtime",
}

ENGINE_ARGS: frozenset[str] = frozenset(
    {
        "max_model_len",
        "enable_prefix_caching",
        "gpu_memory_utilization",
        "quantization",
        "max_num_seqs",
        "max_num_batched_tokens",
        "dtype",
        "enforce_eager",
        "trust_remote_code",
        "seed",
        "kv_cache_dtype",
        "swap_space",
        "enable_chunked_prefill",
    }
)
