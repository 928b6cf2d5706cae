"""Render each site's Ray Serve declarative config from a placement plan; pure and deterministic.

A site's config is the body of Ray's ``PUT /api/serve/applications/`` (the ``ServeDeploySchema``
shape). It holds one application per ModelDeployment placed on the site, and nothing else: the
operator owns the whole config of a site, so an empty ``{"applications": []}`` means that nothing
of soberana's runs there.

The engine (``spec.engine``, or the format's default) decides the application:

* ``vllm``: Ray Serve LLM's ``ray.serve.llm:build_openai_app`` with one ``LLMConfig``: the model
  id ``<namespace>/<name>``, the model's local path, ``engine.args`` as vLLM engine arguments
  plus ``tensor_parallel_size = resources.gpus``, a placement group of that many GPU bundles (or
  one bundle of ``resources.cpus`` CPUs for a CPU-only replica, whose KV cache gets
  :data:`CPU_KV_CACHE_SHARE` of ``resources.memoryGiB`` unless the args size it), the
  accelerator type and the replica count or autoscaling bounds.
* every other engine: soberana's model runtime (:data:`RUNTIME_IMPORT_PATH`) with the model, the
  engine and its args as builder ``args``. Replica counts and resources go into the
  application's ``deployments`` overrides rather than into ``args``, so that Ray Serve scales a
  running application without restarting its replicas when only those change.

A GPU replica asks Ray for the placed GPU model (``accelerator_type``, see
:mod:`~soberana.operator.core.accelerators`), so that a replica placed on a site's A100 pool
cannot start on its L4s. Where Ray has no name for the GPU model, or one site runs a
deployment on several GPU models, the replicas are not pinned and :func:`render_warnings` says
so.

Serve application names (``<namespace>-<name>``) can collide (``a/b-c`` and ``a-b/c``). Of
deployments that share a name, the first by ``<namespace>/<name>`` keeps it and the others are
left out of every site's config (:func:`name_conflicts` says why), so that one unlucky name never
stops the rest of the world from deploying.

The same input always gives the same bytes: applications are sorted by name, every mapping is
built in a fixed order, and :func:`config_hash` hashes canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from soberana.operator.core.accelerators import ray_accelerator_type
from soberana.operator.core.api import CPU_POOL, EngineName, ModelDeploymentSpec, ModelFormat
from soberana.operator.core.placement.plan import Plan
from soberana.operator.core.placement.world import Deployment, World

RUNTIME_IMPORT_PATH = "soberana.serving.runtime.builder:app_builder"
"""The Ray Serve application builder of soberana's model runtime."""

VLLM_IMPORT_PATH = "ray.serve.llm:build_openai_app"
"""Ray Serve LLM's OpenAI-compatible application builder, for engine vllm."""

VLLM_SERVER_PREFIX = "LLMServer"
"""Name prefix of the deployment that runs the engine in a vLLM application (the other one is
its OpenAI ingress)."""

OWNER_ENV = "SOBERANA_DEPLOYMENT"
"""Environment variable (``<namespace>/<name>``) that marks a vLLM application as soberana's: its
builder is Ray's own, so the import path alone does not tell."""

MODEL_ROOT = "/models"
"""Where a site mounts ``pvc://`` and ``s3://`` models (the runtime's default model root)."""

CPU_KV_CACHE_SHARE = 0.5
"""Share of a CPU-only vLLM replica's memoryGiB given to its KV cache, unless args size it."""

_CPU_MEMORY_ARGS = frozenset({"kv_cache_memory_bytes", "gpu_memory_utilization"})
_GIB = 1024**3

RUNTIME_DEPLOYMENT_NAME = "Model"
"""Name of the one Serve deployment in every runtime application, which the overrides address."""


class ApplicationNameConflictError(ValueError):
    """Two deployments on one site map onto the same Serve application name."""


def app_name(namespace: str, name: str) -> str:
    """The Serve application of a ModelDeployment on every site: ``<namespace>-<name>``."""
    return f"{namespace}-{name}"


