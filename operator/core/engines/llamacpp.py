"""The llama.cpp engine arguments soberana accepts in `spec.engine.args`.

The engine is llama.cpp's own server as the `xllamacpp` bindings ship it (its `CommonParams`).
Each accepted key maps to one `CommonParams` field of the same name and is given as a plain
YAML scalar of the type in `ARG_TYPES`. The enumerations take their llama.cpp names in lower
case: `cache_type_k` / `cache_type_v` a ggml type such as `f16` or `q8_0`, `flash_attn_type`
one of `auto`, `on`, `off`. The threads follow `spec.resources.cpus`, the model file
`spec.model.uri`.
"""

from __future__ import annotations

from collections.abc import Mapping

XLLAMACPP_VERSION = "xllamacpp 2026.10.11549"

ARG_TYPES: Mapping[str, type] = {
    # context and batching
    "n_ctx": int,
    "n_parallel": int,
    "n_batch": int,
    "n_ubatch": int,
    "cont_batching": bool,
    "n_keep": int,
    "n_predict": int,
    "ctx_shift": bool,
    "kv_unified": bool,
    "swa_full": bool,
    # prompt cache
    "cache_prompt": bool,
    "n_cache_reuse": int,
    "cache_ram_mib": int,
    "slot_prompt_similarity": float,
    # KV cache and attention
    "cache_type_k": str,
    "cache_type_v": str,
    "flash_attn_type": str,
    "no_kv_offload": bool,
    # RoPE scaling
    "rope_freq_base": float,
    "rope_freq_scale": float,
    "yarn_orig_ctx": int,
    "yarn_ext_factor": float,
    "yarn_attn_factor": float,
    "yarn_beta_fast": float,
    "yarn_beta_slow": float,
    # devices (a build with a GPU backend)
    "n_gpu_layers": int,
    "main_gpu": int,
    # chat template and loading
    "chat_template": str,
    "use_jinja": bool,
    "warmup": bool,
    "check_tensors": bool,
}

ENGINE_ARGS: frozenset[str] = frozenset(ARG_TYPES)

RESERVED_ARGS: Mapping[str, str] = {
    "model": "spec.model.uri",
    "model_path": "spec.model.uri",
    "model_alias": "metadata.namespace/metadata.name",
    "n_threads": "spec.resources.cpus",
    "n_threads_batch": "spec.resources.cpus",
    "threads": "spec.resources.cpus",
    "cpuparams": "spec.resources.cpus",
    "cpuparams_batch": "spec.resources.cpus",
}
