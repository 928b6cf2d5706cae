"""soberana's model runtime: one Ray Serve application per ModelDeployment on a site.

A Serve config deploys it with ``import_path: soberana.serving.runtime.builder:app_builder`` and
``args`` as :mod:`~soberana.serving.runtime.args` describes them. The model's format decides the
API: ``torchscript`` serves ``POST /predict`` with dynamic batching
(:mod:`~soberana.serving.runtime.tensor_model`), ``transformers`` an OpenAI-compatible text API
(:mod:`~soberana.serving.runtime.language_model`). Models are read from local paths only
(:mod:`~soberana.serving.runtime.storage`); nothing is fetched from a model hub.
"""