def route_prefix(namespace: str, name: str) -> str:
    """Where a ModelDeployment is served under a site's Serve URL: ``/<namespace>/<name>``."""
    return f"/{namespace}/{name}"


@dataclass(frozen=True)
class SiteApplication:
    """A deployment's share of one site: the application that site runs for it."""

    deployment: Deployment
    replicas: int
    gpu_models: tuple[str, ...] = ()  # the site's GPU models its replicas use (or CPU_POOL)


def render_serve_config(site_name: str, applications: Iterable[SiteApplication]) -> dict[str, Any]:
    """The Serve config of ``site_name``, running exactly ``applications``."""
    rendered: dict[str, dict[str, Any]] = {}
    owners: dict[str, str] = {}
    for application in applications:
        deployment = application.deployment
        name = app_name(deployment.namespace, deployment.name)
        if name in owners:
            raise ApplicationNameConflictError(
                f"ModelDeployments {owners[name]} and {deployment.key} would both run as Serve "
                f"application {name} on site {site_name}: rename one of them"
            )
        owners[name] = deployment.key
        rendered[name] = _application(site_name, application)
    return {"applications": [rendered[name] for name in sorted(rendered)]}


def name_conflicts(deployments: Iterable[Deployment]) -> dict[str, str]:
    """Deployments whose Serve application name an earlier one (by key) already has: key -> why."""
    owners: dict[str, str] = {}
    conflicts: dict[str, str] = {}
    for deployment in sorted(deployments, key=lambda d: d.key):
        name = app_name(deployment.namespace, deployment.name)
        if name in owners:
            conflicts[deployment.key] = (
                f"not deployed: ModelDeployment {owners[name]} already runs as Serve application "
                f"{name}; rename one of them"
            )
        else:
            owners[name] = deployment.key
    return conflicts


def render_site_configs(plan: Plan, world: World) -> dict[str, dict[str, Any]]:
    """The Serve config of every site of ``world`` under ``plan``, by site name, sorted by name.

    A site with nothing placed on it gets an empty config. Replicas of one deployment on one
    site with several GPU models run as one application. Deployments in
    :func:`name_conflicts` are left out.
    """
    return {
        site: render_serve_config(site, applications)
        for site, applications in _site_applications(plan, world).items()
    }


def render_warnings(plan: Plan, world: World) -> list[str]:
    """What rendering could not express: GPU replicas Ray cannot pin to their GPU model."""
    return [
        f"{key} on site {site}: {why}"
        for site, lines in site_render_warnings(plan, world).items()
        for key, why in lines
    ]


def site_render_warnings(plan: Plan, world: World) -> dict[str, list[tuple[str, str]]]:
    """:func:`render_warnings` by site: (deployment key, why) for each site that has some."""
    warnings: dict[str, list[tuple[str, str]]] = {}
    for site, applications in _site_applications(plan, world).items():
        for application in applications:
            if application.deployment.spec.resources.gpus == 0:
                continue
            key = application.deployment.key
            models = sorted(set(application.gpu_models) - {CPU_POOL})
            lines = []
            if len(models) > 1:
                lines.append(
                    f"replicas on several GPU models ({', '.join(models)}) run as one "
                    "application, not pinned to a GPU model"
                )
            lines += [
                f"GPU model {model!r} has no Ray accelerator type; its replicas are not pinned "
                "to that GPU model (name the pool as Ray does, e.g. L4, A10G, A100, H100)"
                for model in models
                if ray_accelerator_type(model) is None
            ]
            warnings.setdefault(site, []).extend((key, line) for line in lines)
    return {site: lines for site, lines in warnings.items() if lines}


def _site_applications(plan: Plan, world: World) -> dict[str, list[SiteApplication]]:
    """What each site runs under ``plan``, by site name, both sorted by name."""
    specs = {deployment.key: deployment for deployment in world.deployments}
    skipped = name_conflicts(world.deployments)
    replicas: dict[str, dict[str, dict[str, int]]] = {site.name: {} for site in world.sites}
    for key, deployment_plan in plan.deployments.items():
        if key in skipped:
            continue
        for placement in deployment_plan.placements:
            models = replicas[placement.site].setdefault(key, {})
            models[placement.gpu_model] = models.get(placement.gpu_model, 0) + placement.replicas
    return {
        site: [
            SiteApplication(specs[key], sum(models.values()), tuple(sorted(models)))
            for key, models in sorted(replicas[site].items())
        ]
        for site in sorted(replicas)
    }


