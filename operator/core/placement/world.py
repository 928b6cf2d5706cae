"""The placement engine's input: every site and deployment, and what currently runs where.

A :class:`World` is an immutable snapshot. The operator builds it from its indexes, ``soberana
plan`` from YAML files; :meth:`World.from_resources` and :func:`current_allocations` do that from
API objects, reading a site's health from its ``Ready`` condition and the running placement from
``status.placements``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from soberana.operator.core.api import (
    ConditionStatus,
    InferenceSite,
    InferenceSiteSpec,
    ModelDeployment,
    ModelDeploymentSpec,
    NamespacedName,
)


@dataclass(frozen=True)
class Site:
    """An InferenceSite as placement sees it. ``healthy=False`` keeps everything off the site."""

    name: str
    spec: InferenceSiteSpec
    labels: Mapping[str, str] = field(default_factory=dict)
    healthy: bool = True


@dataclass(frozen=True)
class Deployment:
    """A ModelDeployment as placement sees it, identified by ``namespace/name``."""

    namespace: str
    name: str
    spec: ModelDeploymentSpec

    @property
    def ref(self) -> NamespacedName:
        return NamespacedName(self.namespace, self.name)

    @cached_property
    def key(self) -> str:
        return str(self.ref)


@dataclass(frozen=True)
class Allocation:
    """Replicas of one deployment on one site, using one GPU model there."""

    site: str
    gpu_model: str
    replicas: int


Current = Mapping[str, Sequence[Allocation]]
"""What runs now: allocations by deployment key (``namespace/name``)."""


@dataclass(frozen=True)
class World:
    """All sites and deployments; names of sites and keys of deployments are unique."""

    sites: tuple[Site, ...]
    deployments: tuple[Deployment, ...]

    def __post_init__(self) -> None:
        for what, names in (
            ("site", [site.name for site in self.sites]),
            ("deployment", [deployment.key for deployment in self.deployments]),
        ):
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise ValueError(f"{what} {', '.join(repeated)} appears more than once")

    @classmethod
    def from_resources(
        cls, sites: Iterable[InferenceSite], deployments: Iterable[ModelDeployment]
    ) -> World:
        """Snapshot API objects; a site is unhealthy when its Ready condition is False."""
        return cls(
            sites=tuple(
                Site(
                    name=site.metadata.name,
                    spec=site.spec,
                    labels=dict(site.metadata.labels),
                    healthy=_ready(site),
                )
                for site in sites
            ),
            deployments=tuple(_deployment(deployment) for deployment in deployments),
        )


def current_allocations(
    deployments: Iterable[ModelDeployment],
) -> dict[str, tuple[Allocation, ...]]:
    """The running placement recorded in each deployment's ``status.placements``."""
    current: dict[str, tuple[Allocation, ...]] = {}
    for deployment in deployments:
        if deployment.status is None or not deployment.status.placements:
            continue
        current[str(NamespacedName.of(deployment.metadata))] = tuple(
            Allocation(site=entry.site, gpu_model=entry.gpu_model, replicas=entry.replicas)
            for entry in deployment.status.placements
        )
    return current


def _deployment(deployment: ModelDeployment) -> Deployment:
    ref = NamespacedName.of(deployment.metadata)
    return Deployment(namespace=ref.namespace, name=ref.name, spec=deployment.spec)


def _ready(site: InferenceSite) -> bool:
    conditions = site.status.conditions if site.status is not None else []
    return not any(
        condition.type == "Ready" and condition.status is ConditionStatus.FALSE
        for condition in conditions
    )
