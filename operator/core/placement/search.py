"""One deployment's best placement on given free GPUs, by local search over sets of pools.

The fallback of the ``fast`` solver for deployments the candidate table serves badly (for example
one needing more than three sites to reach all its traffic regions). A steepest-descent local
search over sets of GPU pools (at most one per site) starts from the empty set and applies the best
of three moves — add a pool, drop one, swap one for another — until no move improves the score.
The score is the objective plus a large penalty per unit of infeasibility (sites missing towards
minSites, uncovered traffic regions, replicas without room, budget overrun), so the search first
becomes feasible, then good. Given a set, replicas go one per site and the rest to the cheapest
pools with room: the cheapest spread, and the only thing the spread affects, because latency
depends on the set alone.
"""

from __future__ import annotations

import math

import numpy as np

from soberana.operator.core.placement.arrays import FloatArray, IntArray
from soberana.operator.core.placement.constraints import Assignment, budget
from soberana.operator.core.placement.problem import Demand

_INFEASIBILITY_WEIGHT = 1e6
_MAX_MOVES = 64
RELATIVE_TOLERANCE = 1e-9
"""Relative differences of objectives smaller than this are rounding noise, not gains."""


def best_assignment(
    demand: Demand, free: IntArray, tolls: FloatArray | None = None
) -> Assignment | None:
    """The best placement the local search finds on ``free`` capacity (units, then memory, by
    pool), if any is feasible.

    ``tolls`` (objective per unit of each entry of ``free``) are charged on top of the objective
    while searching.
    """
    room = demand.room(free)
    room[demand.keep_only] = 0
    price = demand.price
    if tolls is not None:
        charge = tolls[demand.pool] * demand.gpus
        if demand.memory:
            charge = charge + tolls[demand.memory_row] * demand.memory
        price = price + charge / demand.cost_weight
    chosen = _search(demand, room, price)
    if not chosen:
        return None
    assignment = _spread(demand, chosen, room, price)
    return assignment if assignment is not None and demand.admits(assignment) else None


def _search(demand: Demand, room: IntArray, price: FloatArray) -> list[int]:
    usable = np.flatnonzero(room > 0)
    chosen: list[int] = []
    score = math.inf
    for _ in range(_MAX_MOVES):
        moves = []
        if len(chosen) < demand.replicas:  # add a pool
            moves.append(_best_addition(demand, room, price, usable, chosen))
        # With one pool chosen, a swap would redo the first step, which found the best pool.
        for index in range(len(chosen) if len(chosen) > 1 else 0):
            rest = chosen[:index] + chosen[index + 1 :]
            moves.append(_best_addition(demand, room, price, usable, rest))  # swap one pool
            if len(rest) >= demand.min_sites:  # drop one pool (fewer sites can only be worse)
                moves.append((_score_of(demand, room, price, rest), rest))
        best_score, best_set = min(moves, key=lambda move: move[0], default=(math.inf, chosen))
        if not better(best_score, score):
            break
        chosen, score = sorted(best_set), best_score
    return chosen


def _best_addition(
    demand: Demand, room: IntArray, price: FloatArray, usable: IntArray, base: list[int]
) -> tuple[float, list[int]]:
    """The best set of ``base`` plus one pool at another site, with its score."""
    candidates = usable
    for taken in demand.site[base]:
        candidates = candidates[demand.site[candidates] != taken]
    if not candidates.size:
        return math.inf, base
    scores = _scores_with(demand, room, price, base, candidates)
    best = int(np.argmin(scores))
    return float(scores[best]), [*base, int(candidates[best])]


def _score_of(demand: Demand, room: IntArray, price: FloatArray, chosen: list[int]) -> float:
    return float(_scores_with(demand, room, price, chosen[:-1], np.array(chosen[-1:]))[0])


def _scores_with(
    demand: Demand, room: IntArray, price: FloatArray, base: list[int], candidates: IntArray
) -> FloatArray:
    """The score of ``base`` plus each candidate pool, vectorised over the candidates."""
    sites = len(base) + 1
    replicas = demand.replicas
    if sites > replicas:
        return np.full(candidates.size, math.inf)
    candidate_price = price[candidates]
    # Cost: one replica per pool, the rest to the cheapest spare slots of base and candidate.
    rest = replicas - sites
    if base:
        spare = np.sort(np.repeat(price[base], room[base] - 1))
        cumulative = np.concatenate(([0.0], np.cumsum(spare)))
        cheaper_in_base = np.minimum(np.searchsorted(spare, candidate_price, side="right"), rest)
        on_candidate = np.minimum(room[candidates] - 1, rest - cheaper_in_base)
        on_base = rest - on_candidate
        shortfall = np.maximum(on_base - spare.size, 0)
        cost = (
            price[base].sum()
            + candidate_price * (1 + on_candidate)
            + cumulative[np.minimum(on_base, spare.size)]
        )
    else:
        on_candidate = np.minimum(room[candidates] - 1, rest)
        shortfall = rest - on_candidate
        cost = candidate_price * (1 + on_candidate)
    # Latency: each region to its nearest pool; uncovered regions count as infeasible.
    if demand.weights.size:
        nearest = (
            demand.reach[:, base].min(axis=1) if base else np.full(demand.weights.size, np.inf)
        )
        trips = np.minimum(nearest[:, None], demand.reach[:, candidates])
        covered = np.isfinite(trips)
        uncovered = (~covered).sum(axis=0)
        latency = demand.weights @ np.where(covered, trips, 0.0)
    else:
        uncovered = np.zeros(candidates.size, dtype=np.int64)
        latency = np.zeros(candidates.size)
    over_budget = budget.overrun(cost, demand.budget)
    infeasibility = max(demand.min_sites - sites, 0) + uncovered + shortfall + over_budget
    objective = demand.cost_weight * cost + demand.latency_weight * latency
    scores: FloatArray = _INFEASIBILITY_WEIGHT * infeasibility + objective
    return scores


def _spread(
    demand: Demand, chosen: list[int], room: IntArray, price: FloatArray
) -> Assignment | None:
    """One replica per chosen pool, the rest on the cheapest pools with room; None if too few."""
    counts = dict.fromkeys(chosen, 1)
    rest = demand.replicas - len(chosen)
    for option in sorted(chosen, key=lambda option: (price[option], option)):
        extra = min(int(room[option]) - 1, rest)
        counts[option] += extra
        rest -= extra
    if rest:
        return None
    return tuple(sorted(counts.items()))


def better(score: float, than: float) -> bool:
    """Strictly lower, by more than rounding noise."""
    return score < than - RELATIVE_TOLERANCE * max(1.0, abs(than) if math.isfinite(than) else 1.0)