def rendered_by_soberana(app_config: Mapping[str, Any]) -> bool:
    """Whether a Serve application config is one soberana renders (else someone else's)."""
    import_path = str(app_config.get("import_path", ""))
    if import_path.startswith(RUNTIME_IMPORT_PATH.split(":", 1)[0]):
        return True
    runtime_env = app_config.get("runtime_env") or {}
    env_vars = runtime_env.get("env_vars") if isinstance(runtime_env, Mapping) else None
    return (
        import_path == VLLM_IMPORT_PATH
        and isinstance(env_vars, Mapping)
        and (OWNER_ENV in env_vars)
    )


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256, in hex, of ``config`` as canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(
        config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _application(site_name: str, application: SiteApplication) -> dict[str, Any]:
    deployment = application.deployment
    rendered: dict[str, Any] = {
        "name": app_name(deployment.namespace, deployment.name),
        "route_prefix": route_prefix(deployment.namespace, deployment.name),
    }
    accelerator = _accelerator_type(application)
    if deployment.spec.engine_name is EngineName.VLLM:
        rendered["import_path"] = VLLM_IMPORT_PATH
        rendered["runtime_env"] = {"env_vars": {OWNER_ENV: deployment.key}}
        rendered["args"] = vllm_args(application)
        return rendered
    rendered["import_path"] = RUNTIME_IMPORT_PATH
    rendered["args"] = _runtime_args(site_name, deployment)
    options = _deployment_options(deployment.spec, application.replicas)
    actor = options["ray_actor_options"] = _actor_options(deployment.spec)
    if accelerator is not None:
        actor["accelerator_type"] = accelerator
    rendered["deployments"] = [options]
    return rendered


def _accelerator_type(application: SiteApplication) -> str | None:
    """Ray's name for the one GPU model the application's GPU replicas use, if there is one."""
    models = set(application.gpu_models) - {CPU_POOL}
    if application.deployment.spec.resources.gpus == 0 or len(models) != 1:
        return None
    return ray_accelerator_type(models.pop())


def model_path(uri: str) -> str:
    """The local path of a model URI on a site's nodes, as the runtime resolves it.

    ``file:///<path>`` is ``/<path>``; ``pvc://<claim>/<path>`` and ``s3://<bucket>/<path>`` are
    mounted under :data:`MODEL_ROOT` (``/models/pvc/<claim>/<path>``).
    """
    scheme, _, rest = uri.partition("://")
    host, slash, path = re.split(r"[?#]", rest, maxsplit=1)[0].partition("/")
    path = _unquote(slash + path)
    if scheme == "file":
        return path
    return f"{MODEL_ROOT}/{scheme}/{host}/{path.lstrip('/')}"


def _unquote(text: str) -> str:
    """Percent-decoding, as URLs carry spaces and non-ASCII names (UTF-8)."""
    decoded = re.sub(rb"%([0-9A-Fa-f]{2})", lambda match: bytes([int(match[1], 16)]), text.encode())
    return decoded.decode("utf-8", "replace")


def vllm_args(application: SiteApplication) -> dict[str, Any]:
    """The ``LLMServingArgs`` of a vLLM application: one ``LLMConfig``."""
    deployment = application.deployment
    spec = deployment.spec
    gpus = spec.resources.gpus
    engine_kwargs: dict[str, Any] = dict(sorted(spec.engine_args.items()))
    engine_kwargs["tensor_parallel_size"] = max(gpus, 1)
    deployment_config = _scaling(spec, application.replicas)
    deployment_config["max_ongoing_requests"] = spec.serving.max_ongoing_requests
    config: dict[str, Any] = {
        "model_loading_config": {
            "model_id": deployment.key,
            "model_source": model_path(spec.model.uri),
        },
        "engine_kwargs": engine_kwargs,
    }
    # the replica actor shares the first bundle: Ray Serve LLM adds its options to it
    if gpus == 0:
        bundle: dict[str, float | int] = {"CPU": float(spec.resources.cpus)}
        if spec.resources.memory_gib is not None:
            bundle["memory"] = int(spec.resources.memory_gib * _GIB)
            if _CPU_MEMORY_ARGS.isdisjoint(engine_kwargs):
                # on CPUs vLLM otherwise reserves gpu_memory_utilization (0.92) of the node
                engine_kwargs["kv_cache_memory_bytes"] = int(
                    spec.resources.memory_gib * _GIB * CPU_KV_CACHE_SHARE
                )
        config["placement_group_config"] = {"bundles": [bundle], "strategy": "STRICT_PACK"}
        deployment_config["ray_actor_options"] = {"num_cpus": 0.0}
    else:
        accelerator = _accelerator_type(application)
        if accelerator is not None:
            config["accelerator_type"] = accelerator
        config["placement_group_config"] = {
            "bundles": [{"GPU": 1.0} for _ in range(gpus)],
            "strategy": "PACK",
        }
        actor: dict[str, Any] = {"num_cpus": float(spec.resources.cpus)}
        if spec.resources.memory_gib is not None:
            actor["memory"] = int(spec.resources.memory_gib * _GIB)
        deployment_config["ray_actor_options"] = actor
    config["deployment_config"] = deployment_config
    # the OpenAI ingress only forwards requests; it takes no CPU from the replicas' pool
    return {
        "llm_configs": [config],
        "ingress_deployment_config": {"ray_actor_options": {"num_cpus": 0.0}},
    }


def _runtime_args(site_name: str, deployment: Deployment) -> dict[str, Any]:
    """The runtime's builder arguments (see ``soberana.serving.runtime.args``)."""
    spec = deployment.spec
    args: dict[str, Any] = {
        "model_uri": spec.model.uri,
        "format": spec.model.format.value,
        "served_model_name": deployment.key,
        "site": site_name,
        "engine": spec.engine_name.value,
        "engine_args": spec.engine_args,
        "cpus": float(spec.resources.cpus),
    }
    if spec.model.format is ModelFormat.TORCHSCRIPT:
        args["max_batch_size"] = spec.serving.max_batch_size
        args["batch_wait_timeout_s"] = float(spec.serving.batch_wait_timeout_s)
    return args


def _scaling(spec: ModelDeploymentSpec, replicas: int) -> dict[str, Any]:
    """The site's replica count, or its share of the autoscaling bounds."""
    if spec.autoscaling is None:
        return {"num_replicas": replicas}
    # Placement reserved room for ``replicas`` here, its share of maxReplicas; the site
    # keeps at least the same share of minReplicas, and always one replica warm.
    bounds = spec.autoscaling
    share = -(-bounds.min_replicas * replicas // bounds.max_replicas)  # rounded up
    return {
        "autoscaling_config": {
            "min_replicas": min(replicas, max(1, share)),
            "max_replicas": replicas,
            "target_ongoing_requests": float(bounds.target_ongoing_requests),
        }
    }


def _deployment_options(spec: ModelDeploymentSpec, replicas: int) -> dict[str, Any]:
    """Overrides of the runtime's deployment; ``replicas`` is the site's share of the total."""
    options: dict[str, Any] = {"name": RUNTIME_DEPLOYMENT_NAME, **_scaling(spec, replicas)}
    options["max_ongoing_requests"] = spec.serving.max_ongoing_requests
    return options


def _actor_options(spec: ModelDeploymentSpec) -> dict[str, Any]:
    options: dict[str, Any] = {
        "num_cpus": float(spec.resources.cpus),
        "num_gpus": float(spec.resources.gpus),
    }
    if spec.resources.memory_gib is not None:
        options["memory"] = int(spec.resources.memory_gib * _GIB)
    return options
