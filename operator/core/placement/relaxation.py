"""The linear relaxation behind the ``fast`` solver: GPU prices by column generation.

The master LP chooses for each deployment a mix of candidate placements (*columns*) or an
"unplaced" slack, so that the GPUs (or cores, and CPU pools' memory) taken fit every pool::

    minimise   sum_j value_j y_j  +  sum_d unplaced_d s_d
    such that  sum_{j of d} y_j + s_d = 1          for every deployment d
               sum_j gpus_{j,p} y_j <= capacity_p   for every entry p of the capacity,  y, s >= 0

``value_j`` is the placement's objective plus its stability penalty. ``unplaced_d`` is far above
any objective, in proportion to the deployment's GPUs and falling with its contention rank, so the
LP places all it can. The pool rows' duals are prices per GPU (*tolls*): what one more GPU of the
pool would save. For set-cover-with-capacity problems like this one the LP is tight and its
solution mostly whole: nearly every deployment gets a single column (bench/RESULTS.md has the
figures).

Columns start as the running placements, a feasible solution (the *seed*) and each deployment's
best rows of the candidate table (:mod:`~soberana.operator.core.placement.candidates`) on empty
pools. Then, round after round: the tolls are found by subgradient ascent of the LP's Lagrangian
dual over the columns so far (cheap: sparse products), and each deployment's best rows under them
join the columns where their reduced cost is negative. Rows whose value on empty pools already
exceeds their deployment's dual price are not scored. The rounds stop when the new columns could
lower the Lagrangian bound by less than 0.5 % (or after 8). Last, HiGHS solves the master LP over
every column, for its tolls and its solution: each deployment's columns by weight.

:func:`rearrange` solves the master problem as a MILP for a few deployments at a time, over their
columns and the GPUs left free by the others: the ``fast`` solver's last repair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp  # type: ignore[import-untyped]
from scipy.sparse import csc_array, csr_array, diags_array  # type: ignore[import-untyped]

from soberana.operator.core.placement.arrays import AnyIntArray, FloatArray, IntArray
from soberana.operator.core.placement.candidates import Candidates, Scored
from soberana.operator.core.placement.constraints import Assignment
from soberana.operator.core.placement.problem import DRAIN_PENALTY, Problem, Solution

UNPLACED = 1e4
"""What leaving a deployment out costs the LP, per GPU (times 1 to 2 by contention rank)."""

_ASCENT = (150, 80)
"""Subgradient iterations before the first round of pricing, then before each other one."""

_PRICED_ROWS = 2

_ROUNDS = 8
"""The most rounds of pricing."""

_CONVERGED = 0.01
"""Pricing stops when the new columns could lower the LP by at most this fraction."""
"""Rows per deployment that may join the columns in each round."""

_NODES = 200
_STALL = 5
_SHRINK = 0.6
_REDUCED_COST = 1e-7
_WHOLE = 1 - 1e-6
_USED = 1e-6


@dataclass(frozen=True)
class Prices:
    """What the relaxation found: tolls per GPU by pool, and by deployment the LP's columns with
    weight, heaviest first, with their values (objective plus stability penalty)."""

    tolls: FloatArray
    support: dict[str, list[tuple[Assignment, float]]]
    whole: frozenset[str]  # deployments the LP places on a single column
    columns: _Columns
    unplaced: FloatArray  # what leaving each table deployment out costs


def relax(
    problem: Problem,
    table: Candidates,
    penalties: FloatArray,
    seed: Solution,
    scored: Scored,
    first: IntArray,
) -> Prices:
    """Price GPUs by column generation over the table, then solve the master LP.

    ``penalties`` is each table deployment's stability penalty for leaving its running placement;
    ``seed`` a feasible solution; ``first`` the best rows of ``scored``, the whole table scored on
    empty pools without tolls.
    """
    longest = max((len(assignment) for assignment in seed.values()), default=0)
    unplaced = _unplaced(problem, table)
    columns = _Columns(table, penalties, longest)
    columns.add_assignments(
        [(owner, demand.current) for owner, demand in enumerate(table.demands) if demand.current]
    )
    owners = {demand.key: owner for owner, demand in enumerate(table.demands)}
    columns.add_assignments([(owners[key], assignment) for key, assignment in seed.items()])
    chosen = first[first >= 0]
    columns.add(scored.owner[chosen], scored.members[chosen], scored.counts[chosen])
    floor = scored.value + penalties[table.row_owner]
    scale = _scale(problem)
    capacity = problem.capacity * scale
    tolls = np.zeros(problem.capacity.size)
    found = first[:, 0] >= 0
    step = float(np.median(scored.value[first[found, 0]])) if found.any() else 1.0
    if not columns.owner.size:
        return Prices(tolls, {}, frozenset(), columns, unplaced)
    for iterations in [_ASCENT[0]] + [_ASCENT[1]] * (_ROUNDS - 1):
        lagrangian = _Lagrangian(columns, scale, unplaced)
        scaled, step, duals, bound = lagrangian.ascend(tolls / scale, capacity, iterations, step)
        tolls = scaled * scale
        rows = np.flatnonzero(floor < duals[table.row_owner] - _REDUCED_COST)
        if not rows.size:
            break
        priced = table.score(problem.capacity, tolls, None, rows)
        best = table.best(priced, _PRICED_ROWS)
        owner = np.repeat(np.arange(best.shape[0]), best.shape[1]).reshape(best.shape)
        reduced = np.full(best.shape, np.inf)
        some = best >= 0
        reduced[some] = priced.value[best[some]] + penalties[owner[some]] - duals[owner[some]]
        chosen = best[reduced < -_REDUCED_COST]
        if not columns.add(priced.owner[chosen], priced.members[chosen], priced.counts[chosen]):
            break
        # with every row priced, the Lagrangian could fall by the negative reduced costs at most
        if -float(np.minimum(reduced[:, 0], 0.0).sum()) <= _CONVERGED * abs(bound):
            break
    return _solve(problem, table, columns, unplaced) or Prices(
        tolls, {}, frozenset(), columns, unplaced
    )


def _scale(problem: Problem) -> FloatArray:
    """What the Lagrangian measures each capacity entry in, per unit: 1 for GPUs and cores, and
    for a CPU pool's memory steps its cores per step, so that the subgradient weighs them alike."""
    pools = len(problem.pools)
    scale = np.ones(problem.capacity.size)
    units, memory = problem.capacity[:pools], problem.capacity[pools:]
    counted = memory > 0
    scale[pools:][counted] = units[counted] / memory[counted]
    return scale


