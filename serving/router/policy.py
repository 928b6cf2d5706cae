"""The routing decision for one request: which sites may serve it, in which order, and why.

Pure and deterministic: the same table, request, site health and time give the same decision.

1. Candidates are the model's sites that lie within the model's residency (checked again here,
   whatever the table says), within every residency restriction of the request (its
   ``X-Soberana-Residency`` header, its API key's tenant), that have a Serve URL and ready
   replicas, and whose circuit breaker lets a request through. Every other site of the model
   becomes an :class:`Exclusion` that says why.
2. Candidates are ordered by expected cost, the "peak EWMA" of load balancers such as Finagle
   and Linkerd: ``(declared RTT from the client's region + observed latency) * (in flight + 1)``.
   A nearby site takes the traffic until its queue makes a farther one cheaper; ties go to fewer
   requests in flight, then to the site name.
"""

from __future__ import annotations

from dataclasses import dataclass

from soberana.serving.router.health import HealthBook
from soberana.serving.router.table import ModelRoute, RoutingTable, Site

UNLISTED_REGION_RTT_MS = 1_000
"""RTT counted for a site whose ``latencyMs`` does not list the client's region."""


@dataclass(frozen=True)
class Restriction:
    """Jurisdictions a request may be processed in, and who said so."""

    jurisdictions: frozenset[str]
    source: str  # such as "X-Soberana-Residency" or "the API key of tenant acme"

    def refusal(self, jurisdiction: str) -> str | None:
        if jurisdiction in self.jurisdictions:
            return None
        allowed = ", ".join(sorted(self.jurisdictions))
        return f"{jurisdiction} is outside [{allowed}] required by {self.source}"


@dataclass(frozen=True)
class RequestScope:
    """What the policy needs to know about a request besides its model."""

    region: str | None = None
    restrictions: tuple[Restriction, ...] = ()


@dataclass(frozen=True)
class Candidate:
    site: Site
    cost: float
    rtt_ms: int | None  # None: no client region known
    observed_ms: float | None  # None: no response observed yet
    in_flight: int

    def reason(self) -> str:
        rtt = "no client region" if self.rtt_ms is None else f"rtt {self.rtt_ms} ms"
        observed = "none observed" if self.observed_ms is None else f"{self.observed_ms:.1f} ms"
        return f"{rtt}, latency {observed}, {self.in_flight} in flight"


@dataclass(frozen=True)
class Exclusion:
    site: str
    reason: str

    def __str__(self) -> str:
        return f"{self.site}: {self.reason}"


@dataclass(frozen=True)
class Decision:
    model: ModelRoute
    candidates: tuple[Candidate, ...]
    exclusions: tuple[Exclusion, ...]

    def refusal(self) -> str:
        """Why no site can serve the request, in one message for the client."""
        if not self.exclusions:
            return f"model {self.model.key} is not placed on any site"
        reasons = "; ".join(str(exclusion) for exclusion in self.exclusions)
        return f"no compliant site can serve model {self.model.key}: {reasons}"


def decide(
    table: RoutingTable,
    model: ModelRoute,
    scope: RequestScope,
    health: HealthBook,
    now: float,
) -> Decision:
    candidates: list[Candidate] = []
    exclusions: list[Exclusion] = []
    for replicas in model.replicas:
        site = table.sites.get(replicas.site)
        reason = (
            "not in the routing table"
            if site is None
            else _exclusion_reason(site, model, scope, replicas.not_ready, health, now)
        )
        if reason is not None:
            exclusions.append(Exclusion(replicas.site, reason))
        else:
            assert site is not None
            candidates.append(_candidate(site, scope.region, health))
    candidates.sort(key=lambda c: (c.cost, c.in_flight, c.site.name))
    return Decision(model, tuple(candidates), tuple(exclusions))


def _exclusion_reason(
    site: Site,
    model: ModelRoute,
    scope: RequestScope,
    not_ready: str | None,
    health: HealthBook,
    now: float,
) -> str | None:
    model_refusal = model.residency.refusal(site.jurisdiction)
    if model_refusal is not None:
        return f"{model_refusal} of the model"
    for restriction in scope.restrictions:
        refusal = restriction.refusal(site.jurisdiction)
        if refusal is not None:
            return refusal
    if site.url is None:
        return "no Serve URL is known for the site"
    if not_ready is not None:
        return not_ready
    return health[site.name].breaker.refusal(now)


def _candidate(site: Site, region: str | None, health: HealthBook) -> Candidate:
    observed = health[site.name]
    rtt = None if region is None else site.latency_ms.get(region, UNLISTED_REGION_RTT_MS)
    latency = (rtt or 0) + (observed.latency_ewma_ms or 0.0)
    return Candidate(
        site=site,
        cost=latency * (observed.in_flight + 1),
        rtt_ms=rtt,
        observed_ms=observed.latency_ewma_ms,
        in_flight=observed.in_flight,
    )
