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
8. CPU pool, 9. cpus, 10. memory: for a CPU-only replica (``resources.gpus: 0``) instead of 5 to
   7, the site has no CPU pool (``spec.cpus``), or fewer cores than ``resources.cpus``, or less
   memory than ``resources.memoryGiB``;
11. latency: the site reaches none of the traffic regions within ``latencySLOms``;
12. budget: one replica here plus the rest at the cheapest eligible price exceeds the budget.

A site that passes offers every pool a replica fits in: GPU pools for GPU replicas, the site's CPU
pool (named ``CPU_POOL``) for CPU-only ones. A CPU pool's memory is counted in steps of
1/``MEMORY_STEPS`` GiB: a replica's memory rounded up, the pool's down. Constraints that depend on
several sites or deployments (shared capacity, coverage of every traffic region, ``minSites``, the
budget of a whole placement) are the solvers' business.

:func:`screen` runs every check on every pair at once, as numpy arrays over deployments x sites
(and x GPU pools, x traffic entries). What depends on fewer things is worked out once: a residency
verdict per jurisdiction, a selector verdict per distinct set of labels. Each distinct rejection
line is made once and shared by every pair it describes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from soberana.operator.core.api import CPU_POOL, GpuPool, InferenceSiteSpec, ModelDeploymentSpec
from soberana.operator.core.placement.arrays import BoolArray, FloatArray, IntArray, RejectionArray
from soberana.operator.core.placement.world import Deployment, Site

_BUDGET_SLACK = 1e-9

MEMORY_STEPS = 16
"""Steps per GiB in which CPU pools count memory (64 MiB each)."""


def replica_units(spec: ModelDeploymentSpec) -> int:
    """What one replica takes from its pool: GPUs, or cores for a CPU-only replica."""
    resources = spec.resources
    return resources.gpus if resources.gpus else math.ceil(resources.cpus)


def replica_memory(spec: ModelDeploymentSpec) -> int:
    """The memory steps one replica takes from a CPU pool (0 for a GPU replica: not counted)."""
    resources = spec.resources
    if resources.gpus or resources.memory_gib is None:
        return 0
    return math.ceil(resources.memory_gib * MEMORY_STEPS - 1e-9)


class Check(IntEnum):
    """The screening checks, in the order they run."""

    JURISDICTION = 1
    SELECTOR = 2
    UNHEALTHY = 3
    CORDONED = 4
    GPU_MODEL = 5
    GPU_MEMORY = 6
    GPU_COUNT = 7
    CPU_POOL = 8
    CPU_COUNT = 9
    CPU_MEMORY = 10
    LATENCY = 11
    BUDGET = 12


@dataclass(frozen=True)
class Rejection:
    """Why a site cannot host a deployment: the failed check and one line for people.

    ``least_cost`` is, for a budget rejection, the least hourly cost of a placement using the site.
    """

    check: Check
    line: str
    least_cost: float | None = None


@dataclass(frozen=True)
class Pool:
    """The GPUs of one model at one site, or its CPU cores, shared by every deployment."""

    site: str
    gpu_model: str  # CPU_POOL for the CPU pool
    gpus: int  # GPUs, or the CPU pool's cores
    memory_gib: float  # per GPU, or the CPU pool's memory in total
    hourly_cost: float  # per GPU, or per core

    @property
    def cpu(self) -> bool:
        return self.gpu_model == CPU_POOL

    @property
    def memory_steps(self) -> int:
        """The CPU pool's memory in steps of 1/MEMORY_STEPS GiB (0 for a GPU pool)."""
        return math.floor(self.memory_gib * MEMORY_STEPS + 1e-9) if self.cpu else 0


def site_pools(site: Site) -> list[Pool]:
    """A site's pools: its GPU pools by model, then its CPU pool."""
    pools = [
        Pool(
            site=site.name,
            gpu_model=gpu.model,
            gpus=gpu.count,
            memory_gib=gpu.memory_gib,
            hourly_cost=gpu.hourly_cost,
        )
        for gpu in sorted(site.spec.gpus, key=lambda gpu: gpu.model)
    ]
    if site.spec.cpus is not None:
        cpus = site.spec.cpus
        pools.append(Pool(site.name, CPU_POOL, cpus.count, cpus.memory_gib, cpus.hourly_cost))
    return pools


