"""The ``fast`` solver: prices from a linear relaxation, then greedy placement and local repair.

1. Candidates. Every deployment's plausible placements become rows of one table, scored in bulk
   with numpy (:mod:`~soberana.operator.core.placement.candidates`).
2. Seed. In contention order, each deployment takes the first of its best rows that still fits
   (rows rescored on the free GPUs batch by batch when none does): a feasible solution, quickly,
   for the relaxation to start from.
3. Prices. Column generation over the table solves the LP relaxation of the whole problem (see
   :mod:`~soberana.operator.core.placement.relaxation`): a price per GPU of each pool (*toll*),
   what its capacity is worth, and, per deployment, the placements the LP mixes. The LP is
   nearly integral: most deployments get one placement whole.
4. Placement, in contention order. Running deployments whose placement is still compliant reserve
   it first, and each moves only when the alternative beats it by more than the stability
   penalty. Then the deployments the LP splits take the heaviest of its placements that fits,
   and those it places whole take theirs if it fits, or the other way round: both orders are
   tried, each followed by step 5's first moves, and the result that places more deployments, or
   the same with the lower objective, goes on. Every deployment left takes its best placement
   under the tolls on what is free, so that those with little to lose leave contested pools to
   those that need them. A deployment whose table rows all fail is searched for one by one
   (:mod:`~soberana.operator.core.placement.search`).
5. Repair. Each deployment moves into free GPUs when that is better for it: all are scored at
   once, the moves made best gain first, over and over until none is left. Then the deployments
   still unplaced, and those placed more than 10 % worse than they hoped for (the best of their
   LP placements and their best on empty pools), most harmed first, try to take such a placement
   by moving the deployments in its way (a few, the most flexible first) to their best placements
   elsewhere: that stays only if every one of them is placed and, unless the harmed one was
   unplaced, their objectives together drop. The moves into free GPUs follow once more.

6. Rearrangement. For the 16 most harmed deployments (as in step 5), each with the deployments
   holding the pools it hoped for (up to 32 in all, earliest in contention order first), HiGHS's
   MILP chooses again among their columns of step 3 and where they are now, within the GPUs the
   others leave free (:func:`~soberana.operator.core.placement.relaxation.rearrange`). The new
   choice stays if it unplaces none of them and places more, or lowers their objective; the moves
   into free GPUs of step 5 follow.

No step unplaces a deployment an earlier one placed. All of it is deterministic: HiGHS too (its
MILP runs to a node limit, never a time limit).

How close the result comes to the MILP's best solution, on the benchmark worlds and on small,
crowded ones, is in bench/RESULTS.md (``bench/bench_placement.py`` measures it).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np

from soberana.operator.core.placement.arrays import BoolArray, FloatArray, IntArray
from soberana.operator.core.placement.candidates import Candidates, Scored, build
from soberana.operator.core.placement.constraints import Assignment
from soberana.operator.core.placement.problem import DRAIN_PENALTY, Demand, Problem, Solution
from soberana.operator.core.placement.relaxation import Prices, rearrange, relax
from soberana.operator.core.placement.search import RELATIVE_TOLERANCE, best_assignment, better

_FIRST_COLUMNS = 5  # each deployment's best rows on empty pools that start the relaxation
_BATCH = 32  # deployments scored together in the greedy passes
_FIT_ROWS = 8  # rows per deployment tried in a batch before it is scored alone
_SHORTLIST = 24  # the seed's retries score each deployment's best rows on empty pools only
_SEED_ROUNDS = 2
_SETTLE_ROUNDS = 4
_WORTH_EXCHANGING = 0.1
_HARMED = 32
_TARGETS = 2
_PARTNERS = 4
_GROUPS = 16  # groups rearranged by MILP
_GROUP = 32  # deployments in a group


def solve_fast(problem: Problem) -> Solution:
    """Place every deployment it can; see the module's description.

    GPU and CPU-only deployments never share a pool, so in a world with both the kinds are also
    solved each on its own, and the better of the two solutions (more placed, else the lower
    objective) is kept: the shared pricing helps on some worlds and hinders on others.
    """
    joint = _solve(problem)
    kinds = [
        tuple(demand for demand in problem.demands if demand.cpu_only is cpu)
        for cpu in (False, True)
    ]
    if not all(kinds):
        return joint
    apart = {
        key: assignment
        for demands in kinds
        for key, assignment in _solve(replace(problem, demands=demands)).items()
    }
    return min((joint, apart), key=lambda solution: (-len(solution), problem.score(solution)))


def _solve(problem: Problem) -> Solution:
    table = build(problem)
    if not table.demands:
        return {}
    penalties = np.array([problem.penalty(demand, ()) for demand in table.demands])
    scored = table.score(problem.capacity)
    first = table.best(scored, _FIT_ROWS)
    seed = _seed(problem, table, scored, first)
    prices = relax(problem, table, penalties, seed, scored, first[:, :_FIRST_COLUMNS])
    floor = scored.value + penalties[table.row_owner]
    ideals = _ideals(table, scored, first[:, 0], penalties)
    ledgers = []
    for whole_first in (False, True):
        ledger = _Ledger(problem, table, penalties)
        _place(problem, ledger, prices, whole_first=whole_first)
        _settle(ledger, floor)
        ledgers.append(ledger)
    ledger = min(
        ledgers, key=lambda ledger: (-len(ledger.solution), problem.score(ledger.solution))
    )
    if _exchange(problem, ledger, prices, ideals):
        _settle(ledger, floor)
    if _rearrange(problem, ledger, prices, ideals):
        _settle(ledger, floor)
    return ledger.solution


class _Ledger:
    """Free capacity (units, then memory, by pool), the placed deployments' assignments, and what
    each holds where (units per table option)."""

    def __init__(self, problem: Problem, table: Candidates, penalties: FloatArray) -> None:
        self.problem = problem
        self.table = table
        self.penalties = penalties
        self.free = problem.capacity.copy()
        self.solution: Solution = {}
        self.owners = {demand.key: owner for owner, demand in enumerate(table.demands)}
        self.own = np.zeros(table.owner.size, dtype=np.int64)  # GPUs held, per table option
        self.holders: defaultdict[int, set[str]] = defaultdict(set)
        self.current = np.zeros(table.owner.size, dtype=np.int64)  # the running placements
        self.running = np.zeros(len(table.demands), dtype=np.bool_)
        self.staying = np.zeros(len(table.demands))  # what keeping the running placement costs
        for owner, demand in enumerate(table.demands):
            if demand.current is not None:
                self.running[owner] = True
                self.staying[owner] = DRAIN_PENALTY if demand.draining else 0.0
                for option, replicas in demand.current:
                    self.current[table.option_start[owner] + option] = replicas * demand.gpus

    def take(self, demand: Demand, assignment: Assignment) -> None:
        start = self.table.option_start[self.owners[demand.key]]
        demand.take(self.free, assignment)
        for option, replicas in assignment:
            self.own[start + option] += replicas * demand.gpus
            self.holders[int(demand.pool[option])].add(demand.key)
        self.solution[demand.key] = assignment

    def release(self, demand: Demand) -> Assignment | None:
        assignment = self.solution.pop(demand.key, None)
        start = self.table.option_start[self.owners[demand.key]]
        demand.take(self.free, assignment or (), sign=1)
        for option, replicas in assignment or ():
            self.own[start + option] -= replicas * demand.gpus
            self.holders[int(demand.pool[option])].discard(demand.key)
        return assignment

    def fits(self, demand: Demand, assignment: Assignment) -> bool:
        return demand.fits(self.free, assignment)

    def keep_better(
        self, demand: Demand, chosen: Assignment | None, held: Assignment | None
    ) -> None:
        """Take ``chosen`` unless ``held`` (just released) is at least as good."""
        if chosen is None or (
            held is not None
            and chosen != held
            and not better(self.problem.value(demand, chosen), self.problem.value(demand, held))
        ):
            chosen = held
        if chosen is not None:
            self.take(demand, chosen)

    def values(self) -> FloatArray:
        """Each table deployment's objective plus stability penalty as placed; inf if unplaced."""
        table = self.table
        starts = table.option_start[:-1]
        counts = self.own[:-1] // table.gpus[:-1]
        held = counts > 0
        cost = np.add.reduceat(counts * table.unit[:-1], starts)
        trips = np.minimum.reduceat(np.where(held[:, None], table.trips[:-1], np.inf), starts)
        trips[table.weights == 0] = 0.0
        latency = (table.weights * trips).sum(axis=1) * table.latency_weight
        moved = np.logical_or.reduceat(self.own[:-1] != self.current[:-1], starts)
        penalty = np.where(self.running & ~moved, self.staying, self.penalties)
        placed = np.logical_or.reduceat(held, starts)
        values: FloatArray = np.where(placed, cost + latency + penalty, np.inf)
        return values

    def score(
        self, demands: list[Demand], tolls: FloatArray | None, among: BoolArray | None = None
    ) -> tuple[Scored, IntArray]:
        """The rows of ``demands`` (``among`` these only) scored on the free GPUs and their own:
        their best rows."""
        owners = np.sort([self.owners[demand.key] for demand in demands])
        rows = self.table.rows_of(owners)
        if among is not None:
            rows = rows[among[rows]]
        scored = self.table.score(self.free, tolls, self.own, rows)
        return scored, self.table.best(scored, _FIT_ROWS)

    def first_fit(self, demand: Demand, scored: Scored, best: IntArray) -> Assignment | None:
        """The first of ``demand``'s best rows in ``scored`` that fits the free GPUs now."""
        rows = best[self.owners[demand.key]]
        rows = rows[rows >= 0]
        members = scored.members[rows]
        table = self.table
        gpus = scored.counts[rows] * table.gpus[members]
        fit = ((members < 0) | (gpus <= self.free[table.pool[members]])).all(axis=1)
        if demand.memory:
            memory = scored.counts[rows] * table.memory[members]
            fit &= ((members < 0) | (memory <= self.free[table.pools + table.pool[members]])).all(
                axis=1
            )
        if not fit.any():
            return None
        row = int(rows[int(np.argmax(fit))])
        return self.table.assignment(scored.members[row], scored.counts[row])

    def best(self, demand: Demand, tolls: FloatArray | None) -> Assignment | None:
        """``demand``'s best placement on the free GPUs (it holds none): its best table row, or
        else the search's."""
        room = demand.room(self.free)
        if int(room[~demand.keep_only].sum()) < demand.replicas:
            return None  # not enough free GPUs anywhere it may go
        scored, best = self.score([demand], tolls)
        row = int(best[self.owners[demand.key], 0])
        if row >= 0:
            return self.table.assignment(scored.members[row], scored.counts[row])
        return best_assignment(demand, self.free, tolls) or best_assignment(demand, self.free)


