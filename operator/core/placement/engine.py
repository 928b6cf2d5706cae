"""The entry point: ``place(world, current) -> Plan``.

Placement is a pure function of its input. Hard constraints (residency, site selector, health and
cordons, GPU model and memory, CPU cores and memory, shared capacity, latency SLO coverage of every
traffic region, budget, ``minSites`` distinct sites) are never traded for cost, and a deployment is
placed with all its replicas or not at all. Among compliant placements, each deployment's strategy
decides; see :mod:`~soberana.operator.core.placement.problem` for the objective, stability and
contention order, and :mod:`~soberana.operator.core.placement.fast` and
:mod:`~soberana.operator.core.placement.optimal` for the two solvers.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from soberana.operator.core.placement.constraints import Assignment
from soberana.operator.core.placement.explain import Explainer
from soberana.operator.core.placement.fast import solve_fast
from soberana.operator.core.placement.optimal import solve_optimal
from soberana.operator.core.placement.options import PlacementOptions
from soberana.operator.core.placement.plan import (
    Change,
    DeploymentPlan,
    Plan,
    SitePlacement,
    SiteUsage,
)
from soberana.operator.core.placement.pools import MEMORY_STEPS
from soberana.operator.core.placement.problem import Demand, Problem, Solution, build_problem
from soberana.operator.core.placement.world import Allocation, Current, World

Solver = Literal["fast", "optimal"]

DEFAULT_OPTIONS = PlacementOptions()


def place(
    world: World,
    current: Current | None = None,
    *,
    solver: Solver = "fast",
    options: PlacementOptions = DEFAULT_OPTIONS,
) -> Plan:
    """Decide where every deployment of ``world`` runs, given what runs now (``current``).

    ``optimal`` never returns a worse plan than ``fast``: it places at least the same deployments
    and, when it places exactly those, has an objective at most as high.
    """
    running = current or {}
    problem = build_problem(world, running, options)
    solution = solve_fast(problem)
    if solver == "optimal":
        exact = solve_optimal(problem, solution, options)
        if exact is not None and _improves(problem, exact, solution):
            solution = exact
    return _plan(problem, solution, running, solver)


def _improves(problem: Problem, candidate: Solution, incumbent: Solution) -> bool:
    if not problem.is_feasible(candidate) or not set(incumbent) <= set(candidate):
        return False
    if set(candidate) != set(incumbent):
        return True
    return problem.score(candidate) <= problem.score(incumbent)


def _plan(problem: Problem, solution: Solution, current: Current, solver: Solver) -> Plan:
    used = problem.used(solution)
    explainer = Explainer(problem)
    deployments: dict[str, DeploymentPlan] = {}
    for demand in sorted(problem.demands, key=lambda demand: demand.key):
        assignment = solution.get(demand.key)
        previous = tuple(current.get(demand.key, ()))
        if assignment is None:
            reason, rejected = explainer.unplaced(demand, problem.capacity - used)
            deployments[demand.key] = DeploymentPlan(
                key=demand.key,
                placements=(),
                reason=reason,
                rejected=rejected,
                change=Change.UNPLACED,
            )
            continue
        free = problem.capacity - used
        demand.take(free, assignment, sign=1)
        placements = _placements(problem, demand, assignment)
        deployments[demand.key] = DeploymentPlan(
            key=demand.key,
            placements=placements,
            reason=None,
            rejected=explainer.placed(demand, assignment, free),
            change=_change(previous, placements),
        )
    return Plan(
        deployments=deployments,
        sites=_site_usage(problem, solution, used),
        solver=solver,
        objective=problem.score(solution),
        warnings=_warnings(problem),
    )


def _placements(
    problem: Problem, demand: Demand, assignment: Assignment
) -> tuple[SitePlacement, ...]:
    served = demand.regions_served(assignment)
    placements = [
        SitePlacement(
            site=problem.pools[demand.pool[option]].site,
            gpu_model=problem.pools[demand.pool[option]].gpu_model,
            replicas=replicas,
            hourly_cost=replicas * float(demand.price[option]),
            regions=tuple(served[option]),
        )
        for option, replicas in assignment
    ]
    return tuple(sorted(placements, key=lambda placement: placement.site))


def _change(previous: tuple[Allocation, ...], placements: tuple[SitePlacement, ...]) -> Change:
    if not previous:
        return Change.PLACED
    now = {(entry.site, entry.gpu_model, entry.replicas) for entry in placements}
    before = {(entry.site, entry.gpu_model, entry.replicas) for entry in previous}
    return Change.UNCHANGED if now == before else Change.MOVED


def _site_usage(problem: Problem, solution: Solution, used: np.ndarray) -> dict[str, SiteUsage]:
    cost = [0.0] * len(problem.sites)
    hosted: list[set[str]] = [set() for _ in problem.sites]
    for demand in problem.demands:
        for option, replicas in solution.get(demand.key, ()):
            site = int(demand.site[option])
            cost[site] += replicas * float(demand.price[option])
            hosted[site].add(demand.key)
    site_of = {site.name: number for number, site in enumerate(problem.sites)}
    pool_site = np.array([site_of[pool.site] for pool in problem.pools], dtype=np.int64)
    cpu = np.array([pool.cpu for pool in problem.pools], dtype=np.bool_)
    pools, sites = len(problem.pools), problem.sites

    def by_site(values: np.ndarray, where: np.ndarray) -> np.ndarray:
        """Sum of ``values`` over each site's pools where ``where`` holds."""
        return np.bincount(pool_site, weights=np.where(where, values, 0), minlength=len(sites))

    units, capacity = used[:pools], problem.capacity[:pools]
    gpus, gpus_total = by_site(units, ~cpu), by_site(capacity, ~cpu)
    cpus, cpus_total = by_site(units, cpu), by_site(capacity, cpu)
    memory = by_site(used[pools:], cpu) / MEMORY_STEPS
    memory_total = [site.spec.cpus.memory_gib if site.spec.cpus else 0.0 for site in sites]
    return {
        site.name: SiteUsage(
            gpus_allocated=int(gpus[number]),
            gpus_total=int(gpus_total[number]),
            hourly_cost=cost[number],
            deployments=len(hosted[number]),
            cpus_allocated=int(cpus[number]),
            cpus_total=int(cpus_total[number]),
            memory_gib_allocated=float(memory[number]),
            memory_gib_total=float(memory_total[number]),
        )
        for number, site in enumerate(sites)
    }


def _warnings(problem: Problem) -> tuple[str, ...]:
    currencies = sorted({site.spec.currency for site in problem.sites})
    if len(currencies) > 1:
        return (
            f"sites price GPUs in several currencies ({', '.join(currencies)}); placement "
            "compares hourlyCost as plain numbers",
        )
    return ()
