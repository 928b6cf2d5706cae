"""The routing table: which sites serve each model, where those sites are and how to reach them.

A :class:`RoutingTable` is an immutable snapshot, replaced whole whenever its source changes. It
is built from the API objects (:func:`table_from_resources`: ``InferenceSite`` specs and
``ModelDeployment`` statuses) or from a static routes document (:func:`table_from_routes`)::

    sites:
    - {name: br1, url: "http://10.0.0.5:8000", jurisdiction: BR, latencyMs: {br-southeast: 5}}
    models:
    - {name: ml/qwen-chat, residency: {allowedJurisdictions: [BR, CL]}, sites: [br1, scl1]}

The table records what its source says, including what does not add up (a model that lists an
unknown site, a placement that is not ready): the policy turns each such gap into an exclusion
with a reason, so that a refused request can say why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from soberana.operator.core.api import (
    InferenceSite,
    ModelDeployment,
    NamespacedName,
    PlacementState,
    PlacementStatus,
    Residency,
)
from soberana.operator.core.api.base import HttpUrl, Jurisdiction, require_unique
from soberana.operator.core.render import route_prefix

MODEL_KEY = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
"""What a model key looks like: ``<namespace>/<name>`` (see :class:`NamespacedName`)."""
_UNRESTRICTED = Residency()


@dataclass(frozen=True)
class Site:
    """A place requests can go: its Serve HTTP URL, legal jurisdiction and RTT by user region.

    ``url`` is None for a site whose Serve URL the router cannot know (a KubeRay site publishes
    none in its spec); such a site is never a candidate.
    """

    name: str
    url: str | None
    jurisdiction: str
    latency_ms: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Replicas:
    """A model's share of one site, and why it cannot take requests (None when it can)."""

    site: str
    not_ready: str | None = None


@dataclass(frozen=True)
class ModelRoute:
    """One model, identified by ``namespace/name``: where it may run and where it runs."""

    key: str
    residency: Residency
    replicas: tuple[Replicas, ...]

    @cached_property
    def path_prefix(self) -> str:
        """Where the model is served under each site's Serve URL: ``/<namespace>/<name>``."""
        ref = NamespacedName.parse(self.key)
        return route_prefix(ref.namespace, ref.name)


@dataclass(frozen=True)
class RoutingTable:
    sites: Mapping[str, Site] = field(default_factory=dict)
    models: Mapping[str, ModelRoute] = field(default_factory=dict)


def table_from_resources(
    sites: Iterable[InferenceSite], deployments: Iterable[ModelDeployment]
) -> RoutingTable:
    """The table the API server describes: sites from specs, replicas from deployment statuses."""
    routed_sites = {site.name: _site_from_resource(site) for site in sites}
    models: dict[str, ModelRoute] = {}
    for deployment in deployments:
        key = str(NamespacedName.of(deployment.metadata))
        placements = deployment.status.placements if deployment.status else []
        models[key] = ModelRoute(
            key=key,
            residency=deployment.spec.residency or _UNRESTRICTED,
            replicas=tuple(
                Replicas(placement.site, _not_ready(placement)) for placement in placements
            ),
        )
    return RoutingTable(sites=routed_sites, models=models)


def _site_from_resource(site: InferenceSite) -> Site:
    url = site.spec.backend.serve_url
    return Site(
        name=site.name,
        url=url.rstrip("/") if url is not None else None,
        jurisdiction=site.spec.jurisdiction,
        latency_ms=dict(site.spec.latency_ms),
    )


def _not_ready(placement: PlacementStatus) -> str | None:
    """Replicas serve while any of them is ready, or while Serve reports the app RUNNING."""
    if placement.ready_replicas > 0 or placement.state is PlacementState.RUNNING:
        return None
    return f"placement is {placement.state.value} with no ready replica"


class _RoutesModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class RoutesSite(_RoutesModel):
    """A site in a static routes file."""

    # printable ASCII without spaces: the name is sent in the X-Soberana-Site response header
    name: str = Field(min_length=1, max_length=253, pattern=r"^[!-~]+$")
    url: HttpUrl = Field(description="Base URL of the site's Ray Serve HTTP proxy.")
    jurisdiction: Jurisdiction
    latency_ms: dict[str, int] = Field(default_factory=dict)


class RoutesModel(_RoutesModel):
    """A model in a static routes file: ``namespace/name``, its residency and its sites."""

    name: str = Field(pattern=MODEL_KEY, max_length=317)
    residency: Residency = Field(default_factory=Residency)
    sites: list[str] = Field(default_factory=list)

    @field_validator("sites")
    @classmethod
    def _sites_unique(cls, sites: list[str]) -> list[str]:
        require_unique(sites, "sites")
        return sites


class RoutesFile(_RoutesModel):
    """The static routes document of ``soberana router --routes FILE``."""

    sites: list[RoutesSite] = Field(default_factory=list)
    models: list[RoutesModel] = Field(default_factory=list)

    @field_validator("sites")
    @classmethod
    def _site_names_unique(cls, sites: list[RoutesSite]) -> list[RoutesSite]:
        require_unique([site.name for site in sites], "sites")
        return sites

    @field_validator("models")
    @classmethod
    def _model_names_unique(cls, models: list[RoutesModel]) -> list[RoutesModel]:
        require_unique([model.name for model in models], "models")
        return models


def table_from_routes(document: Mapping[str, Any] | None) -> RoutingTable:
    """The table a static routes document describes; raises pydantic's ValidationError if bad.

    Every listed site is taken to be ready: the router's own circuit breakers keep requests off
    a site that stopped answering.
    """
    routes = RoutesFile.model_validate(document or {})
    return RoutingTable(
        sites={
            site.name: Site(site.name, site.url.rstrip("/"), site.jurisdiction, site.latency_ms)
            for site in routes.sites
        },
        models={
            model.name: ModelRoute(
                model.name, model.residency, tuple(Replicas(site) for site in model.sites)
            )
            for model in routes.models
        },
    )