class _Columns:
    """The LP's columns: owner, pools (table options, -1 padded), replicas, and value."""

    def __init__(self, table: Candidates, penalties: FloatArray, longest: int) -> None:
        self.table = table
        self.penalties = penalties
        running = max((len(demand.current or ()) for demand in table.demands), default=0)
        self.width = max(table.width, longest, running)
        self.owner = np.zeros(0, dtype=np.int64)
        self.members = np.zeros((0, self.width), dtype=np.int64)
        self.counts = np.zeros((0, self.width), dtype=np.int64)
        self.value = np.zeros(0)
        self._seen: set[bytes] = set()
        self._current: dict[int, bytes] = {}
        self._staying = np.array(
            [DRAIN_PENALTY if demand.draining else 0.0 for demand in table.demands]
        )
        for owner, demand in enumerate(table.demands):
            if demand.current is not None:
                members, counts = table.as_row(owner, demand.current, self.width)
                self._current[owner] = self._keys(np.array([owner]), members[None], counts[None])[0]

    def add_assignments(self, assignments: list[tuple[int, Assignment]]) -> int:
        if not assignments:
            return 0
        rows = [
            self.table.as_row(owner, assignment, self.width) for owner, assignment in assignments
        ]
        return self.add(
            np.array([owner for owner, _ in assignments]),
            np.array([members for members, _ in rows]),
            np.array([counts for _, counts in rows]),
        )

    def add(self, owner: AnyIntArray, members: AnyIntArray, counts: AnyIntArray) -> int:
        """Add the new ones of these columns; how many were new."""
        if not owner.size:
            return 0
        # one width for every key, whatever the width of the table the columns come from
        owner, members, counts = (np.asarray(a, dtype=np.int64) for a in (owner, members, counts))
        padding = self.width - members.shape[1]
        if padding:
            members = np.pad(members, ((0, 0), (0, padding)), constant_values=-1)
            counts = np.pad(counts, ((0, 0), (0, padding)))
        order = np.argsort(np.where(members < 0, np.iinfo(np.int64).max, members), axis=1)
        members = np.take_along_axis(members, order, axis=1)
        counts = np.take_along_axis(counts, order, axis=1)
        new, staying = [], []
        for index, (row_owner, key) in enumerate(
            zip(owner.tolist(), self._keys(owner, members, counts), strict=True)
        ):
            if key not in self._seen:
                self._seen.add(key)
                new.append(index)
                staying.append(self._current.get(row_owner) == key)
        if not new:
            return 0
        owner, members, counts = owner[new], members[new], counts[new]
        value = self.table.objective(members, counts) + np.where(
            staying, self._staying[owner], self.penalties[owner]
        )
        self.owner = np.concatenate((self.owner, owner))
        self.members = np.concatenate((self.members, members))
        self.counts = np.concatenate((self.counts, counts))
        self.value = np.concatenate((self.value, value))
        return len(new)

    @staticmethod
    def _keys(owner: IntArray, members: IntArray, counts: IntArray) -> list[bytes]:
        rows = np.ascontiguousarray(np.concatenate((owner[:, None], members, counts), axis=1))
        return [row.tobytes() for row in rows]

    def usage(self, order: IntArray, entries: int) -> csr_array:
        """What the columns in ``order`` take of each of the ``entries`` of the capacity, one row
        each."""
        return _usage(self.table, self.members[order], self.counts[order], entries)


