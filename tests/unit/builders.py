"""Compact builders for placement tests, and an independent checker of every hard constraint.

The checker reads the raw specs and the plan only; it shares no code with the engine, so a bug in
the engine's model of a constraint cannot hide itself.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from soberana.operator.core.api import CPU_POOL, InferenceSiteSpec, ModelDeploymentSpec
from soberana.operator.core.placement import Current, Deployment, Plan, Site, World

RAY = {"ray": {"dashboardURL": "http://10.0.0.1:8265", "serveURL": "http://10.0.0.1:8000"}}


def site(
    name: str,
    jurisdiction: str = "BR",
    *,
    gpus: list[tuple[str, int, int, float]] | None = None,
    latency: dict[str, int] | None = None,
    labels: dict[str, str] | None = None,
    cordoned: bool = False,
    healthy: bool = True,
    cpus: tuple[int, float, float] | None = None,
) -> Site:
    """A site; ``gpus`` holds (model, count, memoryGiB, hourlyCost) tuples (default: four L4s,
    none when only ``cpus`` is given), ``cpus`` is (count, memoryGiB, hourlyCost)."""
    pools = gpus if gpus is not None else [] if cpus is not None else [("L4", 4, 24, 1.0)]
    body: dict[str, Any] = {
        "tier": "cloud" if pools else "edge",
        "region": "r1",
        "jurisdiction": jurisdiction,
        "gpus": [
            {"model": model, "count": count, "memoryGiB": memory, "hourlyCost": cost}
            for model, count, memory, cost in pools
        ],
        "latencyMs": latency if latency is not None else {"r1": 10},
        "backend": RAY,
        "cordoned": cordoned,
    }
    if cpus is not None:
        count, memory_gib, hourly = cpus
        body["cpus"] = {"count": count, "memoryGiB": memory_gib, "hourlyCost": hourly}
    spec = InferenceSiteSpec.model_validate(body)
    return Site(name=name, spec=spec, labels=labels or {}, healthy=healthy)


def cpu_only(cpus: int = 2, memory_gib: float = 1) -> dict[str, Any]:
    """The resources of a CPU-only replica, for ``deployment(resources=...)``."""
    return {"gpus": 0, "cpus": cpus, "memoryGiB": memory_gib}


def deployment(name: str, namespace: str = "ml", **spec: Any) -> Deployment:
    """A deployment; ``spec`` uses the wire (camelCase) field names."""
    body: dict[str, Any] = {"model": {"uri": "file:///models/m"}, "traffic": [{"region": "r1"}]}
    body.update(spec)
    return Deployment(namespace=namespace, name=name, spec=ModelDeploymentSpec.model_validate(body))


def world(sites: list[Site], deployments: list[Deployment]) -> World:
    return World(sites=tuple(sites), deployments=tuple(deployments))


def hard_constraint_violations(
    world: World, plan: Plan, current: Current | None = None
) -> list[str]:
    """Every way ``plan`` breaks a hard constraint of ``world``; empty when it breaks none."""
    sites = {site.name: site for site in world.sites}
    running = current or {}
    problems: list[str] = []
    used: dict[tuple[str, str], int] = defaultdict(int)
    memory_used: dict[str, float] = defaultdict(float)
    for deployment in world.deployments:
        result = plan.deployments[deployment.key]
        spec = deployment.spec
        if not result.placed:
            if not result.reason:
                problems.append(f"{deployment.key}: unplaced without a reason")
            continue
        if result.reason is not None:
            problems.append(f"{deployment.key}: placed with a reason")
        names = [placement.site for placement in result.placements]
        if len(set(names)) != len(names):
            problems.append(f"{deployment.key}: a site appears twice")
        if len(names) < spec.placement.min_sites:
            problems.append(f"{deployment.key}: {len(names)} sites < minSites")
        if sum(placement.replicas for placement in result.placements) != spec.reserved_replicas:
            problems.append(f"{deployment.key}: placed partially")
        cost = 0.0
        cpu = spec.resources.gpus == 0
        units = int(spec.resources.cpus) if cpu else spec.resources.gpus
        for placement in result.placements:
            violations = _site_violations(deployment, sites[placement.site], placement, running)
            problems += violations
            if violations and violations[-1].endswith(f"has no {placement.gpu_model}"):
                continue
            hourly = _hourly(sites[placement.site], placement.gpu_model)
            expected = placement.replicas * units * hourly
            if abs(placement.hourly_cost - expected) > 1e-9:
                problems.append(f"{deployment.key}: wrong cost at {placement.site}")
            cost += expected
            used[(placement.site, placement.gpu_model)] += placement.replicas * units
            if cpu:
                memory = placement.replicas * (spec.resources.memory_gib or 0)
                memory_used[placement.site] += memory
        if spec.budget is not None and cost > spec.budget.max_hourly_cost + 1e-6:
            problems.append(f"{deployment.key}: cost {cost} over budget")
        problems += _coverage_violations(deployment, sites, plan)
    for (name, model), gpus in used.items():
        count = _count(sites[name], model)
        if gpus > count:
            problems.append(f"{name}/{model}: {gpus} GPUs allocated of {count}")
    for name, memory in memory_used.items():
        pool = sites[name].spec.cpus
        if pool is None or memory > pool.memory_gib + 1e-9:
            problems.append(f"{name}: {memory} GiB allocated of its CPU pool's memory")
    return problems


def _hourly(site: Site, model: str) -> float:
    if model == CPU_POOL and site.spec.cpus is not None:
        return site.spec.cpus.hourly_cost
    return next(pool.hourly_cost for pool in site.spec.gpus if pool.model == model)


def _count(site: Site, model: str) -> int:
    if model == CPU_POOL and site.spec.cpus is not None:
        return site.spec.cpus.count
    return next(pool.count for pool in site.spec.gpus if pool.model == model)


def _site_violations(
    deployment: Deployment, site: Site, placement: Any, running: Current
) -> list[str]:
    spec, key = deployment.spec, deployment.key
    problems = []
    residency = spec.residency
    if residency is not None:
        if site.spec.jurisdiction in residency.denied_jurisdictions:
            problems.append(f"{key}: denied jurisdiction at {site.name}")
        allowed = residency.allowed_jurisdictions
        if allowed and site.spec.jurisdiction not in allowed:
            problems.append(f"{key}: jurisdiction not allowed at {site.name}")
    selector = spec.placement.site_selector
    if selector is not None:
        for label, value in selector.match_labels.items():
            if site.labels.get(label) != value:
                problems.append(f"{key}: selector fails at {site.name}")
    if not site.healthy:
        problems.append(f"{key}: placed on unhealthy {site.name}")
    if site.spec.cordoned and not any(
        allocation.site == site.name and allocation.gpu_model == placement.gpu_model
        for allocation in running.get(key, ())
    ):
        problems.append(f"{key}: new replicas on cordoned {site.name}")
    if spec.resources.gpus == 0:
        if placement.gpu_model != CPU_POOL or site.spec.cpus is None:
            return [*problems, f"{key}: {site.name} has no {placement.gpu_model}"]
        if site.spec.cpus.count < spec.resources.cpus:
            problems.append(f"{key}: too few cores for a replica at {site.name}")
        return problems
    pool = next((pool for pool in site.spec.gpus if pool.model == placement.gpu_model), None)
    if pool is None:
        return [*problems, f"{key}: {site.name} has no {placement.gpu_model}"]
    if spec.resources.gpu_models and pool.model not in spec.resources.gpu_models:
        problems.append(f"{key}: GPU model {pool.model} not allowed")
    memory = spec.resources.gpu_memory_gib
    if memory is not None and pool.memory_gib < memory:
        problems.append(f"{key}: GPU memory too small at {site.name}")
    return problems


def _coverage_violations(deployment: Deployment, sites: dict[str, Site], plan: Plan) -> list[str]:
    spec, key = deployment.spec, deployment.key
    placements = plan.deployments[key].placements
    problems = []
    slo = spec.latency_slo_ms
    for source in spec.traffic:
        trips = {
            placement.site: sites[placement.site].spec.latency_ms[source.region]
            for placement in placements
            if source.region in sites[placement.site].spec.latency_ms
        }
        if not trips or (slo is not None and min(trips.values()) > slo):
            problems.append(f"{key}: region {source.region} not covered")
            continue
        serving = [placement.site for placement in placements if source.region in placement.regions]
        if len(serving) != 1 or trips.get(serving[0]) != min(trips.values()):
            problems.append(f"{key}: region {source.region} not served by its nearest site")
    return problems
