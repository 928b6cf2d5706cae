"""The ``fast`` solver: deployments one at a time in contention order, a local search for each.

Running deployments whose placement is still compliant first reserve it, in contention order.
Then each deployment, in that order, looks for its best placement on the capacity left by those
before it; a running one moves to it only when that beats its current placement by more than the
stability penalty.

For one deployment, a steepest-descent local search over sets of GPU pools (at most one per site)
starts from the empty set and applies the best of three moves — add a pool, drop one, swap one for
another — until no move improves the score. The score is the objective plus a large penalty per
unit of infeasibility (sites missing towards minSites, uncovered traffic regions, replicas without
room, budget overrun), so the search first becomes feasible, then good. Given a set, replicas go
one per site and the rest to the cheapest pools with room: the cheapest spread, and the only thing
the spread affects, because latency depends on the set alone.
"""

from __future__ import annotations

import math

import numpy as np

from soberana.operator.core.placement.problem import (
    Assignment,
    Demand,
    FloatArray,
    IntArray,
    Problem,
    Solution,
)

_INFEASIBILITY_WEIGHT = 1e6
_MAX_MOVES = 64
_RELATIVE_TOLERANCE = 1e-9


def solve_fast(problem: Problem) -> Solution:
    """Place every deployment it can, greedily in contention order."""
    free = problem.capacity.copy()
    reserved: Solution = {}
    for demand in problem.demands:
        if demand.current is not None and _fits(demand, demand.current, free):
            _allocate(demand, demand.current, free, sign=-1)
            reserved[demand.key] = demand.current
    solution: Solution = {}
    for demand in problem.demands:
        kept = reserved.get(demand.key)
        if kept is not None:
            _allocate(demand, kept, free, sign=+1)
        chosen = best_assignment(demand, free)
        if kept is not None and (
            chosen is None
            or not _better(
                demand.objective(chosen) + problem.penalty(demand, chosen),
                demand.objective(kept),
            )
        ):
            chosen = kept
        if chosen is not None:
            _allocate(demand, chosen, free, sign=-1)
            solution[demand.key] = chosen
    return solution


def best_assignment(demand: Demand, free: IntArray) -> Assignment | None:
    """The best placement the local search finds on ``free`` GPUs per pool, if any is feasible."""
    room = np.minimum(free[demand.pool] // demand.gpus, demand.replicas)
    room[demand.keep_only] = 0
    chosen = _search(demand, room)
    if not chosen:
        return None
    assignment = _spread(demand, chosen, room)
    return assignment if assignment is not None and demand.admits(assignment) else None


def _search(demand: Demand, room: IntArray) -> list[int]:
    usable = np.flatnonzero(room > 0)
    chosen: list[int] = []
    score = math.inf
    for _ in range(_MAX_MOVES):
        best_score, best_set = score, chosen
        # Each base plus one more pool: base == chosen is an "add", chosen minus one a "swap".
        bases = [chosen] + [chosen[:i] + chosen[i + 1 :] for i in range(len(chosen))]
        for number, base in enumerate(bases):
            candidates = usable[~np.isin(demand.site[usable], demand.site[base])]
            if candidates.size:
                scores = _scores_with(demand, room, base, candidates)
                best = int(np.argmin(scores))
                if _better(float(scores[best]), best_score):
                    best_score, best_set = float(scores[best]), [*base, int(candidates[best])]
            if number and base:  # a "drop"
                dropped = _scores_with(demand, room, base[:-1], np.array(base[-1:]))
                if _better(float(dropped[0]), best_score):
                    best_score, best_set = float(dropped[0]), base
        if best_set is chosen:
            break
        chosen, score = sorted(best_set), best_score
    return chosen


def _scores_with(
    demand: Demand, room: IntArray, base: list[int], candidates: IntArray
) -> FloatArray:
    """The score of ``base`` plus each candidate pool, vectorised over the candidates."""
    sites = len(base) + 1
    replicas = demand.replicas
    if sites > replicas:
        return np.full(candidates.size, math.inf)
    price, candidate_price = demand.price, demand.price[candidates]
    # Cost: one replica per pool, the rest to the cheapest spare slots of base and candidate.
    spare = np.sort(np.repeat(price[base], room[base] - 1))
    cumulative = np.concatenate(([0.0], np.cumsum(spare)))
    rest = replicas - sites
    cheaper_in_base = np.minimum(np.searchsorted(spare, candidate_price, side="right"), rest)
    on_candidate = np.minimum(room[candidates] - 1, rest - cheaper_in_base)
    on_base = rest - on_candidate
    shortfall = np.maximum(on_base - spare.size, 0)
    on_base = np.minimum(on_base, spare.size)
    cost = price[base].sum() + candidate_price * (1 + on_candidate) + cumulative[on_base]
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
    over_budget = (
        np.maximum(cost - demand.budget, 0.0) / max(demand.budget, 1e-9)
        if math.isfinite(demand.budget)
        else 0.0
    )
    infeasibility = max(demand.min_sites - sites, 0) + uncovered + shortfall + over_budget
    objective = demand.cost_weight * cost + demand.latency_weight * latency
    scores: FloatArray = _INFEASIBILITY_WEIGHT * infeasibility + objective
    return scores


def _spread(demand: Demand, chosen: list[int], room: IntArray) -> Assignment | None:
    """One replica per chosen pool, the rest on the cheapest pools with room; None if too few."""
    counts = dict.fromkeys(chosen, 1)
    rest = demand.replicas - len(chosen)
    for option in sorted(chosen, key=lambda option: (demand.price[option], option)):
        extra = min(int(room[option]) - 1, rest)
        counts[option] += extra
        rest -= extra
    if rest:
        return None
    return tuple(sorted(counts.items()))


def _fits(demand: Demand, assignment: Assignment, free: IntArray) -> bool:
    return all(
        free[demand.pool[option]] >= replicas * demand.gpus for option, replicas in assignment
    )


def _allocate(demand: Demand, assignment: Assignment, free: IntArray, *, sign: int) -> None:
    for option, replicas in assignment:
        free[demand.pool[option]] += sign * replicas * demand.gpus


def _better(score: float, than: float) -> bool:
    """Strictly lower, by more than rounding noise."""
    return score < than - _RELATIVE_TOLERANCE * max(1.0, abs(than) if math.isfinite(than) else 1.0)
