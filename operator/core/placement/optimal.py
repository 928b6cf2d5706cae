"""The ``optimal`` solver: one mixed-integer linear program over all deployments, solved by HiGHS.

Per deployment d and option o (a pool a replica fits in), with U the replicas the pool holds:

* ``x[d,o]`` in 0..U replicas, ``z[d,o]`` in {0,1} whether the pool is used;
* ``a[d,r,o]`` in [0,1] the share of region r's traffic sent to o, only where o reaches r within
  the latency SLO;
* ``p[d]`` in {0,1} whether d is placed, ``k[d]`` in {0,1} whether d keeps its running placement
  (keepable deployments only).

Constraints: ``z <= x <= U z``; at most one used pool per site; ``sum_o x = replicas * p``;
``sum_o z >= minSites * p``; ``sum_o a[d,r,o] = p`` for every region r and ``a <= z`` (coverage);
``sum_o price * x <= budget``; per pool, ``sum_d gpus_d * x <= capacity`` (GPUs, or cores) and,
for CPU pools, ``sum_d memory_d * x <= memory``; ``k <= p`` and
``x >= current * k`` (keeping means exactly the current placement; keep-only pools of cordoned
sites also get ``x <= current * k``). The rows of each hard constraint over a whole placement
(spread, coverage, budget) come from its module's ``program`` (see
:mod:`~soberana.operator.core.placement.constraints`).

Objective, minimised: the shared objective of
:mod:`~soberana.operator.core.placement.problem` — ``cost_weight * price * x`` plus
``latency_weight * w_r * RTT * a``, exact at the optimum because each region's traffic then goes to
its nearest used pool — minus ``penalty * k``, the stability penalty a keeper avoids.

Which deployments are placed: every one the fast solver placed (``p`` fixed to 1), so the
contention order holds. If the fast solver left any placeable deployment out, a first solve
maximises ``sum w_d p_d`` over those with ``w_d`` in (1, 2] falling with contention rank (as many
as possible, earlier ones on ties); a second solve fixes ``p`` and minimises the objective.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp  # type: ignore[import-untyped]
from scipy.sparse import csr_array  # type: ignore[import-untyped]

from soberana.operator.core.placement.constraints import PROGRAMS, Assignment, Columns
from soberana.operator.core.placement.options import PlacementOptions
from soberana.operator.core.placement.problem import DRAIN_PENALTY, Demand, Problem, Solution


def solve_optimal(problem: Problem, fast: Solution, options: PlacementOptions) -> Solution | None:
    """The MILP's solution with at least the deployments of ``fast`` placed; None if none found."""
    model = _Model.build(problem, fast)
    if not model.variables:
        return {}
    undecided = [demand for demand in model.demands if demand.key not in fast]
    admitted = None
    if undecided:
        ranks = len(problem.demands) + 1
        weights = {
            model.placed[demand.key]: -(1 + (ranks - demand.rank) / ranks) for demand in undecided
        }
        admitted = model.solve(options, objective=weights)
        if admitted is None:
            return None
        for demand in undecided:
            column = model.placed[demand.key]
            model.lower[column] = model.upper[column] = float(admitted[column] > 0.5)
    values = model.solve(options, objective=None)
    if values is None:  # the second solve found nothing in time: the first one's is feasible too
        values = admitted
    return None if values is None else model.solution(values)


@dataclass
class _DemandVariables:
    replicas: list[int] = field(default_factory=list)  # x, by option
    used: list[int] = field(default_factory=list)  # z, by option


