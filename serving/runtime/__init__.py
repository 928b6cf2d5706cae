"""soberana's model runtime: one Ray Serve application per ModelDeployment on a site.

A Serve config deploys it with ``import_path: soberana.serving.runtime.builder:app_builder`` and
``args`` as :mod:`~soberana.serving.runtime.args` describe them. The engine decides the runtime:
``llamacpp`` serves a GGUF file with llama.cpp, concurrent requests batched in its parallel slots
(:mod:`~soberana.serving.runtime.llamacpp_model`); ``transformers`` a Hugging Face directory one
sequence at a time, the fallback for models llama.cpp and vLLM cannot load
(:mod:`~soberana.serving.runtime.language_model`); both serve the same OpenAI-compatible API.
``torch`` serves a TorchScript module behind ``POST /predict`` with dynamic batching
(:mod:`~soberana.serving.runtime.tensor_model`). Models are read from local paths only
(:mod:`~soberana.serving.runtime.storage`); nothing is fetched from a model hub.
"""