UNHEALTHY = 0
"""Index of the unhealthy rejection in every :class:`Screening`."""

CORDONED = 1
"""Index of the cordoned rejection in every :class:`Screening`."""

PASSED = -1
"""The rejection index of a site that passes every check."""


@dataclass(frozen=True, eq=False)
class Screening:
    """The verdict on every (deployment, site) pair, in the order of the deployments and sites
    given to :func:`screen`.

    ``pools`` lists each site's GPU pools by model, sites in order (``pool_site`` gives each one's
    site). ``rejected[d, s]`` indexes ``rejections`` (the distinct rejections), or is ``PASSED``.
    ``fits[d, p]`` says whether pool p may hold replicas of deployment d: a replica fits in it and
    its site passes. Deployment d's traffic entries are rows ``traffic_start[d]`` to
    ``traffic_start[d + 1]`` of ``trips``, the round-trip time from each site, ``inf`` when
    unreachable or beyond the latency SLO.
    """

    pools: tuple[Pool, ...]
    pool_site: IntArray
    rejections: tuple[Rejection, ...]
    rejected: RejectionArray
    fits: BoolArray
    traffic_start: IntArray
    trips: FloatArray


class _Rejections:
    """The distinct rejections, each made once."""

    def __init__(self) -> None:
        self.made: list[Rejection] = []
        self._index: dict[Hashable, int] = {}

    def add(self, rejection: Rejection) -> int:
        self.made.append(rejection)
        return len(self.made) - 1

    def of(self, key: Hashable, make: Callable[[], Rejection]) -> int:
        """The index of the rejection ``key`` names, made by ``make`` the first time."""
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = self.add(make())
        return index

    def by_pair(
        self,
        failed: BoolArray,
        signature: IntArray,
        make: Callable[[int, int], Rejection],
    ) -> RejectionArray:
        """Rejection indices where ``failed`` (deployments x sites), made once per distinct
        (``signature`` of the deployment, site); ``make`` takes a deployment and a site."""
        rejected = np.full(failed.shape, PASSED, dtype=np.int32)
        deployments, sites = np.nonzero(failed)
        if not deployments.size:
            return rejected
        keys = signature[deployments] * failed.shape[1] + sites
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        made = np.array(
            [self.add(make(int(deployments[pair]), int(sites[pair]))) for pair in first.tolist()],
            dtype=np.int32,
        )
        rejected[deployments, sites] = made[inverse]
        return rejected


def screen(
    deployments: Sequence[Deployment], sites: Sequence[Site], runs_there: BoolArray
) -> Screening:
    """Run checks 1 to 12 on every pair; ``runs_there`` (deployments x sites) marks the sites
    where a deployment has replicas running now."""
    specs = [deployment.spec for deployment in deployments]
    rejections = _Rejections()
    rejections.add(Rejection(Check.UNHEALTHY, "unhealthy: the site is not Ready"))
    rejections.add(Rejection(Check.CORDONED, "cordoned: the site takes nothing new"))
    by_site = [site_pools(site) for site in sites]
    pools = tuple(pool for pools_here in by_site for pool in pools_here)
    pool_site = np.repeat(np.arange(len(sites)), [len(pools_here) for pools_here in by_site])
    pool_start = np.searchsorted(pool_site, np.arange(len(sites)))
    unhealthy = np.array([not site.healthy for site in sites], dtype=np.bool_)
    cordoned = np.array([site.spec.cordoned for site in sites], dtype=np.bool_)
    rejected = _residency(specs, sites, rejections)
    _settle(rejected, _selector(specs, sites, rejections))
    rejected[(rejected == PASSED) & unhealthy] = UNHEALTHY
    rejected[(rejected == PASSED) & cordoned & ~runs_there] = CORDONED
    fitting, needs = _gpu_fit(specs, pools)
    _settle(
        rejected,
        rejections.by_pair(
            (rejected == PASSED) & ~_any_by_site(fitting, pool_start),
            needs,
            lambda deployment, site: _fit_rejection(specs[deployment], sites[site].spec),
        ),
    )
    traffic_start, trips, unreached = _latency(specs, sites)
    signature = _signature([_latency_key(spec) for spec in specs])
    _settle(
        rejected,
        rejections.by_pair(
            (rejected == PASSED) & unreached,
            signature,
            lambda deployment, site: Rejection(
                Check.LATENCY, _latency_line(specs[deployment], sites[site])
            ),
        ),
    )
    fits = fitting & (rejected == PASSED)[:, pool_site]
    _settle(rejected, _budget(specs, sites, pools, pool_start, fits, rejections))
    fits &= (rejected == PASSED)[:, pool_site]
    return Screening(
        pools=pools,
        pool_site=pool_site,
        rejections=tuple(rejections.made),
        rejected=rejected,
        fits=fits,
        traffic_start=traffic_start,
        trips=trips,
    )


