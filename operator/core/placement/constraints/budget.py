"""Budget: a placement's hourly cost (replicas x units x the pool's hourly price) must be at most
``budget.maxHourlyCost``. Screening rejects the sites that even the cheapest placement using them
overspends; a placement must stay within the budget."""

from __future__ import annotations

import math
from typing import TypeVar, overload

import numpy as np

from soberana.operator.core.placement.arrays import BoolArray, FloatArray
from soberana.operator.core.placement.constraints.base import (
    PASSED,
    Assignment,
    Check,
    Columns,
    Constraint,
    Fallen,
    Pairs,
    Placement,
    Program,
    Rejection,
    Usable,
)
from soberana.operator.core.placement.pools import replica_units

BUDGET = Check("budget")

SLACK = 1e-9
"""Relative slack on every budget comparison: a cost equal to the budget but for float rounding
is within it (the same in screening, both solvers, the MILP's budget row and the explanations)."""

_Cost = TypeVar("_Cost", float, FloatArray)


def limit(budget: _Cost) -> _Cost:
    """The most a placement may cost under ``budget`` (inf without one)."""
    return budget * (1 + SLACK)


@overload
def within(cost: float, budget: float) -> bool: ...
@overload
def within(cost: FloatArray, budget: FloatArray) -> BoolArray: ...
def within(cost: float | FloatArray, budget: float | FloatArray) -> bool | BoolArray:
    """Whether ``cost`` is within ``budget``, element by element for arrays."""
    fits: bool | BoolArray = cost <= budget * (1 + SLACK)
    return fits


class Budget(Constraint):
    checks = (BUDGET,)

    def screen(self, pairs: Pairs) -> None:
        """Over the sites that passed every earlier check."""
        specs, sites, pools, pool_start = pairs.specs, pairs.sites, pairs.pools, pairs.pool_start
        fits = pairs.fits & pairs.passed[:, pairs.pool_site]
        rejected = np.full((len(specs), len(sites)), PASSED, dtype=np.int32)
        capped = np.array([spec.budget is not None for spec in specs], dtype=np.bool_)
        chosen = np.flatnonzero(capped & fits.any(axis=1))
        if not chosen.size:
            return
        units = np.array([replica_units(spec) for spec in specs], dtype=np.int64)[chosen]
        hourly = np.array([pool.hourly_cost for pool in pools])
        cost = np.where(fits[chosen], units[:, None] * hourly, np.inf)
        here = np.minimum.reduceat(cost, pool_start, axis=1)
        others = np.array([spec.reserved_replicas - 1 for spec in specs], dtype=np.int64)[chosen]
        needed = here + (others * cost.min(axis=1))[:, None]
        limits = [spec.budget.max_hourly_cost if spec.budget else math.inf for spec in specs]
        budget = np.array(limits)[chosen]
        over = np.isfinite(here) & ~(needed <= limit(budget)[:, None])
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
            rejected[deployment, site] = pairs.rejections.add(Rejection(BUDGET, line, least))
        pairs.reject(rejected)

    def admits(self, placement: Placement, assignment: Assignment) -> bool:
        return within(placement.cost(assignment), placement.budget)

    def program(self, program: Program, placement: Placement, columns: Columns) -> None:
        if math.isfinite(placement.budget):
            terms = [(x, float(placement.price[o])) for o, x in enumerate(columns.replicas)]
            program.row(terms, -np.inf, limit(placement.budget))

    def unplaced(self, fallen: Fallen) -> str:
        least, cheapest = min(
            (rejection.least_cost or 0.0, number)
            for number, rejection in enumerate(fallen.rejections)
            if rejection.check == BUDGET
        )
        return (
            f"the cheapest placement{fallen.scope} costs {least:.2f}/h (using "
            f"{fallen.sites[cheapest].name}), over budget.maxHourlyCost "
            f"{fallen.placement.budget:.2f}"
        )

    def shortfall(self, usable: Usable) -> str | None:
        cheapest = _cheapest_cost(usable)
        if within(cheapest, usable.placement.budget):
            return None
        return (
            f"the cheapest placement on {usable.qualifier}s{usable.scope} costs {cheapest:.2f}/h, "
            f"over budget.maxHourlyCost {usable.placement.budget:.2f}"
        )


def overrun(cost: FloatArray, budget: float) -> FloatArray | float:
    """How far over ``budget`` each cost is, relative to the budget (0 within it, or without one):
    the local search's measure of infeasibility."""
    if not math.isfinite(budget):
        return 0.0
    over: FloatArray = np.maximum(cost - budget, 0.0) / max(budget, 1e-9)  # 0: a tiny budget
    return over


def _cheapest_cost(usable: Usable) -> float:
    """A lower bound on cost: the minSites cheapest sites once, the rest on the cheapest room."""
    placement, room = usable.placement, usable.room
    by_price = sorted(usable.options.tolist(), key=lambda option: (placement.price[option], option))
    cost, placed, sites = 0.0, 0, set[int]()
    for option in by_price:
        site = int(placement.site[option])
        if site not in sites and len(sites) < placement.min_sites:
            sites.add(site)
            cost += float(placement.price[option])
            placed += 1
    for option in by_price:
        extra = min(int(room[option]) - 1, placement.replicas - placed)
        cost += extra * float(placement.price[option])
        placed += extra
    return cost