def _seed(problem: Problem, table: Candidates, scored: Scored, first: IntArray) -> Solution:
    """A feasible solution, quickly: the relaxation's first columns.

    In contention order, each deployment takes the first of its best rows on empty pools that
    still fits. Those that find none try again, twice, batch by batch, with their rows scored on
    the GPUs free at the start of the batch; the last ones left are placed one by one.
    """
    ledger = _Ledger(problem, table, np.zeros(len(table.demands)))
    order = np.lexsort((scored.value, table.row_owner))
    rank = np.empty(table.rows, dtype=np.int64)
    rank[order] = np.arange(table.rows) - table.row_start[table.row_owner[order]]
    shortlist = rank < _SHORTLIST
    waiting = []
    for demand in problem.demands:
        owner = ledger.owners.get(demand.key)
        if owner is None or first[owner, 0] < 0:
            continue
        chosen = ledger.first_fit(demand, scored, first)
        if chosen is None:
            waiting.append(demand)
        else:
            ledger.take(demand, chosen)
    for _ in range(_SEED_ROUNDS):
        pending, waiting = waiting, []
        for start in range(0, len(pending), _BATCH):
            batch = pending[start : start + _BATCH]
            scored, best = ledger.score(batch, None, shortlist)
            for demand in batch:
                chosen = ledger.first_fit(demand, scored, best)
                if chosen is None:
                    waiting.append(demand)
                else:
                    ledger.take(demand, chosen)
    for demand in waiting:
        chosen = ledger.best(demand, None)
        if chosen is not None:
            ledger.take(demand, chosen)
    return ledger.solution


