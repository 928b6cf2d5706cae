"""The ``fast`` solver: greedy in contention order, then pairwise exchanges.

Three passes share one ledger of free GPUs per pool:

1. In contention order, each deployment takes its best placement on what those before it left.
   Running deployments whose placement is still compliant reserve it first, and each moves only
   when the best alternative beats it by more than the stability penalty. New placements are
   searched with a toll on each contested pool, one that more deployments want for their *ideal*
   placement (their best on an empty world) than it holds: the toll is the regret per GPU of the
   best bid the pool cannot hold, a deployment's regret being what it loses by taking its next
   best placement instead of its ideal. Deployments with little to lose so look elsewhere first,
   and leave contested pools to those that need them.
2. Exchanges undo what that order cost. The deployments still unplaced, then those placed more
   than 10 % worse than their ideal, most harmed first, are visited. For each, a few deployments
   holding a pool of its ideal, the most flexible first (most eligible sites), are tried one at a
   time as partners: both are released, the harmed one places first, the partner second (or back
   where it was, if that is better), and the exchange stays only if both are placed and, unless
   the harmed one was unplaced, their objectives together drop.
3. In contention order, each deployment moves into free GPUs if that is better for it, and those
   still unplaced get another try.

No pass unplaces a deployment an earlier one placed, so the contention order decides who gets
capacity first.

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
from collections import defaultdict

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
_PARTNERS = 4
_WORTH_EXCHANGING = 0.1
_NO_ALTERNATIVE = 1e3
_RELATIVE_TOLERANCE = 1e-9
_ROUNDS = 4


def solve_fast(problem: Problem) -> Solution:
    """Place every deployment it can in contention order, then exchange and settle until stable.

    Passes 2 and 3 repeat (a few rounds at most) until neither changes anything, so that planning
    the result again, as the running state, finds nothing worth moving either. An exchange that
    failed is not tried again while both deployments stay where they are.
    """
    ideals = {
        demand.key: ideal
        for demand in problem.demands
        if demand.options and (ideal := best_assignment(demand, problem.capacity)) is not None
    }
    tolls = _tolls(problem, ideals)
    ledger = _Ledger(problem.capacity.copy())
    _place_in_order(problem, ledger, tolls)
    for _ in range(_ROUNDS):
        exchanged = _exchange(problem, ledger, ideals)
        if not _settle(problem, ledger, ideals, tolls) and not exchanged:
            break
    return ledger.solution


class _Ledger:
    """Free GPUs per pool, each placed deployment's assignment, who holds each pool, and the
    exchanges that failed."""

    def __init__(self, free: IntArray) -> None:
        self.free = free
        self.solution: Solution = {}
        self.holders: defaultdict[int, set[str]] = defaultdict(set)
        # exchanges tried in vain: (harmed, its assignment, partner, its assignment)
        self.failed: set[tuple[str, Assignment | None, str, Assignment]] = set()

    def take(self, demand: Demand, assignment: Assignment) -> None:
        for option, replicas in assignment:
            self.free[demand.pool[option]] -= replicas * demand.gpus
            self.holders[int(demand.pool[option])].add(demand.key)
        self.solution[demand.key] = assignment

    def take_best(self, demand: Demand) -> Assignment | None:
        """Place ``demand`` as well as the free GPUs allow; None, taking nothing, if they do not."""
        chosen = best_assignment(demand, self.free)
        if chosen is not None:
            self.take(demand, chosen)
        return chosen

    def release(self, demand: Demand) -> Assignment | None:
        assignment = self.solution.pop(demand.key, None)
        for option, replicas in assignment or ():
            self.free[demand.pool[option]] += replicas * demand.gpus
            self.holders[int(demand.pool[option])].discard(demand.key)
        return assignment

    def fits(self, demand: Demand, assignment: Assignment) -> bool:
        return all(
            self.free[demand.pool[option]] >= replicas * demand.gpus
            for option, replicas in assignment
        )


def _place_in_order(problem: Problem, ledger: _Ledger, tolls: FloatArray) -> None:
    kept: dict[str, Assignment] = {}
    for demand in problem.demands:
        if demand.current is not None and ledger.fits(demand, demand.current):
            ledger.take(demand, demand.current)
            kept[demand.key] = demand.current
    for demand in problem.demands:
        current = kept.get(demand.key)
        if current is None:
            _place_new(ledger, demand, tolls)
            continue
        ledger.release(demand)
        chosen = best_assignment(demand, ledger.free)
        better = chosen is not None and _better(
            problem.value(demand, chosen), problem.value(demand, current)
        )
        ledger.take(demand, chosen if chosen is not None and better else current)


def _place_new(ledger: _Ledger, demand: Demand, tolls: FloatArray) -> bool:
    """Place an unplaced deployment, searching with tolls first; whether it was placed."""
    chosen = best_assignment(demand, ledger.free, tolls) or best_assignment(demand, ledger.free)
    if chosen is not None:
        ledger.take(demand, chosen)
    return chosen is not None


def _tolls(problem: Problem, ideals: dict[str, Assignment]) -> FloatArray:
    """A price per GPU on each pool that more deployments want, ideally, than it can hold.

    Each deployment bids on the pools of its ideal placement what it would lose by taking its
    next best instead (its regret); a pool's toll is the regret per GPU of the best bid it cannot
    hold, so that deployments with less to lose look elsewhere first.
    """
    bids: dict[int, list[tuple[float, int]]] = {}
    for demand in problem.demands:
        ideal = ideals.get(demand.key)
        if ideal is None:
            continue
        blocked = problem.capacity.copy()
        blocked[demand.pool[[option for option, _ in ideal]]] = 0
        second = best_assignment(demand, blocked)
        regret = (
            problem.value(demand, second) - problem.value(demand, ideal)
            if second is not None
            else _NO_ALTERNATIVE
        )
        for option, replicas in ideal:
            gpus = replicas * demand.gpus
            bids.setdefault(int(demand.pool[option]), []).append((regret / gpus, gpus))
    tolls = np.zeros(len(problem.pools))
    for pool, offers in bids.items():
        room = int(problem.capacity[pool])
        for per_gpu, gpus in sorted(offers, reverse=True):
            if gpus > room:
                tolls[pool] = per_gpu
                break
            room -= gpus
    return tolls


def _exchange(problem: Problem, ledger: _Ledger, ideals: dict[str, Assignment]) -> bool:
    """Pass 2; whether any exchange was made."""
    exchanged = False
    by_key = {demand.key: demand for demand in problem.demands}
    unplaced = [
        demand
        for demand in problem.demands
        if demand.key in ideals and demand.key not in ledger.solution
    ]
    harmed = sorted(
        (
            demand
            for demand in problem.demands
            if demand.key in ledger.solution
            and demand.key in ideals  # none when it can only keep its place on a cordoned site
            and _loss(problem, ledger, demand, ideals)
            > _WORTH_EXCHANGING * problem.value(demand, ideals[demand.key])
        ),
        key=lambda demand: (-_loss(problem, ledger, demand, ideals), demand.rank),
    )
    for demand in [*unplaced, *harmed]:
        wanted = {int(demand.pool[option]) for option, _ in ideals[demand.key]}
        partners = sorted(
            {key for pool in wanted for key in ledger.holders[pool]} - {demand.key},
            key=lambda key: (-len(by_key[key].by_site), by_key[key].rank),
        )
        for key in partners[:_PARTNERS]:
            if demand.key in ledger.solution and _loss(problem, ledger, demand, ideals) == 0:
                break
            attempt = (demand.key, ledger.solution.get(demand.key), key, ledger.solution[key])
            if attempt in ledger.failed:
                continue
            if _try_exchange(problem, ledger, demand, by_key[key]):
                exchanged = True
                break
            ledger.failed.add(attempt)
    return exchanged


def _loss(
    problem: Problem, ledger: _Ledger, demand: Demand, ideals: dict[str, Assignment]
) -> float:
    """How much worse the placed ``demand`` is than on an empty world (its ideal); 0 if not."""
    ideal, held = ideals.get(demand.key), ledger.solution[demand.key]
    if ideal is None or not _better(problem.value(demand, ideal), problem.value(demand, held)):
        return 0.0
    return problem.value(demand, held) - problem.value(demand, ideal)


def _try_exchange(problem: Problem, ledger: _Ledger, harmed: Demand, partner: Demand) -> bool:
    """Re-place ``harmed`` then ``partner``; keep that if both fit and it pays.

    It pays when ``harmed`` was unplaced, or when their objectives together drop.
    """
    old = {harmed.key: ledger.release(harmed), partner.key: ledger.release(partner)}
    before = sum(
        problem.value(demand, assignment)
        for demand, assignment in ((harmed, old[harmed.key]), (partner, old[partner.key]))
        if assignment is not None
    )
    first = ledger.take_best(harmed)
    second = _best_or_back(problem, ledger, partner, old[partner.key]) if first else None
    if (
        first is not None
        and second is not None
        and (
            old[harmed.key] is None
            or _better(problem.value(harmed, first) + problem.value(partner, second), before)
        )
    ):
        return True
    ledger.release(harmed)
    ledger.release(partner)
    for demand in (harmed, partner):
        assignment = old[demand.key]
        if assignment is not None:
            ledger.take(demand, assignment)
    return False


def _best_or_back(
    problem: Problem, ledger: _Ledger, demand: Demand, previous: Assignment | None
) -> Assignment | None:
    """Place ``demand`` at its best, or back at ``previous`` if that still fits and is no worse."""
    chosen = best_assignment(demand, ledger.free)
    if (
        previous is not None
        and ledger.fits(demand, previous)
        and (
            chosen is None
            or not _better(problem.value(demand, chosen), problem.value(demand, previous))
        )
    ):
        chosen = previous
    if chosen is not None:
        ledger.take(demand, chosen)
    return chosen


def _settle(
    problem: Problem, ledger: _Ledger, ideals: dict[str, Assignment], tolls: FloatArray
) -> bool:
    """Pass 3; whether anything moved or was placed."""
    settled = False
    for demand in problem.demands:
        if demand.key not in ledger.solution:
            settled |= bool(demand.options) and _place_new(ledger, demand, tolls)
            continue
        if _loss(problem, ledger, demand, ideals) == 0:
            continue  # as good as on an empty world
        held = ledger.solution[demand.key]
        ledger.release(demand)
        chosen = best_assignment(demand, ledger.free)
        if chosen is not None and _better(
            problem.value(demand, chosen), problem.value(demand, held)
        ):
            ledger.take(demand, chosen)
            settled = True
        else:
            ledger.take(demand, held)
    return settled


def best_assignment(
    demand: Demand, free: IntArray, tolls: FloatArray | None = None
) -> Assignment | None:
    """The best placement the local search finds on ``free`` GPUs per pool, if any is feasible.

    ``tolls`` (objective per GPU, by pool) are charged on top of the objective while searching.
    """
    room = np.minimum(free[demand.pool] // demand.gpus, demand.replicas)
    room[demand.keep_only] = 0
    price = demand.price
    if tolls is not None:
        price = price + tolls[demand.pool] * demand.gpus / demand.cost_weight
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
        if not _better(best_score, score):
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
    over_budget = (
        np.maximum(cost - demand.budget, 0.0) / max(demand.budget, 1e-9)
        if math.isfinite(demand.budget)
        else 0.0
    )
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


def _better(score: float, than: float) -> bool:
    """Strictly lower, by more than rounding noise."""
    return score < than - _RELATIVE_TOLERANCE * max(1.0, abs(than) if math.isfinite(than) else 1.0)