def _settle(rejected: RejectionArray, failed: RejectionArray) -> None:
    """Record the rejections of ``failed`` for the pairs no earlier check rejected."""
    np.copyto(rejected, failed, where=(rejected == PASSED) & (failed != PASSED))


def _any_by_site(by_pool: BoolArray, pool_start: IntArray) -> BoolArray:
    """Whether any pool of each site (every site has one) is True, by row."""
    if not pool_start.size:
        return np.zeros((by_pool.shape[0], 0), dtype=np.bool_)
    found: BoolArray = np.logical_or.reduceat(by_pool, pool_start, axis=1)
    return found


def _signature(keys: Sequence[Hashable]) -> IntArray:
    """A number per key, equal for equal keys."""
    numbers: dict[Hashable, int] = {}
    return np.array([numbers.setdefault(key, len(numbers)) for key in keys], dtype=np.int64)


def _residency(
    specs: Sequence[ModelDeploymentSpec], sites: Sequence[Site], rejections: _Rejections
) -> RejectionArray:
    """Check 1, one verdict per deployment and jurisdiction."""
    jurisdictions = sorted({site.spec.jurisdiction for site in sites})
    verdicts = np.full((len(specs), len(jurisdictions)), PASSED, dtype=np.int32)
    by_rule: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
    for deployment, spec in enumerate(specs):
        residency = spec.residency
        if residency is None:
            continue
        rule = (tuple(residency.allowed_jurisdictions), tuple(residency.denied_jurisdictions))
        if rule not in by_rule:
            by_rule[rule] = [
                PASSED
                if (refusal := residency.refusal(jurisdiction)) is None
                else rejections.of(
                    (Check.JURISDICTION, refusal),
                    functools.partial(Rejection, Check.JURISDICTION, f"jurisdiction: {refusal}"),
                )
                for jurisdiction in jurisdictions
            ]
        verdicts[deployment] = by_rule[rule]
    column = {jurisdiction: index for index, jurisdiction in enumerate(jurisdictions)}
    return verdicts[:, [column[site.spec.jurisdiction] for site in sites]]


def _selector(
    specs: Sequence[ModelDeploymentSpec], sites: Sequence[Site], rejections: _Rejections
) -> RejectionArray:
    """Check 2, one verdict per deployment and distinct set of site labels."""
    label_sets: dict[tuple[tuple[str, str], ...], int] = {}
    site_labels = [
        label_sets.setdefault(tuple(sorted(site.labels.items())), len(label_sets)) for site in sites
    ]
    verdicts = np.full((len(specs), len(label_sets)), PASSED, dtype=np.int32)
    for deployment, spec in enumerate(specs):
        selector = spec.placement.site_selector
        if selector is None:
            continue
        for labels, column in label_sets.items():
            mismatch = selector.mismatch(dict(labels))
            if mismatch is not None:
                verdicts[deployment, column] = rejections.of(
                    (Check.SELECTOR, mismatch),
                    functools.partial(Rejection, Check.SELECTOR, f"selector: {mismatch}"),
                )
    return verdicts[:, site_labels]