def _place(problem: Problem, ledger: _Ledger, prices: Prices, *, whole_first: bool) -> None:
    """Step 4: the placement in contention order, the LP's whole choices first or second."""
    for demand in problem.demands:
        if demand.current is not None and ledger.fits(demand, demand.current):
            ledger.take(demand, demand.current)
    pending = [demand for demand in problem.demands if demand.key in ledger.owners]
    for whole in (whole_first, not whole_first):
        left = []
        for demand in pending:
            support = prices.support.get(demand.key, ())
            if not support or (demand.key in prices.whole) != whole:
                left.append(demand)
                continue
            held = ledger.release(demand)
            chosen = next((option for option, _ in support if ledger.fits(demand, option)), None)
            if chosen is None:
                if held is not None:
                    ledger.take(demand, held)
                left.append(demand)
            else:
                ledger.keep_better(demand, chosen, held)
        pending = left
    for start in range(0, len(pending), _BATCH):
        batch = pending[start : start + _BATCH]
        scored, best = ledger.score(batch, prices.tolls)
        for demand in batch:
            held = ledger.release(demand)
            chosen = ledger.first_fit(demand, scored, best) or ledger.best(demand, prices.tolls)
            ledger.keep_better(demand, chosen, held)


def _settle(ledger: _Ledger, floor: FloatArray) -> None:
    """Move deployments, one at a time, into free GPUs where that is better for them.

    ``floor`` bounds each row's value from below (its value on empty pools, plus the stability
    penalty): rows that cannot beat their deployment's value are not scored.
    """
    table = ledger.table
    for _ in range(_SETTLE_ROUNDS):
        values = ledger.values()
        rows = np.flatnonzero(floor < values[table.row_owner] * (1 - RELATIVE_TOLERANCE))
        if not rows.size:
            return
        scored = table.score(ledger.free, None, ledger.own, rows)
        best = table.best(scored)[:, 0]
        owners = np.flatnonzero(best >= 0)
        value = table.objective(scored.members[best[owners]], scored.counts[best[owners]])
        gain = values[owners] - (value + ledger.penalties[owners])
        worth = gain > RELATIVE_TOLERANCE * np.maximum(1.0, value)
        moved = False
        for _, _, owner in sorted(
            zip(
                (-gain[worth]).tolist(),
                (table.demands[owner].rank for owner in owners[worth]),
                owners[worth].tolist(),
                strict=True,
            )
        ):
            demand = table.demands[owner]
            row = int(best[owner])
            assignment = table.assignment(scored.members[row], scored.counts[row])
            held = ledger.release(demand)
            if ledger.fits(demand, assignment) and (
                held is None
                or better(
                    ledger.problem.value(demand, assignment), ledger.problem.value(demand, held)
                )
            ):
                ledger.take(demand, assignment)
                moved = True
            elif held is not None:
                ledger.take(demand, held)
        if not moved:
            return