class _Lagrangian:
    """The master LP's Lagrangian dual over the columns so far, with capacity relaxed::

    L(tolls) = sum_d min(unplaced_d, min_{j of d} value_j + tolls . gpus_j) - tolls . capacity
    """

    def __init__(self, columns: _Columns, scale: FloatArray, unplaced: FloatArray) -> None:
        order = np.argsort(columns.owner, kind="stable")
        owner = columns.owner[order]
        self.value = columns.value[order]
        self.usage = columns.usage(order, scale.size)
        if not (scale == 1).all():
            self.usage = csr_array(self.usage @ diags_array(scale))
        self.starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        self.owners = owner[self.starts]
        self.sizes = np.diff(np.append(self.starts, owner.size))
        self.unplaced = unplaced[self.owners]
        self.deployments = unplaced.size

    def at(self, tolls: FloatArray, capacity: FloatArray) -> tuple[float, FloatArray, FloatArray]:
        """L(tolls), a subgradient, and each deployment's dual price (-inf without columns)."""
        priced = self.value + self.usage @ tolls
        least = np.minimum.reduceat(priced, self.starts)
        at_least = priced == np.repeat(least, self.sizes)
        chosen = np.minimum.reduceat(
            np.where(at_least, np.arange(priced.size), priced.size), self.starts
        )
        placed = least < self.unplaced
        gradient = np.asarray(self.usage[chosen[placed]].sum(axis=0)).ravel() - capacity
        prices = np.minimum(least, self.unplaced)
        duals = np.full(self.deployments, -np.inf)
        duals[self.owners] = prices
        return float(prices.sum() - tolls @ capacity), gradient, duals

    def ascend(
        self, tolls: FloatArray, capacity: FloatArray, iterations: int, step: float
    ) -> tuple[FloatArray, float, FloatArray, float]:
        """Subgradient ascent from ``tolls``: the best tolls found, the step to go on with, and
        the deployments' dual prices there. The step, normalised by the subgradient's length,
        shrinks whenever the dual has not improved for a few iterations."""
        best, best_tolls, best_duals, stalled = -np.inf, tolls, None, 0
        for _ in range(iterations):
            value, gradient, duals = self.at(tolls, capacity)
            if best_duals is None or value > best + 1e-12 * abs(best):
                best, best_tolls, best_duals, stalled = value, tolls, duals, 0
            else:
                stalled += 1
                if stalled == _STALL:
                    step, stalled = step * _SHRINK, 0
            norm = float(np.sqrt(gradient @ gradient))
            if norm == 0:
                break
            tolls = np.maximum(tolls + step * gradient / norm, 0.0)
        if best_duals is None:
            best, _, best_duals = self.at(best_tolls, capacity)
        return best_tolls, step, best_duals, best


def _unplaced(problem: Problem, table: Candidates) -> FloatArray:
    rank = np.array([demand.rank for demand in table.demands], dtype=np.float64)
    gpus = (table.replicas * np.array([demand.gpus for demand in table.demands])).astype(float)
    unplaced: FloatArray = UNPLACED * gpus * (2 - rank / max(len(problem.demands), 1))
    return unplaced


def _solve(
    problem: Problem, table: Candidates, columns: _Columns, unplaced: FloatArray
) -> Prices | None:
    """The master LP over every column: its tolls and weighted columns; None if HiGHS fails."""
    solved = _master(columns, problem.capacity, unplaced)
    if solved is None:
        return None
    weight, marginals, used = solved
    tolls = np.zeros(problem.capacity.size)
    tolls[used] = np.maximum(-marginals, 0.0)
    support: dict[str, list[tuple[Assignment, float]]] = {}
    for index in np.flatnonzero(weight > _USED)[np.argsort(-weight[weight > _USED], kind="stable")]:
        key = table.demands[columns.owner[index]].key
        assignment = table.assignment(columns.members[index], columns.counts[index])
        support.setdefault(key, []).append((assignment, float(columns.value[index])))
    whole = frozenset(
        table.demands[columns.owner[index]].key for index in np.flatnonzero(weight > _WHOLE)
    )
    return Prices(tolls, support, whole, columns, unplaced)