@dataclass
class _Model:
    """A MILP being assembled column by column and row by row."""

    demands: list[Demand]
    cost: list[float] = field(default_factory=list)
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    integral: list[int] = field(default_factory=list)
    entries: list[tuple[int, int, float]] = field(default_factory=list)  # (row, column, value)
    row_lower: list[float] = field(default_factory=list)
    row_upper: list[float] = field(default_factory=list)
    placed: dict[str, int] = field(default_factory=dict)  # p, by deployment key
    columns: dict[str, _DemandVariables] = field(default_factory=dict)

    @property
    def variables(self) -> int:
        return len(self.cost)

    @classmethod
    def build(cls, problem: Problem, fast: Solution) -> _Model:
        model = cls(demands=[demand for demand in problem.demands if demand.pool.size])
        pool_rows: dict[int, list[tuple[int, float]]] = {}
        for demand in model.demands:
            model._add_demand(problem, demand, placed=demand.key in fast, pool_rows=pool_rows)
        for entry, terms in sorted(pool_rows.items()):
            model.row(terms, -np.inf, float(problem.capacity[entry]))
        return model

    def _add_demand(
        self,
        problem: Problem,
        demand: Demand,
        *,
        placed: bool,
        pool_rows: dict[int, list[tuple[int, float]]],
    ) -> None:
        current = dict(demand.current or ())
        p = self.column(0.0, 1.0 if placed else 0.0, 1.0, integral=True)
        self.placed[demand.key] = p
        columns = self.columns[demand.key] = _DemandVariables()
        room = demand.room(problem.capacity).tolist()
        for option in range(demand.pool.size):
            bound = int(room[option])
            if demand.keep_only[option]:
                bound = current.get(option, 0)
            x = self.column(demand.cost_weight * float(demand.price[option]), 0, bound, True)
            z = self.column(0.0, 0, 1, integral=True)
            columns.replicas.append(x)
            columns.used.append(z)
            self.row([(x, 1.0), (z, -1.0)], 0.0, np.inf)
            self.row([(x, 1.0), (z, -float(bound))], -np.inf, 0.0)
            pool_rows.setdefault(int(demand.pool[option]), []).append((x, float(demand.gpus)))
            if demand.memory:
                memory_row = int(demand.memory_row[option])
                pool_rows.setdefault(memory_row, []).append((x, float(demand.memory)))
        variables = Columns(p, columns.replicas, columns.used)
        for constraint in PROGRAMS:
            constraint.program(self, demand, variables)
        if demand.current is not None:
            # keeping avoids the stability penalty; for a draining deployment it costs instead
            keep_cost = (
                DRAIN_PENALTY
                if demand.draining
                else -problem.move_threshold * demand.objective(demand.current)
            )
            k = self.column(keep_cost, 0, 1, integral=True)
            self.row([(k, 1.0), (p, -1.0)], -np.inf, 0.0)
            for option, replicas in demand.current:
                x = columns.replicas[option]
                self.row([(x, 1.0), (k, -float(replicas))], 0.0, np.inf)
                if demand.keep_only[option]:
                    self.row([(x, 1.0), (k, -float(replicas))], -np.inf, 0.0)

    def column(self, cost: float, lower: float, upper: float, integral: bool) -> int:
        self.cost.append(cost)
        self.lower.append(lower)
        self.upper.append(upper)
        self.integral.append(int(integral))
        return len(self.cost) - 1

    def row(self, terms: list[tuple[int, float]], lower: float, upper: float) -> None:
        row = len(self.row_lower)
        self.entries.extend((row, column, value) for column, value in terms)
        self.row_lower.append(lower)
        self.row_upper.append(upper)

    def solve(
        self, options: PlacementOptions, *, objective: dict[int, float] | None
    ) -> np.ndarray | None:
        """Solve with the stored objective, or with ``objective`` (column -> cost) instead."""
        if objective is None:
            cost = np.array(self.cost)
        else:
            cost = np.zeros(self.variables)
            cost[list(objective)] = list(objective.values())
        rows, cols, values = zip(*self.entries, strict=True)
        matrix = csr_array((values, (rows, cols)), shape=(len(self.row_lower), self.variables))
        settings: dict[str, object] = {"mip_rel_gap": options.mip_rel_gap, "presolve": True}
        if options.time_limit_s is not None:
            settings["time_limit"] = options.time_limit_s
        result = milp(
            cost,
            integrality=np.array(self.integral),
            bounds=Bounds(np.array(self.lower), np.array(self.upper)),
            constraints=LinearConstraint(
                matrix, np.array(self.row_lower), np.array(self.row_upper)
            ),
            options=settings,
        )
        return None if result.x is None else np.asarray(result.x)

    def solution(self, values: np.ndarray) -> Solution:
        solution: Solution = {}
        for demand in self.demands:
            if values[self.placed[demand.key]] < 0.5:
                continue
            replicas = np.rint(values[self.columns[demand.key].replicas]).astype(int)
            assignment: Assignment = tuple(
                (int(option), int(replicas[option])) for option in np.flatnonzero(replicas)
            )
            solution[demand.key] = assignment
        return solution