def _gpu_fit(
    specs: Sequence[ModelDeploymentSpec], pools: Sequence[Pool]
) -> tuple[BoolArray, IntArray]:
    """Checks 5 to 10 pool by pool: where a replica fits in the pool (deployments x pools), and a
    number per deployment, equal for the same needs."""
    models = {model: index for index, model in enumerate(sorted({p.gpu_model for p in pools}))}
    wanted = np.ones((len(specs), len(models)), dtype=np.bool_)
    cpu_only = np.array([spec.resources.cpu_only for spec in specs], dtype=np.bool_)
    wanted[cpu_only] = False
    if CPU_POOL in models:  # the CPU pool is for CPU-only replicas, and only it
        wanted[:, models[CPU_POOL]] = cpu_only
    for deployment, spec in enumerate(specs):
        if spec.resources.gpu_models:
            wanted[deployment] = False
            wanted[deployment, [models[m] for m in spec.resources.gpu_models if m in models]] = True
    gpu_memory = np.array([spec.resources.gpu_memory_gib or 0 for spec in specs], dtype=np.int64)
    units = np.array([replica_units(spec) for spec in specs], dtype=np.int64)
    memory = np.array([replica_memory(spec) for spec in specs], dtype=np.int64)
    per_gpu = np.array([0 if pool.cpu else pool.memory_gib for pool in pools], dtype=np.float64)
    steps = np.array([pool.memory_steps for pool in pools], dtype=np.int64)
    fits: BoolArray = (
        wanted[:, [models[pool.gpu_model] for pool in pools]]
        & (per_gpu >= gpu_memory[:, None])
        & (np.array([pool.gpus for pool in pools], dtype=np.int64) >= units[:, None])
        & (steps >= memory[:, None])
    )
    needs = [
        (
            tuple(spec.resources.gpu_models),
            spec.resources.gpu_memory_gib,
            spec.resources.gpus,
            replica_units(spec),
            replica_memory(spec),
        )
        for spec in specs
    ]
    return fits, _signature(needs)


def _fit_rejection(spec: ModelDeploymentSpec, site: InferenceSiteSpec) -> Rejection:
    """The first of checks 5 to 10 that a site with no pool a replica fits in fails."""
    if spec.resources.cpu_only:
        return _cpu_rejection(spec, site)
    return _gpu_rejection(spec, site.gpus)


def _cpu_rejection(spec: ModelDeploymentSpec, site: InferenceSiteSpec) -> Rejection:
    """The first of checks 8 to 10 that a site fails for a CPU-only replica."""
    if site.cpus is None:
        return Rejection(
            Check.CPU_POOL, "CPU pool: the site has no spec.cpus; a CPU-only replica needs one"
        )
    cpus = replica_units(spec)
    if site.cpus.count < cpus:
        return Rejection(
            Check.CPU_COUNT, f"cpus: needs {cpus} per replica, the site has {site.cpus.count}"
        )
    return Rejection(
        Check.CPU_MEMORY,
        f"memory: needs {_gib(spec.resources.memory_gib or 0)} GiB per replica, the site's CPU "
        f"pool has {_gib(site.cpus.memory_gib)} GiB",
    )


def _gib(value: float) -> str:
    """GiB as people write them: 8, 0.5."""
    return f"{value:g}"


def _gpu_rejection(spec: ModelDeploymentSpec, pools: Sequence[GpuPool]) -> Rejection:
    """The first of checks 5 to 7 that a site with no pool a replica fits in fails."""
    wanted = spec.resources.gpu_models
    by_model = [pool for pool in pools if not wanted or pool.model in wanted]
    if not pools:
        return Rejection(
            Check.GPU_MODEL,
            "GPU model: the site has no GPUs, only a CPU pool (a CPU-only replica has "
            "resources.gpus: 0)",
        )
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
    has = ", ".join(f"{pool.count} {pool.model}" for pool in by_memory)
    return Rejection(
        Check.GPU_COUNT, f"GPU count: has {has}; a replica needs {gpus} GPUs of one model"
    )