def _ideals(
    table: Candidates, scored: Scored, first: IntArray, penalties: FloatArray
) -> dict[str, tuple[Assignment, float]]:
    """Each table deployment's best row on empty pools, with its value."""
    owners = np.flatnonzero(first >= 0)
    rows = first[owners]
    values = table.objective(scored.members[rows], scored.counts[rows]) + penalties[owners]
    return {
        table.demands[owner].key: (
            table.assignment(scored.members[row], scored.counts[row]),
            float(value),
        )
        for owner, row, value in zip(owners.tolist(), rows.tolist(), values.tolist(), strict=True)
    }


def _harmed(
    problem: Problem,
    ledger: _Ledger,
    prices: Prices,
    ideals: dict[str, tuple[Assignment, float]],
) -> tuple[list[Demand], dict[str, list[Assignment]]]:
    """The deployments still unplaced in contention order, then those placed more than 10 %
    worse than they hoped for, most harmed first; and what each hopes for, best first: its LP
    placements and its best on empty pools."""
    by_key = {demand.key: demand for demand in problem.demands}
    targets: dict[str, list[Assignment]] = {}
    hoped: dict[str, float] = {}
    for key in ledger.owners:
        wanted = [*prices.support.get(key, ()), *([ideals[key]] if key in ideals else [])]
        if wanted:
            targets[key] = list(dict.fromkeys(option for option, _ in wanted))[:_TARGETS]
            hoped[key] = min(value for _, value in wanted)
    values = ledger.values()
    losses = {
        key: float(values[ledger.owners[key]]) - hoped[key] if key in ledger.solution else np.inf
        for key in targets
    }
    harmed = sorted(
        (
            by_key[key]
            for key, loss in losses.items()
            if loss > _WORTH_EXCHANGING * max(hoped[key], RELATIVE_TOLERANCE)
        ),
        key=lambda demand: (-losses[demand.key], demand.rank),
    )
    return harmed[:_HARMED], targets


def _exchange(
    problem: Problem,
    ledger: _Ledger,
    prices: Prices,
    ideals: dict[str, tuple[Assignment, float]],
) -> bool:
    """Step 5's exchanges; whether any was made."""
    by_key = {demand.key: demand for demand in problem.demands}
    harmed, targets = _harmed(problem, ledger, prices, ideals)
    exchanged = False
    for demand in harmed:
        for target in targets[demand.key]:
            if _try_exchange(problem, ledger, demand, target, by_key):
                exchanged = True
                break
    return exchanged


