"""Screening: the hard constraints that depend on one deployment and one site alone.

For each (deployment, site) pair the checks below run in this order, and the first one that fails
is the site's rejection line for that deployment:

1. jurisdiction: the site's jurisdiction is denied, or not among the allowed ones;
2. selector: the site's labels do not match ``placement.siteSelector``;
3. unhealthy: the site is not Ready;
4. cordoned: the site takes nothing new (replicas running there stay only if they cannot move);
5. GPU model: the site has none of the models in ``resources.gpuModels``;
6. GPU memory: the site's GPUs of those models have less memory than ``resources.gpuMemoryGiB``;
7. GPU count: no pool of those models holds the ``resources.gpus`` GPUs one replica needs;
8. latency: the site reaches none of the traffic regions within ``latencySLOms``;
9. budget: one replica here plus the rest at the cheapest eligible price exceeds the budget.

A site that passes offers one :class:`Option` per GPU pool a replica fits in. Constraints that
depend on several sites or deployments (shared capacity, coverage of every traffic region,
``minSites``, the budget of a whole placement) are the solvers' business.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from soberana.operator.core.api import GpuPool, ModelDeploymentSpec
from soberana.operator.core.placement.world import Site


class Check(IntEnum):
    """The screening checks, in the order they run."""

    JURISDICTION = 1
    SELECTOR = 2
    UNHEALTHY = 3
    CORDONED = 4
    GPU_MODEL = 5
    GPU_MEMORY = 6
    GPU_COUNT = 7
    LATENCY = 8
    BUDGET = 9


@dataclass(frozen=True)
class Rejection:
    """Why a site cannot host a deployment: the failed check and one line for people.

    ``least_cost`` is, for a budget rejection, the least hourly cost of a placement using the site.
    """

    check: Check
    line: str
    least_cost: float | None = None


@dataclass(frozen=True)
class Option:
    """A GPU pool at a site that can host replicas of a deployment.

    ``latency_ms`` holds the round-trip time to each of the deployment's traffic regions, in their
    order: ``inf`` when the region is unreachable or beyond the latency SLO. ``keep_only`` marks a
    pool of a cordoned site where the deployment already runs: usable only by keeping exactly the
    running placement.
    """

    site: str
    gpu_model: str
    pool_gpus: int
    gpu_hourly_cost: float
    replica_cost: float
    latency_ms: tuple[float, ...]
    keep_only: bool = False


class Screen:
    """Checks 1 to 8 for one deployment, site by site.

    What depends on the deployment alone (such as its residency verdict per jurisdiction) is
    worked out once, not once per site.
    """

    def __init__(self, spec: ModelDeploymentSpec) -> None:
        self._spec = spec
        self._regions = [source.region for source in spec.traffic]
        self._slo = spec.latency_slo_ms if spec.latency_slo_ms is not None else math.inf
        self._by_jurisdiction: dict[str, Rejection | None] = {}

    def __call__(self, site: Site, *, runs_there: bool) -> tuple[Option, ...] | Rejection:
        """The pools of ``site`` a replica may use, or why there are none."""
        spec = self._spec
        rejection = self._residency(site.spec.jurisdiction)
        if rejection is not None:
            return rejection
        selector = spec.placement.site_selector
        selector_mismatch = selector.mismatch(site.labels) if selector is not None else None
        if selector_mismatch is not None:
            return Rejection(Check.SELECTOR, f"selector: {selector_mismatch}")
        if not site.healthy:
            return Rejection(Check.UNHEALTHY, "unhealthy: the site is not Ready")
        if site.spec.cordoned and not runs_there:
            return Rejection(Check.CORDONED, "cordoned: the site takes nothing new")
        pools_or_rejection = _fitting_pools(spec, site.spec.gpus)
        if isinstance(pools_or_rejection, Rejection):
            return pools_or_rejection
        latency_ms = site.spec.latency_ms
        trips = tuple(
            float(ms)
            if (ms := latency_ms.get(region)) is not None and ms <= self._slo
            else math.inf
            for region in self._regions
        )
        if trips and all(math.isinf(ms) for ms in trips):
            return Rejection(Check.LATENCY, _latency_line(spec, site))
        gpus = spec.resources.gpus
        return tuple(
            Option(
                site=site.name,
                gpu_model=pool.model,
                pool_gpus=pool.count,
                gpu_hourly_cost=pool.hourly_cost,
                replica_cost=gpus * pool.hourly_cost,
                latency_ms=trips,
                keep_only=site.spec.cordoned,
            )
            for pool in pools_or_rejection
        )

    def _residency(self, jurisdiction: str) -> Rejection | None:
        if jurisdiction not in self._by_jurisdiction:
            residency = self._spec.residency
            refusal = residency.refusal(jurisdiction) if residency is not None else None
            self._by_jurisdiction[jurisdiction] = (
                Rejection(Check.JURISDICTION, f"jurisdiction: {refusal}") if refusal else None
            )
        return self._by_jurisdiction[jurisdiction]


def screen_budget(
    spec: ModelDeploymentSpec, options: Mapping[str, Sequence[Option]]
) -> dict[str, Rejection]:
    """Check 9 over the sites that passed 1 to 8: sites even the cheapest use of would overspend."""
    if spec.budget is None or not options:
        return {}
    budget = spec.budget.max_hourly_cost
    others = spec.reserved_replicas - 1
    cheapest = min(option.replica_cost for pools in options.values() for option in pools)
    rejections: dict[str, Rejection] = {}
    for site, pools in options.items():
        here = min(pools, key=lambda option: option.replica_cost)
        needed = here.replica_cost + others * cheapest
        if needed <= budget * (1 + 1e-9):
            continue
        line = (
            f"budget: a placement using this site costs at least {needed:.2f}/h "
            f"({here.gpu_model} at {here.gpu_hourly_cost:.2f}/GPU-h), over maxHourlyCost "
            f"{budget:.2f}"
        )
        rejections[site] = Rejection(Check.BUDGET, line, least_cost=needed)
    return rejections


def _fitting_pools(
    spec: ModelDeploymentSpec, pools: Sequence[GpuPool]
) -> list[GpuPool] | Rejection:
    wanted = spec.resources.gpu_models
    by_model = [pool for pool in pools if not wanted or pool.model in wanted]
    if not by_model:
        has = ", ".join(pool.model for pool in pools)
        return Rejection(
            Check.GPU_MODEL, f"GPU model: has {has}; resources.gpuModels allows {', '.join(wanted)}"
        )
    memory = spec.resources.gpu_memory_gib
    by_memory = [pool for pool in by_model if memory is None or pool.memory_gib >= memory]
    if not by_memory:
        has = ", ".join(f"{pool.model} {pool.memory_gib} GiB" for pool in by_model)
        return Rejection(
            Check.GPU_MEMORY, f"GPU memory: has {has}; a replica needs {memory} GiB per GPU"
        )
    gpus = spec.resources.gpus
    by_count = [pool for pool in by_memory if pool.count >= gpus]
    if not by_count:
        has = ", ".join(f"{pool.count} {pool.model}" for pool in by_memory)
        return Rejection(
            Check.GPU_COUNT, f"GPU count: has {has}; a replica needs {gpus} GPUs of one model"
        )
    return by_count


def _latency_line(spec: ModelDeploymentSpec, site: Site) -> str:
    described = []
    for source in spec.traffic[:4]:
        ms = site.spec.latency_ms.get(source.region)
        described.append(f"{source.region} {'unreachable' if ms is None else f'{ms} ms'}")
    if len(spec.traffic) > 4:
        described.append("...")
    if spec.latency_slo_ms is None:
        return f"latency: reaches no traffic region ({', '.join(described)})"
    return (
        f"latency: no traffic region within latencySLOms {spec.latency_slo_ms} "
        f"({', '.join(described)})"
    )