def _usage(table: Candidates, members: AnyIntArray, counts: AnyIntArray, entries: int) -> csr_array:
    """What rows of pools (table options, -1 padded) and replicas take of each of the ``entries``
    of the capacity: units of their pools and, where counted, memory steps."""
    present = members >= 0
    units = csr_array(
        (
            (counts * table.gpus[members])[present].astype(np.float64),
            table.pool[members][present],
            np.concatenate(([0], np.cumsum(present.sum(axis=1)))),
        ),
        shape=(members.shape[0], entries),
    )
    memory = np.where(present, counts * table.memory[members], 0)
    counted = memory > 0
    if not counted.any():
        return units
    rows, slots = np.nonzero(counted)
    steps = csr_array(
        (
            memory[counted].astype(np.float64),
            (rows, table.pools + table.pool[members[rows, slots]]),
        ),
        shape=(members.shape[0], entries),
    )
    return csr_array(units + steps)


def rearrange(
    prices: Prices, owners: IntArray, free: IntArray
) -> list[tuple[int, Assignment]] | None:
    """The best choice of one column, or none, for each of the table deployments ``owners``
    (sorted) within ``free`` GPUs per pool: HiGHS's MILP over their columns, a few hundred
    branch-and-bound nodes at most; None if it finds no solution."""
    columns = prices.columns
    chosen = np.flatnonzero(np.isin(columns.owner, owners))
    solved = _master(columns, free, prices.unplaced, chosen=chosen, owners=owners, whole=True)
    if solved is None:
        return None
    table = columns.table
    return [
        (int(columns.owner[index]), table.assignment(columns.members[index], columns.counts[index]))
        for index in chosen[solved[0] > 0.5]
    ]


def _master(
    columns: _Columns,
    capacity: IntArray,
    unplaced: FloatArray,
    *,
    chosen: IntArray | None = None,
    owners: IntArray | None = None,
    whole: bool = False,
) -> tuple[FloatArray, FloatArray, IntArray] | None:
    """Solve the master problem over the columns ``chosen`` (every one when None) of the table
    deployments ``owners`` (sorted; every one when None) within ``capacity`` GPUs per pool: the
    LP by HiGHS's dual simplex or, ``whole``, the MILP. The columns' weights, and the marginals
    of the capacity rows (LP only) with their pools; None if HiGHS finds no solution."""
    table = columns.table
    if chosen is None:
        chosen = np.arange(columns.owner.size)
    if owners is None:
        owners = np.arange(len(table.demands))
    members, counts = columns.members[chosen], columns.counts[chosen]
    count, deployments = chosen.size, owners.size
    present = members >= 0
    entry = table.pool[members][present]
    take = (counts * table.gpus[members])[present].astype(np.float64)
    column = np.repeat(np.arange(count), present.sum(axis=1))
    memory = np.where(present, counts * table.memory[members], 0)
    if memory.any():
        counted = memory > 0
        entry = np.concatenate((entry, table.pools + table.pool[members][counted]))
        take = np.concatenate((take, memory[counted].astype(np.float64)))
        column = np.concatenate((column, np.nonzero(counted)[0]))
    used, entry_row = np.unique(entry, return_inverse=True)
    capacity_rows = csc_array((take, (entry_row, column)), shape=(used.size, count + deployments))
    choice = np.searchsorted(owners, columns.owner[chosen])
    choice_rows = csc_array(
        (
            np.ones(count + deployments),
            (np.concatenate((choice, np.arange(deployments))), np.arange(count + deployments)),
        ),
        shape=(deployments, count + deployments),
    )
    cost = np.concatenate((columns.value[chosen], unplaced[owners]))
    limit = capacity[used].astype(np.float64)
    if whole:
        result = milp(
            cost,
            integrality=np.ones(cost.size),
            bounds=Bounds(0, 1),
            constraints=[
                LinearConstraint(capacity_rows, -np.inf, limit),
                LinearConstraint(choice_rows, 1, 1),
            ],
            options={"node_limit": _NODES},
        )
        return None if result.x is None else (np.asarray(result.x[:count]), np.zeros(0), used)
    result = linprog(
        cost,
        A_ub=capacity_rows,
        b_ub=limit,
        A_eq=choice_rows,
        b_eq=np.ones(deployments),
        bounds=(0, None),
        method="highs-ds",
    )
    if result.status != 0:
        return None
    return np.asarray(result.x[:count]), np.asarray(result.ineqlin.marginals), used