def _rearrange(
    problem: Problem,
    ledger: _Ledger,
    prices: Prices,
    ideals: dict[str, tuple[Assignment, float]],
) -> bool:
    """Step 6; whether any group was rearranged."""
    table = ledger.table
    prices.columns.add_assignments(
        [(ledger.owners[key], assignment) for key, assignment in ledger.solution.items()]
    )
    by_key = {demand.key: demand for demand in problem.demands}
    harmed, targets = _harmed(problem, ledger, prices, ideals)
    done: set[str] = set()
    improved = False
    for demand in harmed[:_GROUPS]:
        if demand.key in done:
            continue
        pools = {int(demand.pool[option]) for target in targets[demand.key] for option, _ in target}
        others = sorted(
            {key for pool in pools for key in ledger.holders[pool]} - {demand.key},
            key=lambda key: by_key[key].rank,
        )
        group = [demand, *(by_key[key] for key in others[: _GROUP - 1])]
        done.update(member.key for member in group)
        held = {member.key: ledger.release(member) for member in group}
        before = sum(
            problem.value(member, assignment)
            for member in group
            if (assignment := held[member.key]) is not None
        )
        owners = np.sort([ledger.owners[member.key] for member in group])
        chosen = rearrange(prices, owners, ledger.free) or []
        placed = {table.demands[owner].key for owner, _ in chosen}
        after = sum(problem.value(table.demands[owner], assignment) for owner, assignment in chosen)
        if placed >= {key for key, assignment in held.items() if assignment is not None} and (
            len(placed) > sum(assignment is not None for assignment in held.values())
            or better(after, before)
        ):
            for owner, assignment in chosen:
                ledger.take(table.demands[owner], assignment)
            improved = True
            continue
        for member in group:
            assignment = held[member.key]
            if assignment is not None:
                ledger.take(member, assignment)
    return improved


def _try_exchange(
    problem: Problem,
    ledger: _Ledger,
    harmed: Demand,
    target: Assignment,
    by_key: dict[str, Demand],
) -> bool:
    """Move ``harmed`` to ``target``, and the deployments in its way (a few, the most flexible
    first) to their best placements or back where they were; keep that if every one of them is
    placed and it pays: ``harmed`` was unplaced, or their objectives together drop."""
    held = ledger.release(harmed)
    partners: list[Demand] = []
    for option, replicas in target:
        pool = int(harmed.pool[option])
        short = replicas * harmed.gpus - int(ledger.free[pool])
        holders = sorted(
            ledger.holders[pool] - {partner.key for partner in partners},
            key=lambda key: (-by_key[key].eligible_sites, by_key[key].rank),
        )
        for key in holders:
            if short <= 0:
                break
            partner = by_key[key]
            partners.append(partner)
            short -= sum(
                replicas * partner.gpus
                for option, replicas in ledger.solution[key]
                if partner.pool[option] == pool
            )
    if (
        not partners
        or len(partners) > _PARTNERS
        or not _feasible_after(ledger, harmed, target, partners)
    ):
        if held is not None:
            ledger.take(harmed, held)
        return False
    old = {partner.key: ledger.release(partner) for partner in partners}
    before = 0.0 if held is None else problem.value(harmed, held)
    for partner in partners:
        previous = old[partner.key]
        if previous is not None:
            before += problem.value(partner, previous)
    ledger.take(harmed, target)
    after = problem.value(harmed, target)
    placed = True
    for partner in sorted(partners, key=lambda partner: partner.rank):
        previous = old[partner.key]
        chosen = ledger.best(partner, None)
        if (
            previous is not None
            and ledger.fits(partner, previous)
            and (
                chosen is None
                or not better(problem.value(partner, chosen), problem.value(partner, previous))
            )
        ):
            chosen = previous
        if chosen is None:
            placed = False
            break
        ledger.take(partner, chosen)
        after += problem.value(partner, chosen)
    if placed and (held is None or better(after, before)):
        return True
    for demand in (harmed, *partners):
        ledger.release(demand)
    for partner in partners:
        previous = old[partner.key]
        if previous is not None:
            ledger.take(partner, previous)
    if held is not None:
        ledger.take(harmed, held)
    return False


def _feasible_after(
    ledger: _Ledger, harmed: Demand, target: Assignment, partners: list[Demand]
) -> bool:
    """Whether ``target`` fits once ``partners`` leave."""
    free = ledger.free.copy()
    for partner in partners:
        partner.take(free, ledger.solution[partner.key], sign=1)
    return harmed.fits(free, target)
