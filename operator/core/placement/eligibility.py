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

A site that passes offers every GPU pool a replica fits in. Constraints that depend on several
sites or deployments (shared capacity, coverage of every traffic region, ``minSites``, the budget
of a whole placement) are the solvers' business.

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

from soberana.operator.core.api import GpuPool, ModelDeploymentSpec
from soberana.operator.core.placement.arrays import BoolArray, FloatArray, IntArray, RejectionArray
from soberana.operator.core.placement.world import Deployment, Site

_BUDGET_SLACK = 1e-9


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
class Pool:
    """The GPUs of one model at one site, shared by every deployment."""

    site: str
    gpu_model: str
    gpus: int
    memory_gib: int
    hourly_cost: float  # per GPU


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
    """Run checks 1 to 9 on every pair; ``runs_there`` (deployments x sites) marks the sites
    where a deployment has replicas running now."""
    specs = [deployment.spec for deployment in deployments]
    rejections = _Rejections()
    rejections.add(Rejection(Check.UNHEALTHY, "unhealthy: the site is not Ready"))
    rejections.add(Rejection(Check.CORDONED, "cordoned: the site takes nothing new"))
    pools = tuple(
        Pool(
            site=site.name,
            gpu_model=gpu.model,
            gpus=gpu.count,
            memory_gib=gpu.memory_gib,
            hourly_cost=gpu.hourly_cost,
        )
        for site in sites
        for gpu in sorted(site.spec.gpus, key=lambda gpu: gpu.model)
    )
    pool_site = np.repeat(np.arange(len(sites)), [len(site.spec.gpus) for site in sites])
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
            lambda deployment, site: _gpu_rejection(specs[deployment], sites[site].spec.gpus),
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
    """Checks 5 to 7 pool by pool: where a replica fits in the pool (deployments x pools), and a
    number per deployment, equal for the same GPU needs."""
    models = {model: index for index, model in enumerate(sorted({p.gpu_model for p in pools}))}
    wanted = np.ones((len(specs), len(models)), dtype=np.bool_)
    for deployment, spec in enumerate(specs):
        if spec.resources.gpu_models:
            wanted[deployment] = False
            wanted[deployment, [models[m] for m in spec.resources.gpu_models if m in models]] = True
    memory = np.array([spec.resources.gpu_memory_gib or 0 for spec in specs], dtype=np.int64)
    gpus = np.array([spec.resources.gpus for spec in specs], dtype=np.int64)
    fits: BoolArray = (
        wanted[:, [models[pool.gpu_model] for pool in pools]]
        & (np.array([pool.memory_gib for pool in pools], dtype=np.int64) >= memory[:, None])
        & (np.array([pool.gpus for pool in pools], dtype=np.int64) >= gpus[:, None])
    )
    needs = [
        (tuple(spec.resources.gpu_models), spec.resources.gpu_memory_gib, spec.resources.gpus)
        for spec in specs
    ]
    return fits, _signature(needs)


def _fitting(spec: ModelDeploymentSpec, gpus: Sequence[GpuPool]) -> list[GpuPool]:
    """The pools of a site, in its order, a replica of ``spec`` fits in."""
    wanted, memory = spec.resources.gpu_models, spec.resources.gpu_memory_gib
    return [
        pool
        for pool in gpus
        if (not wanted or pool.model in wanted)
        and (memory is None or pool.memory_gib >= memory)
        and pool.count >= spec.resources.gpus
    ]


def _gpu_rejection(spec: ModelDeploymentSpec, pools: Sequence[GpuPool]) -> Rejection:
    """The first of checks 5 to 7 that a site with no pool a replica fits in fails."""
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
    has = ", ".join(f"{pool.count} {pool.model}" for pool in by_memory)
    return Rejection(
        Check.GPU_COUNT, f"GPU count: has {has}; a replica needs {gpus} GPUs of one model"
    )


def _latency(
    specs: Sequence[ModelDeploymentSpec], sites: Sequence[Site]
) -> tuple[IntArray, FloatArray, BoolArray]:
    """Check 8: where each traffic entry starts by deployment, the trips (traffic entries x
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
    """Check 9 over the sites that passed 1 to 8: sites even the cheapest use of would overspend."""
    rejected = np.full((len(specs), len(sites)), PASSED, dtype=np.int32)
    capped = np.array([spec.budget is not None for spec in specs], dtype=np.bool_)
    chosen = np.flatnonzero(capped & fits.any(axis=1))
    if not chosen.size:
        return rejected
    gpus = np.array([spec.resources.gpus for spec in specs], dtype=np.int64)[chosen]
    hourly = np.array([pool.hourly_cost for pool in pools])
    cost = np.where(fits[chosen], gpus[:, None] * hourly, np.inf)
    here = np.minimum.reduceat(cost, pool_start, axis=1)
    others = np.array([spec.reserved_replicas - 1 for spec in specs], dtype=np.int64)[chosen]
    needed = here + (others * cost.min(axis=1))[:, None]
    limits = [spec.budget.max_hourly_cost if spec.budget else math.inf for spec in specs]
    budget = np.array(limits)[chosen]
    over = np.isfinite(here) & ~(needed <= (budget * (1 + _BUDGET_SLACK))[:, None])
    for row, site in zip(*np.nonzero(over), strict=True):
        deployment = int(chosen[row])
        spec, least = specs[deployment], float(needed[row, site])
        here_pool = min(
            _fitting(spec, sites[site].spec.gpus),
            key=lambda pool: spec.resources.gpus * pool.hourly_cost,
        )
        line = (
            f"budget: a placement using this site costs at least {least:.2f}/h "
            f"({here_pool.model} at {here_pool.hourly_cost:.2f}/GPU-h), over maxHourlyCost "
            f"{limits[deployment]:.2f}"
        )
        rejected[deployment, site] = rejections.add(Rejection(Check.BUDGET, line, least))
    return rejected