def _latency(
    specs: Sequence[ModelDeploymentSpec], sites: Sequence[Site]
) -> tuple[IntArray, FloatArray, BoolArray]:
    """Check 11: where each traffic entry starts by deployment, the trips (traffic entries x
    sites, inf beyond reach or SLO), and the pairs where the site reaches no region in time."""
    regions: dict[str, int] = {}
    entry_region = [
        regions.setdefault(source.region, len(regions)) for spec in specs for source in spec.traffic
    ]
    latency = np.full((len(sites), len(regions)), np.inf)
    for row, site in enumerate(sites):
        for region, ms in site.spec.latency_ms.items():
            column = regions.get(region)
            if column is not None:
                latency[row, column] = ms
    lengths = np.array([len(spec.traffic) for spec in specs], dtype=np.int64)
    traffic_start = np.concatenate(([0], np.cumsum(lengths)))
    slo = np.array(
        [spec.latency_slo_ms if spec.latency_slo_ms is not None else math.inf for spec in specs]
    )
    trips = np.ascontiguousarray(latency[:, entry_region].T)
    trips[trips > np.repeat(slo, lengths)[:, None]] = np.inf
    unreached = np.zeros((len(specs), len(sites)), dtype=np.bool_)
    some = np.flatnonzero(lengths)
    if some.size:
        unreached[some] = ~np.logical_or.reduceat(np.isfinite(trips), traffic_start[some], axis=0)
    return traffic_start, trips, unreached


def _latency_key(spec: ModelDeploymentSpec) -> Hashable:
    """What the latency line of a site depends on, besides the site."""
    regions = tuple(source.region for source in spec.traffic[:4])
    return regions, len(spec.traffic) > 4, spec.latency_slo_ms


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


def _budget(
    specs: Sequence[ModelDeploymentSpec],
    sites: Sequence[Site],
    pools: Sequence[Pool],
    pool_start: IntArray,
    fits: BoolArray,
    rejections: _Rejections,
) -> RejectionArray:
    """Check 12 over the sites that passed 1 to 11: sites even the cheapest use of overspends."""
    rejected = np.full((len(specs), len(sites)), PASSED, dtype=np.int32)
    capped = np.array([spec.budget is not None for spec in specs], dtype=np.bool_)
    chosen = np.flatnonzero(capped & fits.any(axis=1))
    if not chosen.size:
        return rejected
    units = np.array([replica_units(spec) for spec in specs], dtype=np.int64)[chosen]
    hourly = np.array([pool.hourly_cost for pool in pools])
    cost = np.where(fits[chosen], units[:, None] * hourly, np.inf)
    here = np.minimum.reduceat(cost, pool_start, axis=1)
    others = np.array([spec.reserved_replicas - 1 for spec in specs], dtype=np.int64)[chosen]
    needed = here + (others * cost.min(axis=1))[:, None]
    limits = [spec.budget.max_hourly_cost if spec.budget else math.inf for spec in specs]
    budget = np.array(limits)[chosen]
    over = np.isfinite(here) & ~(needed <= (budget * (1 + _BUDGET_SLACK))[:, None])
    for row, site in zip(*np.nonzero(over), strict=True):
        deployment = int(chosen[row])
        least = float(needed[row, site])
        start = int(pool_start[site])
        end = int(pool_start[site + 1]) if site + 1 < len(sites) else len(pools)
        here_pool = pools[start + int(np.argmin(cost[row, start:end]))]
        unit = "core" if here_pool.cpu else "GPU"
        line = (
            f"budget: a placement using this site costs at least {least:.2f}/h "
            f"({here_pool.gpu_model} at {here_pool.hourly_cost:.2f}/{unit}-h), over "
            f"maxHourlyCost {limits[deployment]:.2f}"
        )
        rejected[deployment, site] = rejections.add(Rejection(Check.BUDGET, line, least))
    return rejected
