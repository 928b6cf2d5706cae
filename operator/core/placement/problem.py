"""The model both solvers share: options and capacities, the objective, stability, contention order.

Objective. A deployment scores a placement A (replicas per GPU pool) as::

    objective(A) = w_cost * cost(A) / best_cost  +  w_latency * latency(A) / best_latency

``cost(A)`` is the hourly cost of A's GPUs (or cores, for a CPU-only deployment). ``latency(A)`` is
the traffic-weighted mean round-trip time from each traffic region to its nearest site in A.
``best_cost`` (every replica on the cheapest eligible pool) and ``best_latency`` (every region
served by its nearest eligible site) are the best values possible if nothing else mattered, floored
at ``PlacementOptions.cost_floor`` and ``latency_floor_ms``. Each term is therefore 1.0 at its ideal
and 1.5 when 50 % worse: unitless, comparable across deployments, strategies and currencies. The
strategy picks the weights (``w_cost``, ``w_latency``): cost (1, 0.01), latency (0.01, 1), balanced
(0.5, 0.5); the small secondary weight only decides between placements that are equal on the primary
term.

Stability. A running deployment whose current placement still meets every hard constraint
(*keepable*) pays ``move_threshold * objective(current)`` when it moves, so it moves only when the
alternative is better by more than that fraction. A running placement on a cordoned site is kept
only as a last resort: staying costs ``DRAIN_PENALTY``, far above any objective, so the deployment
drains to any compliant alternative and keeps running where it is when there is none. A plan's
objective is the sum over placed deployments of their objectives plus these penalties.

Contention order. When capacity is short, deployments are served in this order: running ones
before new ones (a running model is not evicted to make room for a new one); then those with fewer
eligible sites (they have fewer alternatives); then larger demand (replicas x GPUs, or cores, per
replica), which packs better; then by ``namespace/name``.

Capacity. A pool is a site's GPUs of one model, or its CPU pool. ``Problem.capacity`` lists first
what each pool holds in *units* (GPUs, or cores), then each pool's memory in steps of
1/``MEMORY_STEPS`` GiB, which only CPU pools count (GPU pools hold 0 and nothing asks for it).
A replica takes ``Demand.gpus`` units and ``Demand.memory`` memory steps from the pool it is in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from soberana.operator.core.api import ModelDeploymentSpec, Strategy
from soberana.operator.core.placement.arrays import BoolArray, FloatArray, IntArray, RejectionArray
from soberana.operator.core.placement.constraints import (
    CONSTRAINTS,
    PASSED,
    Assignment,
    Rejection,
)
from soberana.operator.core.placement.eligibility import Screening, screen
from soberana.operator.core.placement.options import PlacementOptions
from soberana.operator.core.placement.pools import Pool, replica_memory, replica_units
from soberana.operator.core.placement.world import Allocation, Current, Deployment, Site, World

Solution = dict[str, Assignment]
"""Assignments of the placed deployments, by deployment key."""

STRATEGY_WEIGHTS: Mapping[Strategy, tuple[float, float]] = {
    Strategy.COST: (1.0, 0.01),
    Strategy.LATENCY: (0.01, 1.0),
    Strategy.BALANCED: (0.5, 0.5),
}
"""(cost weight, latency weight) of each strategy."""


@dataclass(frozen=True, eq=False)
class Demand:
    """One deployment's side of the problem: where it may go and how it scores placements.

    An option is a pool a replica may use, options in the order of the problem's pools (so by site,
    then GPU model, the CPU pool last). Arrays are indexed by option (and, for ``reach``, by traffic
    region first): ``pool`` and ``site`` locate the option in the problem, ``price`` is one
    replica's hourly cost there, and ``reach`` the round-trip time to each region, ``inf`` where
    beyond reach or SLO. ``rejected`` holds, by site of the problem, the index of the site's
    rejection in ``Problem.rejections``, or ``PASSED`` where the site is eligible.
    """

    deployment: Deployment
    key: str
    rank: int
    replicas: int  # reserved: replicas, or autoscaling's maximum
    gpus: int  # units per replica: GPUs, or cores for a CPU-only replica
    min_sites: int
    budget: float  # inf without a budget
    rejected: RejectionArray
    eligible_sites: int
    pool: IntArray
    site: IntArray
    price: FloatArray
    reach: FloatArray
    weights: FloatArray
    cost_weight: float
    latency_weight: float
    current: Assignment | None  # the running placement, when keepable
    keep_only: BoolArray  # options usable only by keeping ``current``
    memory: int = 0  # memory steps per replica (CPU-only replicas only)
    pools: int = 0  # pools in the problem: memory entries of ``capacity`` start here

    @property
    def cpu_only(self) -> bool:
        """Whether replicas use CPU pools (``gpus`` then counts cores)."""
        return self.deployment.spec.resources.cpu_only

    @property
    def memory_row(self) -> IntArray:
        """Each option's memory entry in ``Problem.capacity``."""
        return self.pool + self.pools

    def room(self, free: IntArray) -> IntArray:
        """Replicas each option could take within ``free`` (units, then memory, by pool), at most
        the deployment's replicas."""
        room = np.minimum(free[self.pool] // self.gpus, self.replicas)
        if self.memory:
            room = np.minimum(room, free[self.memory_row] // self.memory)
        return room

    def fits(self, free: IntArray, assignment: Assignment) -> bool:
        """Whether ``assignment`` fits in ``free``."""
        for option, replicas in assignment:
            pool = int(self.pool[option])
            if free[pool] < replicas * self.gpus:
                return False
            if self.memory and free[self.pools + pool] < replicas * self.memory:
                return False
        return True

    def take(self, free: IntArray, assignment: Assignment, sign: int = -1) -> None:
        """Take what ``assignment`` uses from ``free`` (or, ``sign`` 1, give it back)."""
        for option, replicas in assignment:
            free[self.pool[option]] += sign * replicas * self.gpus
            if self.memory:
                free[self.memory_row[option]] += sign * replicas * self.memory

    @property
    def spec(self) -> ModelDeploymentSpec:
        return self.deployment.spec

    def cost(self, assignment: Assignment) -> float:
        return sum(replicas * float(self.price[option]) for option, replicas in assignment)

    def latency(self, assignment: Assignment) -> float:
        """Traffic-weighted round-trip time to the nearest site; inf if a region is uncovered."""
        if not self.weights.size:
            return 0.0
        nearest = self.reach[:, [option for option, _ in assignment]].min(axis=1)
        return float(self.weights @ nearest)

    @property
    def draining(self) -> bool:
        """Whether the running placement uses a cordoned site: it moves whenever it can."""
        return self.current is not None and bool(
            self.keep_only[[option for option, _ in self.current]].any()
        )

    def objective(self, assignment: Assignment) -> float:
        return self.cost_weight * self.cost(assignment) + self.latency_weight * self.latency(
            assignment
        )

    def admits(self, assignment: Assignment) -> bool:
        """Whether ``assignment`` meets every hard constraint except the shared capacity."""
        return all(constraint.admits(self, assignment) for constraint in CONSTRAINTS)

    def regions_served(self, assignment: Assignment) -> dict[int, list[str]]:
        """The traffic regions each option of ``assignment`` is the nearest chosen site for."""
        served: dict[int, list[str]] = {option: [] for option, _ in assignment}
        options = [option for option, _ in assignment]
        for index, source in enumerate(self.spec.traffic):
            trips = self.reach[index, options]
            served[options[int(np.argmin(trips))]].append(source.region)
        return served


DRAIN_PENALTY = 1000.0
"""What staying on a cordoned site costs: more than any placement's objective (about 1 to 100)."""


@dataclass(frozen=True, eq=False)
class Problem:
    """Every deployment's demand over the shared pools, in contention order.

    ``sites`` are in name order, ``pools`` by site then GPU model (the CPU pool last);
    ``capacity`` holds each pool's units, then each pool's memory steps; ``rejections`` are the
    distinct screening rejections the demands' ``rejected`` arrays point into.
    """

    sites: tuple[Site, ...]
    pools: tuple[Pool, ...]
    capacity: IntArray
    demands: tuple[Demand, ...]
    move_threshold: float
    rejections: tuple[Rejection, ...]

    def rejection(self, demand: Demand, site: int) -> Rejection | None:
        """Why site number ``site`` cannot host ``demand``; None when it is eligible."""
        index = int(demand.rejected[site])
        return None if index == PASSED else self.rejections[index]

    def penalty(self, demand: Demand, assignment: Assignment) -> float:
        """The stability penalty of placing ``demand`` as ``assignment``.

        A draining deployment (running on a cordoned site) pays instead for staying, so that it
        moves to any compliant alternative and stays only when there is none.
        """
        if demand.current is None:
            return 0.0
        if demand.draining:
            return DRAIN_PENALTY if assignment == demand.current else 0.0
        if assignment == demand.current:
            return 0.0
        return self.move_threshold * demand.objective(demand.current)

    def value(self, demand: Demand, assignment: Assignment) -> float:
        """What placing ``demand`` as ``assignment`` adds to the plan objective."""
        return demand.objective(assignment) + self.penalty(demand, assignment)

    def score(self, solution: Solution) -> float:
        """The plan objective: objectives of the placed deployments plus stability penalties."""
        return sum(
            self.value(demand, solution[demand.key])
            for demand in self.demands
            if demand.key in solution
        )

    def used(self, solution: Solution) -> IntArray:
        """What ``solution`` allocates, entry by entry of ``capacity``."""
        used = np.zeros(self.capacity.size, dtype=np.int64)
        for demand in self.demands:
            demand.take(used, solution.get(demand.key, ()), sign=1)
        return used

    def is_feasible(self, solution: Solution) -> bool:
        """Whether ``solution`` meets every hard constraint, shared capacity included."""
        by_key = {demand.key: demand for demand in self.demands}
        return all(by_key[key].admits(assignment) for key, assignment in solution.items()) and bool(
            (self.used(solution) <= self.capacity).all()
        )


def build_problem(world: World, current: Current, options: PlacementOptions) -> Problem:
    """Screen every (deployment, site) pair and lay the result out for the solvers."""
    sites = tuple(sorted(world.sites, key=lambda site: site.name))
    site_index = {site.name: index for index, site in enumerate(sites)}
    runs_there = np.zeros((len(world.deployments), len(sites)), dtype=np.bool_)
    for row, deployment in enumerate(world.deployments):
        for allocation in current.get(deployment.key, ()):
            if allocation.site in site_index:
                runs_there[row, site_index[allocation.site]] = True
    screening = screen(world.deployments, sites, runs_there)
    del runs_there
    layout = _Layout(
        screening=screening,
        pool_index={
            (pool.site, pool.gpu_model): index for index, pool in enumerate(screening.pools)
        },
        capacity=np.array(
            [pool.gpus for pool in screening.pools]
            + [pool.memory_steps for pool in screening.pools],
            dtype=np.int64,
        ),
        hourly_cost=np.array([pool.hourly_cost for pool in screening.pools]),
        cordoned=np.array([site.spec.cordoned for site in sites], dtype=np.bool_),
    )
    demands = [
        _demand(
            deployment,
            row,
            running=current.get(deployment.key, ()),
            layout=layout,
            settings=options,
        )
        for row, deployment in enumerate(world.deployments)
    ]
    ranked = sorted(
        demands,
        key=lambda demand: (
            not current.get(demand.key),
            demand.eligible_sites,
            -demand.replicas * demand.gpus,
            demand.key,
        ),
    )
    return Problem(
        sites=sites,
        pools=screening.pools,
        capacity=layout.capacity,
        demands=tuple(replace(demand, rank=rank) for rank, demand in enumerate(ranked)),
        move_threshold=options.move_threshold,
        rejections=screening.rejections,
    )


@dataclass(frozen=True, eq=False)
class _Layout:
    screening: Screening
    pool_index: Mapping[tuple[str, str], int]
    capacity: IntArray
    hourly_cost: FloatArray
    cordoned: BoolArray


def _demand(
    deployment: Deployment,
    row: int,
    *,
    running: Sequence[Allocation],
    layout: _Layout,
    settings: PlacementOptions,
) -> Demand:
    spec = deployment.spec
    screening = layout.screening
    rejected = screening.rejected[row]
    pool = np.flatnonzero(screening.fits[row])
    site = screening.pool_site[pool]
    price = replica_units(spec) * layout.hourly_cost[pool]
    trips = screening.trips[screening.traffic_start[row] : screening.traffic_start[row + 1]]
    reach = trips[:, site]
    keep_only = layout.cordoned[site]
    demand = _options(deployment, rejected, pool, site, price, reach, keep_only, settings, layout)
    kept = _keepable(demand, running, layout)
    if kept is not None:
        return kept
    if keep_only.any():
        rejected[site[keep_only]] = screening.cordoned
        free = ~keep_only
        demand = _options(
            deployment,
            rejected,
            pool[free],
            site[free],
            price[free],
            reach[:, free],
            keep_only[free],
            settings,
            layout,
        )
    return demand


def _options(
    deployment: Deployment,
    rejected: RejectionArray,
    pool: IntArray,
    site: IntArray,
    price: FloatArray,
    reach: FloatArray,
    keep_only: BoolArray,
    settings: PlacementOptions,
    layout: _Layout,
) -> Demand:
    """The demand of ``deployment`` with these options, and no running placement kept."""
    spec = deployment.spec
    weights = np.array([source.weight for source in spec.traffic], dtype=np.float64)
    weights /= max(weights.sum(), 1.0)
    cost_weight, latency_weight = STRATEGY_WEIGHTS[spec.placement.strategy]
    best_cost = spec.reserved_replicas * float(price.min()) if pool.size else 0.0
    best_trips = reach.min(axis=1) if pool.size else np.zeros(len(spec.traffic))
    best_latency = float(weights @ np.where(np.isfinite(best_trips), best_trips, 0.0))
    return Demand(
        deployment=deployment,
        key=deployment.key,
        rank=0,  # set once every demand is known
        replicas=spec.reserved_replicas,
        gpus=replica_units(spec),
        min_sites=spec.placement.min_sites,
        budget=spec.budget.max_hourly_cost if spec.budget is not None else math.inf,
        rejected=rejected,
        eligible_sites=int((rejected == PASSED).sum()),
        pool=pool,
        site=site,
        price=price,
        reach=reach,
        weights=weights,
        cost_weight=cost_weight / max(best_cost, settings.cost_floor),
        latency_weight=latency_weight / max(best_latency, settings.latency_floor_ms),
        current=None,
        keep_only=keep_only,
        memory=replica_memory(spec),
        pools=len(layout.screening.pools),
    )


def _keepable(demand: Demand, running: Sequence[Allocation], layout: _Layout) -> Demand | None:
    """``demand`` keeping its running placement, if that placement still meets every hard
    constraint alone (shared capacity: it fits in the pools on their own)."""
    if not running:
        return None
    pairs = []
    pool, pools = demand.pool, len(layout.screening.pools)
    for allocation in running:
        wanted = layout.pool_index.get((allocation.site, allocation.gpu_model))
        number = int(np.searchsorted(pool, wanted)) if wanted is not None else pool.size
        if wanted is None or number == pool.size or pool[number] != wanted:
            return None
        if layout.capacity[wanted] < allocation.replicas * demand.gpus:
            return None
        if layout.capacity[pools + wanted] < allocation.replicas * demand.memory:
            return None
        pairs.append((number, allocation.replicas))
    current = tuple(sorted(pairs))
    keeping = replace(demand, current=current)
    return keeping if keeping.admits(current) else None
