"""Render each site's Ray Serve declarative config from a placement plan; pure and deterministic.

A site's config is the body of Ray's ``PUT /api/serve/applications/`` (the ``ServeDeploySchema``
shape). It holds one application per ModelDeployment placed on the site, and nothing else: the
operator owns the whole config of a site, so an empty ``{"applications": []}`` means that nothing
of soberana's runs there.

Each application runs soberana's model runtime (:data:`RUNTIME_IMPORT_PATH`) with the model and
batching settings as builder ``args``. Replica counts and resources go into the application's
``deployments`` overrides rather than into ``args``, so that Ray Serve scales a running
application without restarting its replicas when only those change.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from soberana.operator.core.api import ModelDeploymentSpec, ModelFormat
from soberana.operator.core.placement.plan import Plan
from soberana.operator.core.placement.world import Deployment, World

RUNTIME_IMPORT_PATH = "soberana.serving.runtime.builder:app_builder"
"""The Ray Serve application builder of soberana's model runtime."""

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
        rendered[name] = _application(site_name, deployment, application.replicas)
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
    specs = {deployment.key: deployment for deployment in world.deployments}
    skipped = name_conflicts(world.deployments)
    replicas: dict[str, dict[str, int]] = {site.name: {} for site in world.sites}
    for key, deployment_plan in plan.deployments.items():
        if key in skipped:
            continue
        for placement in deployment_plan.placements:
            on_site = replicas[placement.site]
            on_site[key] = on_site.get(key, 0) + placement.replicas
    return {
        site: render_serve_config(
            site,
            (SiteApplication(specs[key], count) for key, count in sorted(replicas[site].items())),
        )
        for site in sorted(replicas)
    }


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256, in hex, of ``config`` as canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(
        config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _application(site_name: str, deployment: Deployment, replicas: int) -> dict[str, Any]:
    return {
        "name": app_name(deployment.namespace, deployment.name),
        "route_prefix": route_prefix(deployment.namespace, deployment.name),
        "import_path": RUNTIME_IMPORT_PATH,
        "args": _runtime_args(site_name, deployment),
        "deployments": [_deployment_options(deployment.spec, replicas)],
    }


def _runtime_args(site_name: str, deployment: Deployment) -> dict[str, Any]:
    """The runtime's builder arguments (see ``soberana.serving.runtime.args``)."""
    spec = deployment.spec
    args: dict[str, Any] = {
        "model_uri": spec.model.uri,
        "format": spec.model.format.value,
        "served_model_name": deployment.key,
        "site": site_name,
    }
    if spec.model.format is ModelFormat.TORCHSCRIPT:
        args["max_batch_size"] = spec.serving.max_batch_size
        args["batch_wait_timeout_s"] = float(spec.serving.batch_wait_timeout_s)
    return args


def _deployment_options(spec: ModelDeploymentSpec, replicas: int) -> dict[str, Any]:
    """Overrides of the runtime's deployment; ``replicas`` is the site's share of the total."""
    options: dict[str, Any] = {"name": RUNTIME_DEPLOYMENT_NAME}
    if spec.autoscaling is None:
        options["num_replicas"] = replicas
    else:
        # Placement reserved room for ``replicas`` here, its share of maxReplicas; the site
        # keeps at least the same share of minReplicas, and always one replica warm.
        bounds = spec.autoscaling
        share = -(-bounds.min_replicas * replicas // bounds.max_replicas)  # rounded up
        options["autoscaling_config"] = {
            "min_replicas": min(replicas, max(1, share)),
            "max_replicas": replicas,
            "target_ongoing_requests": float(bounds.target_ongoing_requests),
        }
    options["max_ongoing_requests"] = spec.serving.max_ongoing_requests
    options["ray_actor_options"] = {
        "num_cpus": float(spec.resources.cpus),
        "num_gpus": float(spec.resources.gpus),
    }
    return options
